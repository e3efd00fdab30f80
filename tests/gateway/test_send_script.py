"""The send script checks everything before it writes anything.

Regression: send.lua took the next seq (INCR), the rate count and the id clock
before writes that could still fail (an XADD at or below the recent stream's
top), so an error spent a seq with no message behind it: a permanent gap.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from redis.asyncio import Redis

from gateway.sender import PendingSend, Sender
from gateway.seq_floors import SeqFloors
from shared.redis_keys import RedisKeys
from shared.scripts import Scripts, register_scripts
from shared.wire import frame_id, frame_seq
from tests.gateway.api_client import connect, receive_until, room, send_texts
from tests.gateway.conftest import MakeGateway

_CHANNEL_ID = 4242
_USER_ID = 7
_RATE_LIMIT = 2


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def _pending(
    make_settings: Any, redis: Redis, pg_pool: asyncpg.Pool[asyncpg.Record], floor: int
) -> tuple[Scripts, PendingSend]:
    """One send's keys and arguments, built as the gateway builds them."""
    settings = make_settings(ws_message_rate=_RATE_LIMIT)
    scripts = register_scripts(redis)
    keys = RedisKeys(settings.redis_key_prefix, settings.redis_partitions)
    sender = Sender(
        settings, redis, scripts, keys, SeqFloors(settings, redis, scripts, pg_pool, keys)
    )
    route = sender.route(_CHANNEL_ID, _USER_ID)
    pending = sender.start(route, client_id="c-1", body=b'{"type":"text"}', tail=b"}")
    pending.floor = floor
    return scripts, pending


async def _state(redis: Redis, keys: list[str]) -> list[tuple[bytes | None, int]]:
    """Every key the script may touch, serialized, with its time to live."""
    return [(await redis.dump(key), await redis.pttl(key)) for key in keys]


@pytest.mark.parametrize(
    ("setup", "floor", "expected"),
    [
        ("recent stream ahead of the counter", 0, [b"behind", b"3"]),
        ("counter below the floor", 7, [b"behind", b"3"]),
        ("rate limit reached", 0, [b"rate"]),
        ("no counter", 0, [b"noseq"]),
    ],
)
async def test_a_refused_send_changes_nothing(
    make_settings: Any,
    redis: Redis,
    pg_pool: asyncpg.Pool[asyncpg.Record],
    setup: str,
    floor: int,
    expected: list[bytes],
) -> None:
    scripts, pending = await _pending(make_settings, redis, pg_pool, floor)
    settings = make_settings()
    keys = RedisKeys(settings.redis_key_prefix, settings.redis_partitions)
    if setup != "no counter":
        await redis.set(keys.channel_seq(_CHANNEL_ID), 3)
    if setup == "recent stream ahead of the counter":
        for seq in range(1, 6):
            await redis.xadd(keys.channel_recent(_CHANNEL_ID), {"f": b"x"}, id=f"{seq}-0")
    if setup == "rate limit reached":
        await redis.set(keys.message_rate(_CHANNEL_ID, _USER_ID), _RATE_LIMIT, px=60_000)
    await redis.hset(keys.id_clock(_CHANNEL_ID), mapping={"ms": 1, "n": 0})
    before = await _state(redis, pending.script_keys())

    reply = await scripts.send(keys=pending.script_keys(), args=pending.script_args(), client=redis)

    assert reply[: len(expected)] == expected
    state = await _state(redis, pending.script_keys())
    # Values unchanged, and no new expiry (a live TTL only counts down).
    assert [value for value, _ in state] == [value for value, _ in before]
    assert [ttl > 0 for _, ttl in state] == [ttl > 0 for _, ttl in before]


async def test_a_counter_behind_the_recent_stream_spends_no_seq(
    make_gateway: MakeGateway, make_settings: Any, redis: Redis
) -> None:
    """The counter lost seqs 4 and 5, which the recent stream still holds. A gateway
    that never saw them (floor 3) sends: the script answers `behind` before any
    write, the counter is raised past the stream, and the send gets seq 6."""
    gateway_a = await make_gateway()
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    ws_alice = await connect(gateway_a, alice, channel_id)
    seen = [frame["seq"] for frame in (await send_texts(ws_alice, 5, "a")).messages]
    settings = make_settings()
    keys = RedisKeys(settings.redis_key_prefix, settings.redis_partitions)
    await redis.set(keys.channel_seq(channel_id), 3)

    gateway_b = await make_gateway()
    ws_bob = await connect(gateway_b, bob, channel_id)
    await ws_bob.send_str('{"type": "text", "content": "after", "client_id": "b-1"}')

    ack = await receive_until(ws_bob, "ack")
    assert ack["seq"] == 6
    assert int(await redis.get(keys.channel_seq(channel_id))) == 6
    ingest = await redis.xrange(keys.ingest_stream_of(channel_id))
    assert [int(fields[b"seq"]) for _, fields in ingest] == [1, 2, 3, 4, 5, 6]
    while not seen or seen[-1] < 6:
        seen.append((await receive_until(ws_alice, "message"))["seq"])
    assert seen == [1, 2, 3, 4, 5, 6]


async def test_the_kind_is_the_frame_type_and_the_ingest_entry_kind(
    make_settings: Any, redis: Redis, pg_pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    """Events that take a seq in the channel's order (edits, reactions) go through
    the same script: `kind` names the frame's `type` and the ingest entry's `kind`,
    and the gateway still reads the frame's id and seq from its head."""
    settings = make_settings(ws_message_rate=_RATE_LIMIT)
    scripts = register_scripts(redis)
    keys = RedisKeys(settings.redis_key_prefix, settings.redis_partitions)
    seq_floors = SeqFloors(settings, redis, scripts, pg_pool, keys)
    sender = Sender(settings, redis, scripts, keys, seq_floors)
    await redis.set(keys.channel_seq(_CHANNEL_ID), 3)
    route = sender.route(_CHANNEL_ID, _USER_ID)
    pending = sender.start(
        route, client_id=None, body=b'{"type":"text"}', tail=b'"x":1}', kind="message_edited"
    )

    result = await sender.finish(pending)

    [(_, recent)] = await redis.xrange(keys.channel_recent(_CHANNEL_ID))
    frame = recent[b"f"]
    assert frame.startswith(b'{"type":"message_edited","id":%d,"seq":4,' % result.message_id)
    assert (frame_id(frame), frame_seq(frame)) == (result.message_id, 4)
    assert orjson.loads(frame)["x"] == 1
    [(_, entry)] = await redis.xrange(keys.ingest_stream_of(_CHANNEL_ID))
    assert entry[b"kind"] == b"message_edited"
    await seq_floors.aclose()
