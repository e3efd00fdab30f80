"""Resume with `?since=<seq>`: everything after it, then live, with no gap and no duplicate."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as redis
from aiohttp.test_utils import TestClient

from gateway.app_keys import HUB, METRICS
from gateway.backlog import PAGE_SIZE
from persistence.worker import Worker
from shared.redis_keys import RedisKeys
from shared.settings import Settings
from tests.gateway.api_client import (
    Account,
    connect,
    eventually,
    expect_refusal,
    receive_json,
    receive_messages,
    receive_until,
    room,
    send_texts,
    tiny_receive_buffer,
)
from tests.gateway.conftest import MakeGateway


async def _persist(settings: Settings, pool: asyncpg.Pool[asyncpg.Record], url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return await Worker(settings, redis=client, pool=pool).run_until_idle()
    finally:
        await client.aclose()


async def _alice_online_with_bob(
    gateway: TestClient[Any, Any],
) -> tuple[int, Account, aiohttp.ClientWebSocketResponse]:
    """A channel of alice and bob, with alice's socket open on `gateway`."""
    channel_id, (alice, bob) = await room(gateway, "alice", "bob")
    return channel_id, bob, await connect(gateway, alice, channel_id)


async def test_since_replays_from_the_recent_stream_then_goes_live(
    make_gateway: MakeGateway,
) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    channel_id, bob, ws_alice = await _alice_online_with_bob(gateway_a)
    sent = await send_texts(ws_alice, 10, "a")
    assert sent.acked_seqs == list(range(1, 11))
    live = sent.messages + await receive_messages(ws_alice, 10 - len(sent.messages))

    ws_bob = await connect(gateway_b, bob, channel_id, params={"since": "4"})
    replayed = await receive_messages(ws_bob, 6)
    assert replayed == live[4:]  # the very bytes the live members got
    await send_texts(ws_alice, 1, "b")
    assert (await receive_until(ws_bob, "message"))["seq"] == 11


async def test_since_older_than_redis_keeps_is_served_from_postgres(
    make_gateway: MakeGateway, make_settings: Any, pg_pool: asyncpg.Pool, redis_url: str
) -> None:
    # Redis keeps no recent history at all: every replayed frame comes from PostgreSQL.
    gateway = await make_gateway(recent_history_size=0)
    channel_id, bob, ws_alice = await _alice_online_with_bob(gateway)
    sent = await send_texts(ws_alice, 5, "a")
    live = sent.messages + await receive_messages(ws_alice, 5 - len(sent.messages))
    assert await _persist(make_settings(), pg_pool, redis_url) == 5

    ws_bob = await connect(gateway, bob, channel_id, params={"since": "2"})
    assert await receive_messages(ws_bob, 3) == live[2:]


async def test_long_catch_up_mixes_postgres_and_redis_without_gap_or_duplicate(
    make_gateway: MakeGateway, make_settings: Any, pg_pool: asyncpg.Pool, redis_url: str
) -> None:
    # MAXLEN ~ trims whole stream nodes (100 entries): 600 sends leave a partial tail.
    gateway = await make_gateway(recent_history_size=50)
    channel_id, bob, ws_alice = await _alice_online_with_bob(gateway)
    await send_texts(ws_alice, 600, "a")
    await _persist(make_settings(), pg_pool, redis_url)
    settings = make_settings()
    keys = RedisKeys(settings.redis_key_prefix, settings.redis_partitions)
    client = redis.Redis.from_url(redis_url)
    try:
        recent = await client.xlen(keys.channel_recent(channel_id))
    finally:
        await client.aclose()
    assert 0 < recent < 600  # the setup really splits the range between the two stores

    ws_bob = await connect(gateway, bob, channel_id, params={"since": "0"})
    frames = await receive_messages(ws_bob, 600)
    assert [frame["seq"] for frame in frames] == list(range(1, 601))


async def test_resume_while_messages_keep_arriving_has_no_gap_or_duplicate(
    make_gateway: MakeGateway,
) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    channel_id, bob, ws_alice = await _alice_online_with_bob(gateway_a)
    await send_texts(ws_alice, 50, "before")

    sending = asyncio.create_task(send_texts(ws_alice, 150, "during"))
    ws_bob = await connect(gateway_b, bob, channel_id, params={"since": "0"})
    await sending
    frames = await receive_messages(ws_bob, 200)
    assert [frame["seq"] for frame in frames] == list(range(1, 201))


