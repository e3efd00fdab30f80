"""A target with data of its own: refused when the Go data collides with it, and
coordinated when it does not (Go ids it uses move, its live message ids are stepped over)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
import pytest
import redis.asyncio as redis

from loadtests.go_database import bcrypt_hash, create_schema
from persistence.worker import Worker
from shared.db.go_import import RUN_LOCK_KEY
from shared.go_import.run import ImportRefusedError
from shared.redis_keys import RedisKeys
from shared.settings import Settings
from shared.wire import ID_EPOCH_MS, ID_PARTITION_SHIFT, ID_TIME_SHIFT
from tests.gateway.api_client import connect, create_channel, receive_each, signup
from tests.gateway.conftest import MakeGateway
from tests.go_import import go_data
from tests.go_import.conftest import GoDatabase, ImportGo
from tests.go_import.test_import import history, login


async def _awkward_source(go_database: GoDatabase) -> str:
    dsn = await go_database()
    conn = await asyncpg.connect(dsn)
    try:
        await go_data.fill(conn, 2)
    finally:
        await conn.close()
    return dsn


async def test_colliding_users_and_channels_are_refused_and_nothing_is_written(
    go_database: GoDatabase,
    import_go: ImportGo,
    make_gateway: MakeGateway,
    make_settings: Any,
    pg_pool: asyncpg.Pool[asyncpg.Record],
    redis_url: str,
) -> None:
    gateway = await make_gateway()
    own = await signup(gateway, "Alice", email="ALICE@example.com")  # Go user 1's, in caps
    await create_channel(gateway, own, "general")  # Go channel 1 is "General"
    source = await _awkward_source(go_database)

    with pytest.raises(ImportRefusedError) as refused:
        await import_go(source)

    message = str(refused.value)
    assert "user 1: 'alice' is already used by the target's own data" in message
    assert "user 1: 'alice@example.com' is already used" in message
    assert "channel 1: 'General' is already used" in message
    assert "nothing was written" in message
    assert await pg_pool.fetchval("SELECT count(*) FROM users") == 1
    assert await pg_pool.fetchval("SELECT count(*) FROM channels") == 1
    assert await pg_pool.fetchval("SELECT count(*) FROM go_import") == 0
    settings: Settings = make_settings()
    client = redis.Redis.from_url(redis_url)
    try:
        keys = RedisKeys(settings.redis_key_prefix, settings.redis_partitions)
        assert await client.exists(keys.channel_seq(2)) == 0  # no imported channel's counter
    finally:
        await client.aclose()
    with pytest.raises(ImportRefusedError):  # a dry run says the same
        await import_go(source, dry_run=True)


async def test_own_data_is_kept_and_go_ids_it_uses_move(
    go_database: GoDatabase,
    import_go: ImportGo,
    make_gateway: MakeGateway,
    pg_pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    gateway = await make_gateway()
    zed = await signup(gateway, "zed")  # takes user id 1, Go's alice
    room = await create_channel(gateway, zed, "zeds room")  # takes channel id 1, Go's General
    ws = await connect(gateway, zed, room)
    await ws.send_json({"type": "text", "content": "zed was here first"})
    await receive_each(ws, "ack", "message")
    source = await _awkward_source(go_database)

    run = await import_go(source)

    assert run.code == 0, run.report
    assert "user 1: -> id 100" in run.report  # above every Go id, kept or not
    assert "channel 1: -> id 78" in run.report
    mapped = await pg_pool.fetchval("SELECT user_id FROM go_import_users WHERE go_id = 1")
    alice = await login(gateway, "alice", go_data.ALICE_PASSWORD)
    assert alice.user_id == mapped == 100
    general = await history(gateway, alice, 78)
    assert [m["body"] for m in general] == go_data.history(2, 1)
    assert all(m["user_id"] != zed.user_id for m in general)
    assert (await login(gateway, "zed", "correct horse")).user_id == zed.user_id
    newcomer = await signup(gateway, "newcomer")  # the sequences moved past the kept ids
    assert newcomer.user_id == 101


def _decompose(message_id: int) -> tuple[int, int, int]:
    return (
        (message_id >> ID_TIME_SHIFT) + ID_EPOCH_MS,
        (message_id >> ID_PARTITION_SHIFT) & 127,
        message_id & 31,
    )


@pytest.mark.parametrize("persisted", [False, True], ids=["in-the-stream", "in-postgresql"])
async def test_imported_ids_step_past_a_live_id_of_the_same_millisecond(
    go_database: GoDatabase,
    import_go: ImportGo,
    make_gateway: MakeGateway,
    make_settings: Any,
    pg_pool: asyncpg.Pool[asyncpg.Record],
    persisted: bool,
) -> None:
    """Regression guard: a Go message of the very millisecond and partition of a live
    message would otherwise get the live message's id, and one of the two is lost."""
    gateway = await make_gateway()
    zed = await signup(gateway, "zed")
    room = await create_channel(gateway, zed, "zeds room")  # channel 1: partition 1
    ws = await connect(gateway, zed, room)
    await ws.send_json({"type": "text", "content": "live"})
    ack, _ = await receive_each(ws, "ack", "message")
    live_id = ack["id"]
    ms, partition, counter = _decompose(live_id)
    assert (partition, counter) == (1, 0)
    settings: Settings = make_settings()
    if persisted:
        assert await Worker(settings, pool=pg_pool).run_until_idle() == 1
    # Go channel 17 keeps its id, so it shares partition 1; three messages of that ms.
    source = await go_database()
    conn = await asyncpg.connect(source)
    try:
        await create_schema(conn, 2)
        await conn.execute(
            "INSERT INTO users (name, username, email, password) VALUES ('Gina', 'gina',"
            " 'gina@example.com', $1)",
            bcrypt_hash("gina password", rounds=4),
        )
        await conn.execute("INSERT INTO channels (id, name) VALUES (17, 'seventeen')")
        await conn.execute(
            "INSERT INTO memberships (user_id, channel_id, role) VALUES (1, 17, 'admin')"
        )
        at = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)
        for text in ("a", "b", "c"):
            await conn.execute(
                "INSERT INTO messages (user_id, channel_id, body, created_at)"
                " VALUES (1, 17, $1, $2)",
                f'{{"type": "text", "content": "{text}"}}',
                at,
            )
    finally:
        await conn.close()

    run = await import_go(source)

    assert run.code == 0, run.report
    assert "1 stepped past ids the target already had" in run.report
    imported = [
        r["id"]
        for r in await pg_pool.fetch("SELECT id FROM messages WHERE channel_id = 17 ORDER BY seq")
    ]
    assert live_id not in imported
    assert [_decompose(i) for i in imported] == [(ms, 1, 1), (ms, 1, 2), (ms, 1, 3)]
    await Worker(settings, pool=pg_pool).run_until_idle()
    assert await pg_pool.fetchval("SELECT count(*) FROM messages WHERE id = $1", live_id) == 1


async def test_a_second_import_running_at_once_is_refused(
    go_database: GoDatabase, import_go: ImportGo, pg_pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    source = await _awkward_source(go_database)
    async with pg_pool.acquire() as running:  # stands for a run in progress
        await running.execute("SELECT pg_advisory_lock($1)", RUN_LOCK_KEY)
        try:
            with pytest.raises(ImportRefusedError, match="another import-go is running"):
                await import_go(source)
            assert (await import_go(source, dry_run=True)).code == 0  # reads only: allowed
        finally:
            await running.execute("SELECT pg_advisory_unlock($1)", RUN_LOCK_KEY)
    assert await pg_pool.fetchval("SELECT count(*) FROM go_import") == 0
    assert (await import_go(source)).code == 0
