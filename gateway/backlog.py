"""A channel's messages after a given `seq`, for resume: Redis first, then PostgreSQL.

The send script appends every frame to the channel's capped recent-history
stream under entry id `<seq>-0`, in the same atomic step that publishes it.
So a range read from that stream is contiguous and holds the exact bytes the
live subscribers got. Older messages (trimmed, expired, or lost with a Redis
that restarted without its data) come from PostgreSQL, rebuilt in the same
frame shape; the rows a worker has not committed yet are simply absent, so
only the contiguous start of a page is used.

Reads are single-flight: when a Redis reconnect makes every local socket of a
channel catch up from the same `seq`, one read serves them all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import cast

import asyncpg
import orjson
from redis.asyncio import Redis

from gateway.outages import DEPENDENCY_ERRORS
from shared.db.messages import list_messages_after, max_seq
from shared.errors import UnavailableError
from shared.redis_keys import RedisKeys
from shared.wire import stored_message_json

# One page of a catch-up: large enough to amortize a round trip, small enough
# that a page of 10 KB frames stays a few MB.
PAGE_SIZE = 256

Frames = Sequence[tuple[int, bytes]]


class Backlog:
    def __init__(self, redis: Redis, pool: asyncpg.Pool[asyncpg.Record], keys: RedisKeys) -> None:
        self._redis = redis
        self._pool = pool
        self._keys = keys
        self._in_flight: dict[tuple[int, int], asyncio.Future[Frames]] = {}

    async def head(self, channel_id: int) -> int:
        """The channel's last assigned seq (0 for a channel without messages)."""
        try:
            value = await self._redis.get(self._keys.channel_seq(channel_id))
            if value is not None:
                return int(value)
            # No counter: nothing sent since Redis lost or never had it. The
            # send path seeds it from the same place.
            return await max_seq(self._pool, channel_id)
        except DEPENDENCY_ERRORS as exc:
            raise UnavailableError() from exc

    async def page_after(self, channel_id: int, after_seq: int) -> Frames:
        """Up to PAGE_SIZE frames with seqs after_seq+1, after_seq+2, ... with no hole.

        Empty when the next message is available nowhere yet (not sent, or
        neither in Redis nor written by a worker). Raises UnavailableError.
        """
        key = (channel_id, after_seq)
        pending = self._in_flight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Frames] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            frames = await self._read(channel_id, after_seq)
        except BaseException as exc:
            future.set_exception(UnavailableError() if isinstance(exc, Exception) else exc)
            future.exception()  # retrieved: followers re-raise it, nobody else must
            raise
        finally:
            del self._in_flight[key]
        future.set_result(frames)
        return frames

    async def _read(self, channel_id: int, after_seq: int) -> Frames:
        first = after_seq + 1
        try:
            entries = cast(
                "list[tuple[bytes, dict[bytes, bytes]]]",
                await self._redis.xrange(
                    self._keys.channel_recent(channel_id),
                    min=f"{first}-0",
                    max="+",
                    count=PAGE_SIZE,
                ),
            )
            if entries and _seq_of_entry(entries[0][0]) == first:
                return [(_seq_of_entry(entry_id), fields[b"f"]) for entry_id, fields in entries]
            stored = await list_messages_after(self._pool, channel_id, after_seq, PAGE_SIZE)
        except DEPENDENCY_ERRORS as exc:
            raise UnavailableError() from exc
        frames: list[tuple[int, bytes]] = []
        for message in stored:
            if message.seq != first + len(frames):
                break  # a row a worker has not committed yet: stop before the hole
            frames.append((message.seq, orjson.dumps(stored_message_json(message))))
        return frames


def _seq_of_entry(entry_id: bytes) -> int:
    return int(entry_id.partition(b"-")[0])
