"""The persistence worker against real Valkey and PostgreSQL.

Entries are XADDed in the gateway's stream contract format; each test checks
what ends up in `messages`, in the pending lists and in the dead letters.
Each test runs on one Valkey server and on a cluster (see conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from persistence.worker import Worker
from shared.db.messages import MessageRow, count_messages, insert_messages
from shared.local_servers import free_port, start_valkey
from shared.redis_keys import CONSUMER_GROUP, RedisKeys
from shared.settings import Settings
from tests.persistence.conftest import Backend, SettingsFactory

MakeSettings = Callable[..., Settings]

_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_message_ids = itertools.count(10_000)
_UNKNOWN_USER_ID = 987_654_321
# True while some session's INSERT waits for the lock a test holds on messages.
_INSERT_WAITING_ON_LOCK = (
    "SELECT count(*) > 0 FROM pg_locks WHERE relation = 'messages'::regclass AND NOT granted"
)


@dataclass
class Sender:
    """Plays the gateway's send script: XADDs entries in the stream contract's format."""

    redis: aioredis.Redis
    keys: RedisKeys
    user_id: int
    channel_ids: list[int]
    sent: list[int] = field(default_factory=list)
    _seqs: dict[int, itertools.count[int]] = field(default_factory=dict)

    async def send(self, channel_id: int, *, user_id: int | None = None, **fields: bytes) -> int:
        """XADD one message; `fields` override or add raw fields. Returns the message id."""
        message_id = next(_message_ids)
        seq = next(self._seqs.setdefault(channel_id, itertools.count(1)))
        entry: dict[bytes, bytes] = {
            b"id": str(message_id).encode(),
            b"channel_id": str(channel_id).encode(),
            b"seq": str(seq).encode(),
            b"user_id": str(user_id or self.user_id).encode(),
            b"client_id": f"c-{message_id}".encode() if message_id % 2 else b"",
            b"body": b'{"type":"text","content":"hi %d"}' % message_id,
            b"ts": str(1_750_000_000_000 + message_id).encode(),
        }
        entry.update({key.encode(): value for key, value in fields.items()})
        await self.redis.xadd(self.keys.ingest_stream_of(channel_id), entry)
        if user_id is None and not fields:
            self.sent.append(message_id)
        return message_id

    async def send_many(self, count: int) -> None:
        for i in range(count):
            await self.send(self.channel_ids[i % len(self.channel_ids)])


async def make_sender(
    pg_pool: asyncpg.Pool, redis: aioredis.Redis, settings: Settings, channels: int = 3
) -> Sender:
    """Insert the user and channels the foreign keys need, and return a sender for them."""
    user_id = await pg_pool.fetchval(
        "INSERT INTO users (name, username, email, password) VALUES ($1, $2, $3, $4) RETURNING id",
        "Ann",
        "ann",
        "ann@example.com",
        "x",
    )
    channel_ids = [
        await pg_pool.fetchval("INSERT INTO channels (name) VALUES ($1) RETURNING id", f"c{i}")
        for i in range(channels)
    ]
    keys = RedisKeys(settings.redis_key_prefix, settings.redis_partitions)
    return Sender(redis, keys, user_id, channel_ids)


async def stored_ids(pg_pool: asyncpg.Pool) -> list[int]:
    return [row["id"] for row in await pg_pool.fetch("SELECT id FROM messages ORDER BY id")]


async def pending_count(redis: aioredis.Redis, keys: RedisKeys) -> int:
    total = 0
    for stream in keys.ingest_streams():
        total += (await redis.xpending(stream, CONSUMER_GROUP))["pending"]
    return total


async def poll_until(predicate: Callable[[], Awaitable[bool]], *, deadline: float) -> None:
    """Wait, bounded, for state another process changes (it sends us no event to await)."""
    async with asyncio.timeout(deadline):
        while True:
            if await predicate():
                return
            await asyncio.sleep(0.01)


async def create_groups(redis: aioredis.Redis, keys: RedisKeys) -> None:
    for stream in keys.ingest_streams():
        await redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)


async def test_entries_are_persisted_once_and_acked(
    make_settings: MakeSettings, pg_pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    settings = make_settings(redis_partitions=4, worker_batch_size=7)
    sender = await make_sender(pg_pool, redis, settings)
    await sender.send_many(40)

    worker = Worker(settings, redis=redis, pool=pg_pool)
    persisted = await worker.run_until_idle()

    assert persisted == 40
    assert await stored_ids(pg_pool) == sorted(sender.sent)
    metrics = worker.metrics
    assert (metrics.persisted.value, metrics.acked.value) == (40, 40)
    assert metrics.batch_size.sum == 40
    assert metrics.write_seconds.count == metrics.batch_size.count >= 40 // 7
    assert sum(metrics.pending.values()) == 0
    assert await pending_count(redis, sender.keys) == 0
    row = await pg_pool.fetchrow("SELECT * FROM messages WHERE id = $1", sender.sent[1])
    assert row["body"] == {"type": "text", "content": f"hi {sender.sent[1]}"}
    assert row["client_id"] == (f"c-{row['id']}" if row["id"] % 2 else None)
    assert int(row["created_at"].timestamp() * 1000) == 1_750_000_000_000 + row["id"]


async def test_trim_removes_persisted_entries_only(
    make_settings: MakeSettings, pg_pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    settings = make_settings(redis_partitions=1)
    sender = await make_sender(pg_pool, redis, settings, channels=1)
    stream = sender.keys.ingest_stream(0)
    await sender.send_many(10)
    await Worker(settings, redis=redis, pool=pg_pool).run_until_idle()
    await sender.send_many(5)
    # A live peer holds the next 5 unacked; claim_idle_ms (30 s) keeps them its own.
    held = await redis.xreadgroup(CONSUMER_GROUP, "peer", {stream: ">"}, count=5)
    held_ids = [entry_id for entry_id, _ in held[0][1]]
    await sender.send_many(3)

    persisted = await Worker(settings, redis=redis, pool=pg_pool).run_until_idle()

    assert persisted == 3
    remaining = [entry_id for entry_id, _ in await redis.xrange(stream)]
    # Everything from the oldest unacked entry on survives; all before it was persisted.
    assert remaining[: len(held_ids)] == held_ids
    assert len(remaining) == len(held_ids) + 3


async def test_redelivered_entry_is_stored_once(
    make_settings: MakeSettings, pg_pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    settings = make_settings(redis_partitions=2)
    sender = await make_sender(pg_pool, redis, settings, channels=1)
    message_id = await sender.send(sender.channel_ids[0])
    worker = Worker(settings, redis=redis, pool=pg_pool)
    await worker.run_until_idle()
    # The same message again, as a retried XADD or a replayed stream would carry it.
    first = (await redis.xrange(sender.keys.ingest_stream_of(sender.channel_ids[0])))[-1][1]
    await redis.xadd(sender.keys.ingest_stream_of(sender.channel_ids[0]), first)

    assert await worker.run_until_idle() == 1

    assert await stored_ids(pg_pool) == [message_id]
    assert await pending_count(redis, sender.keys) == 0


async def test_insert_messages_is_idempotent(
    make_settings: MakeSettings, pg_pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    sender = await make_sender(pg_pool, redis, make_settings(), channels=1)
    row = MessageRow(1, sender.channel_ids[0], 1, sender.user_id, '{"type":"text"}', None, 1)

    async with pg_pool.acquire() as conn, conn.transaction():
        assert await insert_messages(conn, [row, row]) == 1
    async with pg_pool.acquire() as conn, conn.transaction():
        assert await insert_messages(conn, [row]) == 0

    assert await count_messages(pg_pool) == 1


async def test_entries_of_a_dead_consumer_are_taken_over(
    make_settings: MakeSettings, pg_pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    settings = make_settings(redis_partitions=3)
    sender = await make_sender(pg_pool, redis, settings)
    await create_groups(redis, sender.keys)
    await sender.send_many(20)
    taken = 0
    for stream in sender.keys.ingest_streams():  # one stream per read: one slot in a cluster
        reply = await redis.xreadgroup(CONSUMER_GROUP, "dead", {stream: ">"}, count=100)
        taken += sum(len(entries) for _, entries in reply)
    assert taken == 20
    await sender.send_many(10)

    successor = Worker(
        make_settings(redis_key_prefix=settings.redis_key_prefix, worker_claim_idle_ms=0),
        redis=redis,
        pool=pg_pool,
    )
    assert await successor.run_until_idle() == 30

    assert await stored_ids(pg_pool) == sorted(sender.sent)
    assert await pending_count(redis, sender.keys) == 0


async def test_poison_entry_is_dead_lettered_and_the_batch_persisted(
    make_settings: MakeSettings, pg_pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    settings = make_settings(redis_partitions=1, worker_max_attempts=3)
    sender = await make_sender(pg_pool, redis, settings, channels=1)
    channel_id = sender.channel_ids[0]
    await sender.send_many(3)
    poison_id = await sender.send(channel_id, user_id=_UNKNOWN_USER_ID)
    await sender.send_many(3)
    entries = await redis.xrange(sender.keys.ingest_stream(0))
    [poison_stream_id] = [i for i, f in entries if f[b"id"] == str(poison_id).encode()]

    worker = Worker(settings, redis=redis, pool=pg_pool)
    assert await worker.run_until_idle() == 6

    assert await stored_ids(pg_pool) == sorted(sender.sent)
    assert worker.metrics.dead_letters.value == 1
    dead = await redis.xrange(sender.keys.dead_letters(0))
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields[b"id"] == str(poison_id).encode()
    assert b"ForeignKeyViolationError" in fields[b"reason"]
    assert b"after 3 attempts" in fields[b"reason"]
    assert fields[b"stream_id"] == poison_stream_id
    assert await pending_count(redis, sender.keys) == 0


async def test_one_bad_row_costs_a_few_transactions_not_one_per_row(
    make_settings: MakeSettings, pg_pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    """Regression: a rejected batch was rewritten row by row, one transaction per
    row, so one member sending a few bad rows a second slowed every batch."""
    settings = make_settings(redis_partitions=1, worker_batch_size=64, worker_max_attempts=3)
    sender = await make_sender(pg_pool, redis, settings, channels=1)
    await sender.send_many(40)
    poison_id = await sender.send(sender.channel_ids[0], user_id=_UNKNOWN_USER_ID)
    await sender.send_many(23)  # 64 entries: one batch

    worker = Worker(settings, redis=redis, pool=pg_pool)
    assert await worker.run_until_idle() == 63

    assert await stored_ids(pg_pool) == sorted(sender.sent)
    dead = await redis.xrange(sender.keys.dead_letters(0))
    assert [fields[b"id"] for _, fields in dead] == [str(poison_id).encode()]
    assert worker.metrics.batch_size.count == 1
    # The batch, two halves at each of log2(64) = 6 levels, the bad row's 2 retries.
    assert worker.metrics.insert_transactions.value <= 1 + 2 * 6 + 2


async def test_seq_stored_under_another_id_is_dead_lettered_and_the_counter_raised(
    make_settings: MakeSettings, pg_pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    """Regression: after Redis lost writes its counter was behind, new messages reused
    stored (channel_id, seq) pairs, ON CONFLICT DO NOTHING dropped them without a
    trace, and the written metric counted them anyway."""
    settings = make_settings(redis_partitions=1, worker_max_attempts=2)
    sender = await make_sender(pg_pool, redis, settings, channels=1)
    channel_id = sender.channel_ids[0]
    await sender.send_many(5)  # seqs 1..5
    worker = Worker(settings, redis=redis, pool=pg_pool)
    await worker.run_until_idle()
    stream = sender.keys.ingest_stream(0)
    stored_entry = (await redis.xrange(stream))[-1][1]
    # The counter went back to 2: the next two messages reused seqs 3 and 4.
    await redis.set(sender.keys.channel_seq(channel_id), 2)
    reused = [await sender.send(channel_id, seq=seq) for seq in (b"3", b"4")]
    fresh = await sender.send(channel_id, seq=b"6")
    await redis.xadd(stream, stored_entry)  # and a plain re-delivery, which is no conflict

    assert await worker.run_until_idle() == 2  # the new one, and the re-delivered one

    assert await stored_ids(pg_pool) == sorted([*sender.sent, fresh])
    dead = await redis.xrange(sender.keys.dead_letters(0))
    assert [int(fields[b"id"]) for _, fields in dead] == reused
    for (_, fields), seq in zip(dead, (3, 4), strict=True):
        assert fields[b"reason"].startswith(
            b"seq conflict: channel %d seq %d is stored under another message id"
            % (channel_id, seq)
        )
    metrics = worker.metrics
    assert (metrics.seq_conflicts.value, metrics.dead_letters.value) == (2, 2)
    assert metrics.persisted.value == 5 + 1  # rows inserted: not the re-delivered one
    assert int(await redis.get(sender.keys.channel_seq(channel_id))) == 6  # past what is stored


async def test_malformed_entry_is_dead_lettered_at_once(
    make_settings: MakeSettings, pg_pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    settings = make_settings(redis_partitions=1)
    sender = await make_sender(pg_pool, redis, settings, channels=1)
    await sender.send_many(2)
    await sender.send(sender.channel_ids[0], body=b"not json")
    await sender.send(sender.channel_ids[0], seq=b"-1")
    await sender.send_many(2)

    assert await Worker(settings, redis=redis, pool=pg_pool).run_until_idle() == 4

    assert await stored_ids(pg_pool) == sorted(sender.sent)
    reasons = [f[b"reason"] for _, f in await redis.xrange(sender.keys.dead_letters(0))]
    assert len(reasons) == 2
    assert all(reason.startswith(b"malformed entry") for reason in reasons)


async def test_an_entry_is_a_message_without_a_kind_or_with_kind_message_only(
    make_settings: MakeSettings, pg_pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    """Entries written before send.lua had `kind` are messages; an event without the
    message it changes (`target_id`) cannot be applied, so it is dead-lettered, not
    stored as a message (events with one: tests/persistence/test_message_changes.py)."""
    settings = make_settings(redis_partitions=1)
    sender = await make_sender(pg_pool, redis, settings, channels=1)
    channel_id = sender.channel_ids[0]
    await sender.send(channel_id)  # no kind field
    message_id = await sender.send(channel_id, kind=b"message")
    await sender.send(channel_id, kind=b"reaction")

    assert await Worker(settings, redis=redis, pool=pg_pool).run_until_idle() == 2

    assert await stored_ids(pg_pool) == [*sender.sent, message_id]
    dead = await redis.xrange(sender.keys.dead_letters(0))
    assert [fields[b"kind"] for _, fields in dead] == [b"reaction"]


async def test_postgres_connection_lost_mid_write_loses_nothing(
    make_settings: MakeSettings,
    pg_pool: asyncpg.Pool,
    redis: aioredis.Redis,
    database_dsn: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(redis_partitions=2, worker_batch_size=10)
    sender = await make_sender(pg_pool, redis, settings)
    await sender.send_many(25)
    app_name = f"worker-{settings.redis_key_prefix}"
    worker_pool = await asyncpg.create_pool(
        database_dsn, min_size=1, max_size=1, server_settings={"application_name": app_name}
    )
    try:
        async with pg_pool.acquire() as blocker:
            # Hold the table so the worker's first insert is certainly in flight when killed.
            transaction = blocker.transaction()
            await transaction.start()
            await blocker.execute("LOCK TABLE messages IN EXCLUSIVE MODE")
            run = asyncio.create_task(
                Worker(settings, redis=redis, pool=worker_pool).run_until_idle()
            )
            await poll_until(lambda: blocker.fetchval(_INSERT_WAITING_ON_LOCK), deadline=10)
            await blocker.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = $1",
                app_name,
            )
            await transaction.rollback()
        async with asyncio.timeout(20):
            persisted = await run
    finally:
        await worker_pool.close()

    assert persisted == 25
    assert await stored_ids(pg_pool) == sorted(sender.sent)
    assert await pending_count(redis, sender.keys) == 0
    assert any("postgresql unavailable" in r.getMessage() for r in caplog.records)


def _worker_env(settings: Settings, database_dsn: str, backend: Backend) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(_PROJECT_ROOT),
        "DATABASE_URL": database_dsn,
        "REDIS_URL": backend.url,
        "REDIS_CLUSTER": str(backend.cluster).lower(),
        "REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "REDIS_PARTITIONS": str(settings.redis_partitions),
        "WORKER_BLOCK_MS": "50",
        "WORKER_BATCH_SIZE": "20",
    }


@contextlib.asynccontextmanager
async def _worker_process(
    log_path: Path, env: dict[str, str]
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m persistence` as its own process, logging to `log_path`; killed if
    it still runs when the block ends."""
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "persistence", env=env, cwd=_PROJECT_ROOT, stdout=log, stderr=log
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_sigterm_mid_batch_finishes_and_acks_the_batch_then_exits(
    make_settings: MakeSettings,
    pg_pool: asyncpg.Pool,
    redis: aioredis.Redis,
    database_dsn: str,
    backend: Backend,
    tmp_path: Path,
) -> None:
    settings = make_settings(redis_partitions=1)
    sender = await make_sender(pg_pool, redis, settings, channels=1)
    env = _worker_env(settings, database_dsn, backend)
    async with pg_pool.acquire() as blocker:
        transaction = blocker.transaction()
        await transaction.start()
        # The worker's insert waits on this lock: SIGTERM lands mid-batch, with
        # all 15 entries read (one batch of up to 20) and none committed.
        await blocker.execute("LOCK TABLE messages IN EXCLUSIVE MODE")
        await sender.send_many(15)
        log_path = tmp_path / "worker.log"
        async with _worker_process(log_path, {**env, "SHUTDOWN_TIMEOUT_SECONDS": "20"}) as worker:
            await poll_until(lambda: blocker.fetchval(_INSERT_WAITING_ON_LOCK), deadline=20)
            worker.send_signal(signal.SIGTERM)

            async def stopping() -> bool:
                return "finishing the in-flight batch" in log_path.read_text()

            await poll_until(stopping, deadline=20)  # it took the signal, batch in flight
            await transaction.rollback()  # the lock goes; the batch can commit
            async with asyncio.timeout(20):
                assert await worker.wait() == 0, log_path.read_text()

    assert await stored_ids(pg_pool) == sorted(sender.sent)
    assert await pending_count(redis, sender.keys) == 0  # written and acked before exit


