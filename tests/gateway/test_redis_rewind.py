"""Redis data loss is detected, never silent.

Regression: when Redis lost acknowledged writes (a failover to a lagging
replica, `appendfsync everysec` and a crash, a restore from an older file),
the channel's counter existed but was behind: new messages reused stored
`(channel_id, seq)` pairs, which the worker then dropped without a trace, and
sockets whose last seq was ahead dropped every new message as a repeat.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from persistence.worker import Worker
from shared.local_servers import ServerProcess, start_valkey
from shared.redis_keys import RedisKeys
from tests.faults.chat_clients import Account as FaultAccount
from tests.faults.chat_clients import Member, Sender
from tests.gateway.api_client import (
    RECEIVE_TIMEOUT,
    connect,
    eventually,
    receive_messages,
    receive_until,
    room,
    send_texts,
)
from tests.gateway.conftest import MakeGateway


async def _until_seq(
    ws: aiohttp.ClientWebSocketResponse, seq: int, within: float = RECEIVE_TIMEOUT
) -> tuple[list[int], list[dict[str, Any]]]:
    """The message seqs and the error frames a socket gets up to message `seq`."""
    seqs: list[int] = []
    errors: list[dict[str, Any]] = []
    async with asyncio.timeout(within):
        while not seqs or seqs[-1] < seq:
            message = await ws.receive()  # bounded by `within`, not per frame
            assert message.type is aiohttp.WSMsgType.TEXT, message
            frame = orjson.loads(message.data)
            if frame["type"] == "message":
                seqs.append(frame["seq"])
            elif frame["type"] == "error":
                errors.append(frame)
    return seqs, errors


def _keys(make_settings: Any) -> RedisKeys:
    settings = make_settings()
    return RedisKeys(settings.redis_key_prefix, settings.redis_partitions)


async def test_a_counter_behind_what_sockets_saw_is_raised_and_they_are_told(
    make_gateway: MakeGateway, make_settings: Any, redis_url: str
) -> None:
    # No recent history: only what the gateways delivered tells the counter is behind.
    gateway_a = await make_gateway(recent_history_size=0)
    gateway_b = await make_gateway(recent_history_size=0)
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    ws_alice = await connect(gateway_a, alice, channel_id)
    ws_bob = await connect(gateway_b, bob, channel_id)
    alice_seqs = [frame["seq"] for frame in (await send_texts(ws_alice, 5, "a")).messages]
    assert [frame["seq"] for frame in await receive_messages(ws_bob, 5)] == [1, 2, 3, 4, 5]
    redis = aioredis.Redis.from_url(redis_url)
    try:
        await redis.set(_keys(make_settings).channel_seq(channel_id), 2)  # lost seqs 3..5

        await ws_bob.send_str('{"type": "text", "content": "after", "client_id": "b-1"}')

        bob_seqs, bob_errors = await _until_seq(ws_bob, 6)
        alice_rest, alice_errors = await _until_seq(ws_alice, 6)
        assert int(await redis.get(_keys(make_settings).channel_seq(channel_id))) == 6
    finally:
        await redis.aclose()
    assert bob_seqs == [6]
    assert alice_seqs + alice_rest == [1, 2, 3, 4, 5, 6]
    for errors in (alice_errors, bob_errors):
        assert [(e["code"], e["errors"]) for e in errors] == [
            ("channel_rewound", [{"from_seq": 3, "to_seq": 5}])
        ]


async def test_a_seq_reused_by_a_gateway_that_knew_less_is_not_dropped_by_the_others(
    make_gateway: MakeGateway,
    make_settings: Any,
    pg_pool: asyncpg.Pool[asyncpg.Record],
    redis_url: str,
) -> None:
    """Redis lost seqs 3..5 with their stream entries, and a gateway that never saw
    them numbers the next message 3. The gateway whose socket saw 5 notices the reused
    seq (a newer id at a delivered seq), replays the message instead of dropping it
    as a repeat, and raises the counter past what it saw."""
    overrides = {"recent_history_size": 0, "ws_resume_wait_seconds": 2.0}
    gateway_a = await make_gateway(**overrides)
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    ws_alice = await connect(gateway_a, alice, channel_id)
    sent = await send_texts(ws_alice, 5, "a")
    await receive_messages(ws_alice, 5 - len(sent.messages))
    keys = _keys(make_settings)
    redis = aioredis.Redis.from_url(redis_url)
    try:
        await redis.set(keys.channel_seq(channel_id), 2)
        stream = keys.ingest_stream_of(channel_id)
        lost = [eid for eid, fields in await redis.xrange(stream) if int(fields[b"seq"]) > 2]
        await redis.xdel(stream, *lost)

        gateway_b = await make_gateway(**overrides)
        ws_bob = await connect(gateway_b, bob, channel_id)
        await ws_bob.send_str('{"type": "text", "content": "reused"}')
        assert (await receive_until(ws_bob, "ack"))["seq"] == 3  # B knew no more

        rewound = await receive_until(ws_alice, "error")
        assert (rewound["code"], rewound["errors"]) == (
            "channel_rewound",
            [{"from_seq": 3, "to_seq": 5}],
        )
        await Worker(make_settings(), redis=redis, pool=pg_pool).run_until_idle()
        replayed = await receive_until(ws_alice, "message")  # from PostgreSQL
        assert (replayed["seq"], replayed["body"]["content"]) == (3, "reused")

        async def raised() -> bool:
            return int(await redis.get(keys.channel_seq(channel_id))) >= 5

        await eventually(raised)
    finally:
        await redis.aclose()
    await ws_bob.send_str('{"type": "text", "content": "next"}')
    assert (await receive_until(ws_bob, "ack"))["seq"] == 6
    # Seqs 4 and 5 are lost: the socket waits WS_RESUME_WAIT_SECONDS, reports
    # history_gap, then goes on.
    seqs, errors = await _until_seq(ws_alice, 6, within=15)
    assert seqs == [6]
    assert [(e["code"], e["errors"]) for e in errors] == [
        ("history_gap", [{"from_seq": 4, "to_seq": 5}])
    ]


async def test_a_conflict_the_worker_finds_is_told_to_the_sockets(
    gateway: TestClient[Any, Any],
    make_settings: Any,
    pg_pool: asyncpg.Pool[asyncpg.Record],
    redis_url: str,
) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    ws = await connect(gateway, alice, channel_id)
    await send_texts(ws, 3, "a")
    settings = make_settings()
    keys = _keys(make_settings)
    redis = aioredis.Redis.from_url(redis_url)
    try:
        await Worker(settings, redis=redis, pool=pg_pool).run_until_idle()
        # A message that got seq 2 again from a counter that had gone back.
        await redis.xadd(
            keys.ingest_stream_of(channel_id),
            {
                "id": 999_999,
                "channel_id": channel_id,
                "seq": 2,
                "user_id": alice.user_id,
                "client_id": "",
                "body": '{"type":"text","content":"reused"}',
                "ts": 1_750_000_000_000,
            },
        )
        worker = Worker(settings, redis=redis, pool=pg_pool)
        await worker.run_until_idle()
        assert worker.metrics.seq_conflicts.value == 1
    finally:
        await redis.aclose()

    rewound = await receive_until(ws, "error")
    assert (rewound["code"], rewound["errors"]) == (
        "channel_rewound",
        [{"from_seq": 2, "to_seq": 3}],
    )


async def test_counters_are_rechecked_when_pubsub_reconnects(
    gateway: TestClient[Any, Any], make_settings: Any, redis_url: str
) -> None:
    """Nobody sends: the reconnect alone finds the counter behind and tells the sockets."""
    channel_id, (alice, bob) = await room(gateway, "alice", "bob")
    ws_alice = await connect(gateway, alice, channel_id)
    ws_bob = await connect(gateway, bob, channel_id)
    await send_texts(ws_alice, 5, "a")
    assert [frame["seq"] for frame in await receive_messages(ws_bob, 5)] == [1, 2, 3, 4, 5]
    seq_key = _keys(make_settings).channel_seq(channel_id)
    redis = aioredis.Redis.from_url(redis_url)
    try:
        await redis.set(seq_key, 2)
        await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")

        rewound = await receive_until(ws_bob, "error")
        assert (rewound["code"], rewound["errors"]) == (
            "channel_rewound",
            [{"from_seq": 3, "to_seq": 5}],
        )
        assert int(await redis.get(seq_key)) == 5
    finally:
        await redis.aclose()
    await ws_alice.send_str('{"type": "text", "content": "after"}')
    bob_seqs, _ = await _until_seq(ws_bob, 6)
    assert bob_seqs == [6]


# ---------------------------------------------------------------------------
# A real Valkey restarted from an older AOF, under traffic.

_PER_SENDER = 60


def _url(gateway: TestClient[Any, Any]) -> str:
    return str(gateway.make_url("")).rstrip("/")


async def _stored(pg_pool: asyncpg.Pool[asyncpg.Record], channel_id: int) -> set[int]:
    rows = await pg_pool.fetch("SELECT id FROM messages WHERE channel_id = $1", channel_id)
    return {row["id"] for row in rows}


@pytest.mark.timeout(120)
async def test_valkey_restored_from_an_older_aof_loses_and_reuses_nothing_acknowledged(
    make_gateway: MakeGateway,
    make_settings: Any,
    pg_pool: asyncpg.Pool[asyncpg.Record],
    own_valkey: ServerProcess,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Mid-stream the AOF is copied; sending goes on, everything acknowledged is
    persisted, Valkey is killed, the older copy put back and Valkey restarted
    while senders keep going. No acknowledged message may be overwritten or
    dropped without a trace, and the listeners keep getting seqs in order."""
    caplog.set_level(logging.ERROR, logger="gateway.seq_floors")
    url = f"redis://127.0.0.1:{own_valkey.port}/0"
    overrides = {"redis_url": url, "redis_timeout_seconds": 1.0}
    gateways = [await make_gateway(**overrides), await make_gateway(**overrides)]
    urls = [_url(gateway) for gateway in gateways]
    channel_id, accounts = await room(gateways[0], "alice", "bob", "carol", "dave")
    as_clients = [FaultAccount(account.user_id, account.token) for account in accounts]
    stop_worker = asyncio.Event()
    worker = Worker(make_settings(**overrides, worker_block_ms=50), pool=pg_pool)
    persisting = asyncio.create_task(worker.run(stop_worker))
    data_dir = own_valkey.log_path.parent
    restarted: ServerProcess | None = None
    async with aiohttp.ClientSession() as session:
        members = [
            Member(session, urls[n:] + urls[:n], as_clients[n], channel_id) for n in range(2)
        ]
        for member in members:
            member.start()
        try:
            for member in members:
                await asyncio.wait_for(member.connected.wait(), RECEIVE_TIMEOUT)

            def senders(tag: str) -> list[Sender]:
                return [
                    Sender(session, urls[n:] + urls[:n], as_clients[2 + n], channel_id, f"{tag}{n}")
                    for n in range(2)
                ]

            before = senders("before")
            sending = [asyncio.create_task(s.send(_PER_SENDER, 0.002)) for s in before]
            for sender in before:
                await sender.wait_acked(_PER_SENDER // 3, 30)
            shutil.copytree(data_dir / "appendonlydir", tmp_path / "older-aof")
            await asyncio.gather(*sending)
            acked_before = {mid for s in before for mid, _ in s.acked.values()}
            for member in members:
                await member.wait_for_seq(2 * _PER_SENDER, 30)

            async def all_persisted() -> bool:
                return acked_before <= await _stored(pg_pool, channel_id)

            await eventually(all_persisted, within=30)

            own_valkey.kill()
            shutil.rmtree(data_dir / "appendonlydir")
            shutil.copytree(tmp_path / "older-aof", data_dir / "appendonlydir")
            after = senders("after")
            sending = [asyncio.create_task(s.send(_PER_SENDER, 0.002)) for s in after]
            restarted = start_valkey(data_dir, own_valkey.port, appendonly=True)
            await asyncio.gather(*sending)

            acked = {cid: ack for s in [*before, *after] for cid, ack in s.acked.items()}
            assert len(acked) == 4 * _PER_SENDER
            seqs = sorted(seq for _, seq in acked.values())
            assert seqs == list(range(1, len(acked) + 1))  # none reused, none skipped
            for member in members:
                await member.wait_for_seq(seqs[-1], 30)
            acked_ids = {mid for mid, _ in acked.values()}

            async def every_ack_persisted() -> bool:
                return acked_ids <= await _stored(pg_pool, channel_id)

            await eventually(every_ack_persisted, within=30)
        finally:
            for member in members:
                await member.stop()
            stop_worker.set()
            await persisting
            if restarted is not None:
                restarted.stop()

    assert worker.metrics.seq_conflicts.value == 0
    assert worker.metrics.dead_letters.value == 0
    for member in members:
        assert member.seqs == seqs  # every message, once, in order
        assert "history_gap" not in member.errors
    # The restore really rewound the counter, and it was caught.
    assert any("was behind" in record.getMessage() for record in caplog.records)
