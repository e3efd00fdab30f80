"""`chat-group import-go` end to end: a Go database of each schema version, with every
awkward row, imported into the test target and checked through the public API."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio as redis
from aiohttp.test_utils import TestClient

from shared.redis_keys import RedisKeys
from shared.settings import Settings
from tests.gateway.api_client import (
    Account,
    connect,
    error_of,
    expect_refusal,
    receive_each,
    receive_messages,
)
from tests.gateway.conftest import MakeGateway
from tests.go_import import go_data
from tests.go_import.conftest import GoDatabase, ImportGo, ImportRun

ROOT = Path(__file__).resolve().parents[2]
_IMPORTED_TABLES = ("users", "channels", "memberships", "messages")


@pytest.fixture(params=[1, 2], ids=["v1-content", "v2-body"])
def version(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
async def go_source(go_database: GoDatabase, version: int) -> str:
    dsn = await go_database()
    conn = await asyncpg.connect(dsn)
    try:
        await go_data.fill(conn, version)
    finally:
        await conn.close()
    return dsn


@pytest.fixture
async def imported(go_source: str, import_go: ImportGo) -> ImportRun:
    run = await import_go(go_source)
    assert run.code == 0, run.report
    return run


async def login(gateway: TestClient[Any, Any], identity: str, password: str) -> Account:
    response = await gateway.post(
        "/api/v1/auth/login", json={"identity": identity, "password": password}
    )
    assert response.status == 200, await response.text()
    token = (await response.json())["data"]
    me = await gateway.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    data = (await me.json())["data"]
    return Account(user_id=data["id"], username=data["username"], token=token)


async def history(gateway: TestClient[Any, Any], account: Account, channel_id: int) -> list[Any]:
    response = await gateway.get(
        f"/api/v1/channels/{channel_id}/messages?after_seq=0&limit=200", headers=account.auth
    )
    assert response.status == 200, await response.text()
    page = (await response.json())["data"]
    assert page["next_cursor"] is None  # every test channel fits in one page
    messages: list[Any] = page["messages"]
    return messages


def reported_changes(report: str) -> set[tuple[str, int | None, str]]:
    """(Go table, Go id, kind) of every change line of a report."""
    found: set[tuple[str, int | None, str]] = set()
    kind = ""
    for line in report.splitlines():
        if heading := re.match(r"^  (\w+) \([\d,]+\)", line):
            kind = heading.group(1)
        elif row := re.match(r"^    (\w+?)s? (\d+): ", line):
            found.add((row.group(1) + "s", int(row.group(2)), kind))
        elif row := re.match(r"^    (messages): ", line):
            found.add(("messages", None, kind))
    return found


def changes_section(report: str) -> str:
    return report[report.index("\nChanges") :]


async def test_go_users_log_in_with_their_bcrypt_passwords(
    imported: ImportRun, make_gateway: MakeGateway, pg_pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    gateway = await make_gateway()
    alice = await login(gateway, "ALICE@example.com", go_data.ALICE_PASSWORD)
    bob = await login(gateway, "bob_b", go_data.BOB_PASSWORD)
    renamed = await login(gateway, "ALICE_3", "other password")  # the duplicate username

    assert (alice.user_id, bob.user_id, renamed.user_id) == (1, 2, 3)  # Go ids kept
    stored = await pg_pool.fetchval("SELECT password FROM users WHERE id = 1")
    assert stored.startswith("$argon2id$")  # the bcrypt hash was upgraded at log-in
    wrong = await gateway.post(
        "/api/v1/auth/login", json={"identity": "alice", "password": "not it"}
    )
    assert await error_of(wrong) == (401, "invalid_credentials")


@pytest.mark.parametrize("identity", ["go_user_5", "go_user_6", "go_user_99"])
async def test_users_without_a_usable_go_password_cannot_log_in(
    imported: ImportRun, make_gateway: MakeGateway, identity: str
) -> None:
    gateway = await make_gateway()
    for password in ("", "plaintext", "x" * 8):
        response = await gateway.post(
            "/api/v1/auth/login", json={"identity": identity, "password": password}
        )
        assert response.status in (401, 422), await response.text()
        if password:
            assert await error_of(response) == (401, "invalid_credentials")


async def test_histories_come_back_in_order_with_gap_free_seqs(
    imported: ImportRun, make_gateway: MakeGateway, version: int
) -> None:
    gateway = await make_gateway()
    alice = await login(gateway, "alice", go_data.ALICE_PASSWORD)
    bob = await login(gateway, "bob_b", go_data.BOB_PASSWORD)
    # Channel 77 existed in Go only as messages; alice joins its placeholder to read it.
    joined = await gateway.post(
        "/api/v1/channels/join", json={"channel_id": 77}, headers=alice.auth
    )
    assert joined.status == 200
    for channel_id, reader in ((1, alice), (2, bob), (3, alice), (77, alice)):
        messages = await history(gateway, reader, channel_id)
        assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1))
        assert [m["body"] for m in messages] == go_data.history(version, channel_id)
        ids = [m["id"] for m in messages]
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)
        assert all(0 < i < 2**53 for i in ids)
    general = await history(gateway, alice, 1)
    by_body = {m["body"].get("content"): m for m in general}
    assert by_body["ghost"]["user"]["name"] == "Deleted user"  # its author did not exist
    assert by_body["not a member"]["user_id"] == 8  # kept, though dave is no member
    assert by_body["old"]["seq"] == 1
    assert by_body["old"]["created_at"] == "2023-06-01T00:00:00.000Z"
    assert by_body["future"]["seq"] == len(general)
    assert by_body["future"]["created_at"] < "2090"  # clamped to the import's start


async def test_members_see_their_channels_with_mapped_roles(
    imported: ImportRun, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway()
    # Member lists need a token; any user's will do.
    alice = await login(gateway, "alice", go_data.ALICE_PASSWORD)
    roles = {}
    for channel_id in (1, 2, 3):
        response = await gateway.get(f"/api/v1/channels/{channel_id}/members", headers=alice.auth)
        roles[channel_id] = {m["id"]: m["role"] for m in (await response.json())["data"]}
    assert roles == {
        1: {1: "owner", 2: "member", 6: "member"},  # alice's two rows merged; user 55 is gone
        2: {2: "owner", 4: "moderator", 5: "member"},  # the second admin is a moderator
        3: {1: "member"},
    }
    names = [
        (await (await gateway.get(f"/api/v1/channels/{i}")).json())["data"]["name"]
        for i in (2, 3, 4, 5, 6)
    ]
    assert names == ["Neu", "neu (2)", "Neu (3)", "Go channel 5", "L" * 64]

    bob = await login(gateway, "bob_b", go_data.BOB_PASSWORD)
    ws = await connect(gateway, bob, 1)
    await ws.send_json({"type": "text", "content": "bob is a member of General"})
    ack, message = await receive_each(ws, "ack", "message")
    assert message["seq"] == ack["seq"]
    dave = await login(gateway, "dave", "other password")
    frame, close_code = await expect_refusal(await connect(gateway, dave, 1))
    assert (frame["code"], close_code) == ("not_a_member", 4403)


async def test_report_lists_every_change_and_is_stored(
    imported: ImportRun, version: int, pg_pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    found = reported_changes(imported.report)
    assert found == go_data.expected_changes(version) | {("messages", None, "author_not_member")}
    for pair in ("channel 1, user 8:", "channel 1, user 99:", "channel 77, user 1:"):
        assert pair in imported.report
    assert "1 older than 2024-01-01" in imported.report
    assert f"{go_data.BURST - 32} moved to a later millisecond" in imported.report
    stored = await pg_pool.fetch("SELECT outcome, report FROM go_import_runs")
    assert [(r["outcome"], r["report"]) for r in stored] == [("complete", imported.report)]
    changes = await pg_pool.fetchval("SELECT count(*) FROM go_import_changes")
    assert changes == len(re.findall(r"^    [a-z]", imported.report, re.M))
    assert "password" not in str(
        await pg_pool.fetch("SELECT detail FROM go_import_changes WHERE go_table = 'users'")
    ).replace("password_", "").replace("cannot log in", "")


async def test_dry_run_writes_nothing_and_prints_the_real_runs_report(
    go_source: str,
    import_go: ImportGo,
    make_settings: Any,
    pg_pool: asyncpg.Pool[asyncpg.Record],
    redis_url: str,
) -> None:
    dry = await import_go(go_source, dry_run=True)

    assert dry.code == 0, dry.report
    assert "dry run: nothing was written" in dry.report
    for table in (
        *_IMPORTED_TABLES,
        "go_import",
        "go_import_messages",
        "go_import_changes",
        "go_import_runs",
    ):
        assert await pg_pool.fetchval(f"SELECT count(*) FROM {table}") == 0, table  # noqa: S608
    settings: Settings = make_settings()
    client = redis.Redis.from_url(redis_url)
    try:
        assert [key async for key in client.scan_iter(f"{settings.redis_key_prefix}:*")] == []
    finally:
        await client.aclose()
    real = await import_go(go_source)
    assert changes_section(real.report) == changes_section(dry.report)


async def test_second_run_imports_nothing_and_says_so(
    imported: ImportRun, go_source: str, import_go: ImportGo, pg_pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    async def counts() -> list[int]:
        return [await pg_pool.fetchval(f"SELECT count(*) FROM {t}") for t in _IMPORTED_TABLES]  # noqa: S608

    before = await counts()
    again = await import_go(go_source)

    assert again.code == 0
    assert "already complete" in again.report
    assert "nothing to import" in again.report
    assert re.search(r"^messages +[\d,]+ +[\d,]+ +0$", again.report, re.M)
    assert await counts() == before
    assert changes_section(again.report) == changes_section(imported.report)


async def test_redis_is_consistent_and_a_live_gateway_sends_the_next_seq(
    go_source: str,
    import_go: ImportGo,
    make_gateway: MakeGateway,
    make_settings: Any,
    redis_url: str,
) -> None:
    gateway = await make_gateway()  # running while the import happens
    run = await import_go(go_source)
    assert run.code == 0, run.report
    bob = await login(gateway, "bob_b", go_data.BOB_PASSWORD)
    stored = await history(gateway, bob, 2)
    settings: Settings = make_settings()
    keys = RedisKeys(settings.redis_key_prefix, settings.redis_partitions)
    client = redis.Redis.from_url(redis_url)
    try:
        assert await client.get(keys.channel_seq(2)) == str(len(stored)).encode()
        recent = await client.xrange(keys.channel_recent(2))
    finally:
        await client.aclose()
    assert [entry_id for entry_id, _ in recent] == [f"{m['seq']}-0".encode() for m in stored]
    # The live frame is the history item less what history adds (reactions, replies).
    frames = [
        {k: v for k, v in item.items() if k not in ("reactions", "reply_count")} for item in stored
    ]
    assert [orjson.loads(fields[b"f"]) for _, fields in recent] == frames

    ws = await connect(gateway, bob, 2)
    await ws.send_json({"type": "text", "content": "first live message", "client_id": "live-1"})
    ack, live = await receive_each(ws, "ack", "message")
    assert ack["seq"] == live["seq"] == len(stored) + 1
    assert live["id"] > max(m["id"] for m in stored)
    replay = await connect(gateway, bob, 2, params={"since": "0"})
    assert await receive_messages(replay, len(stored) + 1) == [*frames, live]


async def test_foreign_keys_of_messages_are_back_and_validated(
    go_source: str, import_go: ImportGo, pg_pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    query = """SELECT conname, pg_get_constraintdef(oid) AS definition, convalidated
               FROM pg_constraint WHERE conrelid = 'messages'::regclass AND contype = 'f'
               ORDER BY conname"""
    before = [dict(r) for r in await pg_pool.fetch(query)]
    assert (await import_go(go_source, batch_size=7)).code == 0  # many batches
    assert [dict(r) for r in await pg_pool.fetch(query)] == before


async def _reset_password(settings: Settings, identity: str, password: str) -> tuple[int, str]:
    env = {**os.environ, "DATABASE_URL": settings.postgres_dsn()}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "shared.cli", "reset-password", identity),
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(30):
        output, _ = await process.communicate(password.encode() + b"\n")
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_a_user_without_a_usable_password_logs_in_after_a_reset(
    imported: ImportRun, make_gateway: MakeGateway, make_settings: Any
) -> None:
    settings: Settings = make_settings()
    assert await _reset_password(settings, "go_user_5", "short") == (
        1,
        "reset-password: a password has 8 to 128 characters\n",
    )
    assert (await _reset_password(settings, "nobody", "long enough 1"))[0] == 1

    code, output = await _reset_password(settings, "GO_USER_5", "a new password 5")

    assert (code, output) == (0, "password set for user 5\n")
    gateway = await make_gateway()
    account = await login(gateway, "go_user_5", "a new password 5")
    assert account.user_id == 5