async def test_since_ahead_of_the_channel_is_told_then_live(gateway: TestClient[Any, Any]) -> None:
    channel_id, bob, ws_alice = await _alice_online_with_bob(gateway)
    await send_texts(ws_alice, 3, "a")

    ws_bob = await connect(gateway, bob, channel_id, params={"since": "99"})
    error = await receive_json(ws_bob)
    assert error["type"] == "error"
    assert error["code"] == "since_ahead"
    assert error["errors"] == [{"since": 99, "last_seq": 3}]
    await send_texts(ws_alice, 1, "b")
    assert (await receive_until(ws_bob, "message"))["seq"] == 4


@pytest.mark.parametrize("since", ["-1", "abc", "1.5", str(2**53 + 1)])
async def test_malformed_since_is_refused(gateway: TestClient[Any, Any], since: str) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    ws = await connect(gateway, alice, channel_id, params={"since": since})
    frame, close_code = await expect_refusal(ws)
    assert (frame["code"], close_code) == ("invalid_parameter", 4400)


async def test_missing_range_waits_for_the_worker(
    make_gateway: MakeGateway, make_settings: Any, pg_pool: asyncpg.Pool, redis_url: str
) -> None:
    gateway = await make_gateway(recent_history_size=0, ws_resume_wait_seconds=30)
    channel_id, bob, ws_alice = await _alice_online_with_bob(gateway)
    await send_texts(ws_alice, 4, "a")

    ws_bob = await connect(gateway, bob, channel_id, params={"since": "0"})
    # Neither Redis nor PostgreSQL holds seq 1..4 until the worker writes them.
    await _persist(make_settings(), pg_pool, redis_url)
    assert [f["seq"] for f in await receive_messages(ws_bob, 4)] == [1, 2, 3, 4]


