"""The Redis side of an import: seq counters, recent history, the id clocks.

After an import, Redis must agree with PostgreSQL whether or not gateways ran
meanwhile: each imported channel's counter equals its imported message count
(or more, if live messages came after), so the next live send gets seq n+1;
its recent-history stream holds its last frames exactly as a gateway would
rebuild them; and the id clocks stay ahead of every imported id (imported ids
that reach a clock are taken from it, `take_ids`).

Counters are written before the channels are committed, so a gateway that
admits a sender into an imported channel mid-import hands out n+1, never a
seq the import is still copying.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import cast

from shared.db.messages import StoredMessage
from shared.redis_client import RedisClient
from shared.redis_keys import RECENT_TTL_MS, RedisKeys
from shared.scripts import ImportScripts
from shared.wire import stored_message_frame

# Ingest entries read per call when collecting the ids not yet persisted.
_INGEST_PAGE = 10_000


async def redis_time_ms(redis: RedisClient) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def set_counters(redis: RedisClient, keys: RedisKeys, counts: Mapping[int, int]) -> None:
    """New imported channels: counter = message count, no recent stream.

    Their ids are new to this deployment, but a deleted channel may have left
    keys under the same id; those would hand out wrong seqs or stale frames.
    """
    async with redis.pipeline(transaction=False) as pipe:
        for channel_id, count in counts.items():
            pipe.set(keys.channel_seq(channel_id), count)
            pipe.delete(keys.channel_recent(channel_id))
        await pipe.execute()


async def raise_counters(
    redis: RedisClient, scripts: ImportScripts, keys: RedisKeys, counts: Mapping[int, int]
) -> list[int]:
    """Counters back to at least the imported count (Redis lost them); the channels whose
    counter had fallen below it, which live sends may have reused seqs in."""
    low: list[int] = []
    for channel_id, count in counts.items():
        previous = await scripts.counter(keys=[keys.channel_seq(channel_id)], args=[count])
        if previous is not None and int(previous) < count:
            low.append(channel_id)
    return low


async def live_floors(
    redis: RedisClient, scripts: ImportScripts, keys: RedisKeys
) -> dict[int, int]:
    """Per partition, the first millisecond (Unix ms) live sends may still use."""
    floors: dict[int, int] = {}
    for partition in range(keys.partitions):
        now_ms, last_ms = await scripts.ids(keys=[keys.partition_id_clock(partition)], args=[0])
        floors[partition] = max(int(now_ms), int(last_ms))
    return floors


async def take_ids(
    scripts: ImportScripts, keys: RedisKeys, partition: int, count: int
) -> tuple[int, int]:
    """Take `count` consecutive ids from the partition's live clock: the first (ms, counter)."""
    first_ms, first_counter = await scripts.ids(
        keys=[keys.partition_id_clock(partition)], args=[count]
    )
    return int(first_ms), int(first_counter)


async def unpersisted_ids(redis: RedisClient, keys: RedisKeys) -> set[int]:
    """Ids of the messages in the ingest streams: sent, maybe not yet in PostgreSQL.
    Streams are trimmed only below what is persisted, so they are short."""
    ids: set[int] = set()
    for stream in keys.ingest_streams():
        start = "-"
        while True:
            entries = cast(
                "list[tuple[bytes, dict[bytes, bytes]]]",
                await redis.xrange(stream, min=start, max="+", count=_INGEST_PAGE),
            )
            ids.update(int(fields[b"id"]) for _, fields in entries if b"id" in fields)
            if len(entries) < _INGEST_PAGE:
                break
            start = "(" + entries[-1][0].decode()
    return ids


async def seed_recent(
    scripts: ImportScripts,
    keys: RedisKeys,
    channel_id: int,
    message_count: int,
    messages: Iterable[StoredMessage],
    maxlen: int,
) -> bool:
    """Write the channel's last frames (oldest first) as its recent stream, unless a live
    message came first. Returns whether it wrote them."""
    args: list[str | int | bytes] = [message_count, maxlen, RECENT_TTL_MS]
    for message in messages:
        args += [message.seq, stored_message_frame(message)]
    written = await scripts.recent(
        keys=[keys.channel_recent(channel_id), keys.channel_seq(channel_id)], args=args
    )
    return bool(written)