async def test_killed_process_is_replaced_without_loss(
    make_settings: MakeSettings,
    pg_pool: asyncpg.Pool,
    redis: aioredis.Redis,
    database_dsn: str,
    backend: Backend,
    tmp_path: Path,
) -> None:
    settings = make_settings(redis_partitions=4)
    sender = await make_sender(pg_pool, redis, settings)
    env = _worker_env(settings, database_dsn, backend)

    async def wait_for_count(expected: int) -> None:
        async def reached() -> bool:
            return await count_messages(pg_pool) >= expected

        await poll_until(reached, deadline=30)

    async with _worker_process(tmp_path / "first.log", env) as first:
        await sender.send_many(50)
        await wait_for_count(50)
        killed = asyncio.Event()

        async def add_around_the_kill() -> None:
            await sender.send_many(150)
            await killed.wait()
            await sender.send_many(150)

        async with pg_pool.acquire() as blocker, blocker.transaction():
            # Inserts wait on this lock (reads do not), so the kill lands mid-batch:
            # entries read, insert in flight, nothing committed or acked.
            await blocker.execute("LOCK TABLE messages IN EXCLUSIVE MODE")
            adding = asyncio.create_task(add_around_the_kill())
            await poll_until(lambda: blocker.fetchval(_INSERT_WAITING_ON_LOCK), deadline=10)
            first.kill()
            async with asyncio.timeout(10):
                await first.wait()
            killed.set()
            async with asyncio.timeout(10):
                await adding
        assert await pending_count(redis, sender.keys) > 0  # the dead worker's batch

    second_log = tmp_path / "second.log"
    async with _worker_process(second_log, {**env, "WORKER_CLAIM_IDLE_MS": "0"}) as second:
        await wait_for_count(350)
        second.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await second.wait() == 0, second_log.read_text()

    assert await stored_ids(pg_pool) == sorted(sender.sent)
    assert await pending_count(redis, sender.keys) == 0