async def test_range_never_written_is_reported_as_a_gap_then_live(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(recent_history_size=0, ws_resume_wait_seconds=0.3)
    channel_id, bob, ws_alice = await _alice_online_with_bob(gateway)
    await send_texts(ws_alice, 4, "a")

    ws_bob = await connect(gateway, bob, channel_id, params={"since": "1"})
    gap = await receive_until(ws_bob, "error")
    assert gap["code"] == "history_gap"
    assert gap["errors"] == [{"from_seq": 2, "to_seq": 4}]
    await send_texts(ws_alice, 1, "b")
    assert (await receive_until(ws_bob, "message"))["seq"] == 5


async def test_publishes_missed_while_pubsub_reconnects_are_replayed(
    make_gateway: MakeGateway, redis_url: str
) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    channel_id, bob, ws_alice = await _alice_online_with_bob(gateway_a)
    ws_bob = await connect(gateway_b, bob, channel_id)
    await send_texts(ws_alice, 5, "before")
    assert [f["seq"] for f in await receive_messages(ws_bob, 5)] == [1, 2, 3, 4, 5]

    admin = redis.Redis.from_url(redis_url)
    try:
        # Drops every node's pub/sub link; the next 30 publishes reach no subscriber.
        await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await send_texts(ws_alice, 30, "during")
    finally:
        await admin.aclose()

    frames = await receive_messages(ws_bob, 30)
    assert [frame["seq"] for frame in frames] == list(range(6, 36))
    await send_texts(ws_alice, 1, "after")
    assert (await receive_until(ws_bob, "message"))["seq"] == 36


@contextlib.asynccontextmanager
async def _messages_locked(database_dsn: str) -> AsyncIterator[None]:
    """Every read of the messages table blocks until the block ends: a replay page read
    from PostgreSQL stays in flight for as long as a test needs."""
    locker = await asyncpg.connect(database_dsn)
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
            yield
    finally:
        await locker.close()


async def test_socket_closed_mid_read_leaves_the_shared_read_to_the_others(
    make_gateway: MakeGateway,
    make_settings: Any,
    pg_pool: asyncpg.Pool,
    redis_url: str,
    database_dsn: str,
) -> None:
    """Regression: two sockets resuming from the same seq share one read; the first
    one's socket closing mid-read cancelled that read for both, and the second
    socket's catch-up ended silently: it never received anything again."""
    gateway = await make_gateway(recent_history_size=0)  # every page comes from PostgreSQL
    channel_id, (alice, bob, carol) = await room(gateway, "alice", "bob", "carol")
    ws_alice = await connect(gateway, alice, channel_id)
    await send_texts(ws_alice, 300, "a")  # more than a page: carol's catch-up goes on after it
    assert await _persist(make_settings(), pg_pool, redis_url) == 300
    metrics, hub = gateway.app[METRICS], gateway.app[HUB]

    async def carol_waits_for_bobs_read() -> bool:
        return metrics.backlog_read_joins.value == 1

    async def bob_is_gone() -> bool:
        return hub.connection_count == 2

    async with _messages_locked(database_dsn):
        ws_bob = await connect(gateway, bob, channel_id, params={"since": "0"})
        ws_carol = await connect(gateway, carol, channel_id, params={"since": "0"})
        await eventually(carol_waits_for_bobs_read)
        await ws_bob.close()  # cancels bob's catch-up, the read's first caller
        await eventually(bob_is_gone)
        assert metrics.backlog_reads.value == 1  # still the one read, still blocked

    frames = await receive_messages(ws_carol, 300)
    assert [frame["seq"] for frame in frames] == list(range(1, 301))


async def test_read_nobody_waits_for_is_cancelled(
    make_gateway: MakeGateway,
    make_settings: Any,
    pg_pool: asyncpg.Pool,
    redis_url: str,
    database_dsn: str,
) -> None:
    """A shared read outlives a cancelled caller, but not the last one: its query stops."""
    gateway = await make_gateway(recent_history_size=0)
    channel_id, (alice, bob) = await room(gateway, "alice", "bob")
    await send_texts(await connect(gateway, alice, channel_id), 3, "a")
    assert await _persist(make_settings(), pg_pool, redis_url) == 3

    async def blocked_reads() -> int:
        count: int = await pg_pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return count

    async def read_blocked() -> bool:
        return await blocked_reads() == 1

    async def read_cancelled() -> bool:
        return await blocked_reads() == 0

    async with _messages_locked(database_dsn):
        ws_bob = await connect(gateway, bob, channel_id, params={"since": "0"})
        await eventually(read_blocked)
        await ws_bob.close()
        await eventually(read_cancelled)  # while the lock is still held


async def _store_history(
    pg_pool: asyncpg.Pool, channel_id: int, user_id: int, count: int, content_bytes: int
) -> None:
    """`count` messages already written by a worker, and no counter or recent stream in
    Redis: the channel's head comes from PostgreSQL, and so does every replayed page."""
    await pg_pool.execute(
        """INSERT INTO messages (id, channel_id, seq, user_id, body, created_at)
           SELECT s, $1, s, $2, jsonb_build_object('type', 'text', 'content', repeat('x', $4)),
                  now()
           FROM generate_series(1, $3) AS s""",
        channel_id,
        user_id,
        count,
        content_bytes,
    )


async def test_large_gap_is_replayed_in_pages(
    gateway: TestClient[Any, Any], pg_pool: asyncpg.Pool
) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    await _store_history(pg_pool, channel_id, alice.user_id, 3000, 100)

    ws = await connect(gateway, alice, channel_id, params={"since": "0"})
    frames = await receive_messages(ws, 3000)

    assert [frame["seq"] for frame in frames] == list(range(1, 3001))
    metrics = gateway.app[METRICS]
    assert metrics.backlog_reads.value == math.ceil(3000 / PAGE_SIZE)
    assert metrics.replayed_frames.value == 3000


async def test_client_that_reads_nothing_stops_the_replay_and_is_closed_as_too_slow(
    make_gateway: MakeGateway, pg_pool: asyncpg.Pool
) -> None:
    """A client that resumes from 0 on a long channel and never reads: no page is read
    past the one that filled its queue, and the socket is closed (4408), so it cannot
    hold a page and a queue of the gateway's memory for as long as it likes."""
    gateway = await make_gateway(
        ws_send_queue_size=16, ws_socket_send_buffer_bytes=4096, ws_replay_stall_seconds=0.5
    )
    channel_id, (alice,) = await room(gateway, "alice")
    # 8 KB frames: the buffers between the two ends take far fewer than a page of them.
    await _store_history(pg_pool, channel_id, alice.user_id, 3000, 8000)
    metrics = gateway.app[METRICS]

    async def closed_as_too_slow() -> bool:
        return metrics.slow_disconnects.value == 1

    connector = aiohttp.TCPConnector(socket_factory=tiny_receive_buffer)
    async with aiohttp.ClientSession(connector=connector) as session:
        stuck = await session.ws_connect(
            gateway.make_url(f"/api/v1/chat/{channel_id}"),
            params={"token": alice.token, "since": "0"},
            autoping=False,
        )
        await eventually(closed_as_too_slow)
        assert metrics.backlog_reads.value == 1
        assert metrics.replayed_frames.value == 0  # not even the first page was taken whole
        assert not stuck.closed  # it is the server that gave up