@pytest.mark.parametrize("backend", ["single"], indirect=True)
async def test_a_redis_outage_is_logged_once_not_once_per_partition(
    make_settings: SettingsFactory,
    pg_pool: asyncpg.Pool,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every partition loop meets the outage, and retries it; the log says it once,
    and says once that Redis is back."""
    caplog.set_level(logging.INFO, logger="persistence.worker")
    port = free_port()
    valkey = start_valkey(tmp_path / "valkey", port)
    settings = make_settings(
        redis_url=f"redis://127.0.0.1:{port}/0", redis_partitions=16, worker_block_ms=50
    )
    worker = Worker(settings, pool=pg_pool)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        valkey.stop()
        # Each of the 16 loops has failed, most of them more than once.
        await poll_until(lambda: _true(worker.metrics.redis_errors.value >= 48), deadline=30)
        valkey = start_valkey(tmp_path / "valkey", port)
        await poll_until(
            lambda: _true(any(r.getMessage() == "redis available again" for r in caplog.records)),
            deadline=30,
        )
    finally:
        stop.set()
        await running
        valkey.stop()

    messages = [record.getMessage() for record in caplog.records]
    assert messages.count("redis unavailable, retrying") == 1
    assert messages.count("redis available again") == 1


async def _true(value: bool) -> bool:
    return value
