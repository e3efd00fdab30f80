"""Every migration, applied to a populated database of the version before it.

For each migration N the harness migrates a fresh database to N-1 only, fills it
with the rows every earlier step's `populate` writes (representative rows of each
table that exists then), takes a snapshot of every table, applies N, and checks
that each row kept every column it had, value for value, and that N's `check`
holds (new columns' defaults on the old rows, new tables and constraints working).

Data-driven: a new migration adds one `Step` to `STEPS`, with a `populate` for
the tables or columns it creates (so the migrations after it run on them), a
`check` of what it promises, and `rewrites` naming any table whose old rows it
changes on purpose. `test_every_migration_has_a_step` fails until it has one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import asyncpg
import orjson
import pytest

from shared.db.messages import MessageRow, insert_messages
from shared.db.migrate import apply_migrations, load_migrations

if TYPE_CHECKING:
    Conn: TypeAlias = asyncpg.Connection[asyncpg.Record]
_AT = dt.datetime(2025, 7, 19, 10, 30, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Step:
    version: str
    # Rows for what this migration creates; runs on a database at this version.
    populate: Callable[[Conn], Awaitable[None]]
    # What this migration promises; runs right after it was applied to a populated database.
    check: Callable[[Conn], Awaitable[None]]
    # Tables whose existing rows this migration changes on purpose (a backfill): their
    # rows are left to `check` instead of being compared column for column.
    rewrites: tuple[str, ...] = ()


async def _nothing(_conn: Conn) -> None:
    return None


# --- 001_initial ----------------------------------------------------------------------


async def _populate_001(conn: Conn) -> None:
    await conn.execute(
        """
        INSERT INTO users (id, name, username, email, password, avatar_url, role)
        VALUES (1, 'Alice', 'alice', 'alice@example.com', 'argon2id-hash', NULL, 'admin'),
               (2, 'Bob', 'Bob', 'BOB@example.com', 'bcrypt-hash', 'https://a.test/b.png', 'user');
        INSERT INTO channels (id, name, description, image_url, created_by)
        VALUES (1, 'general', '', NULL, 1), (2, 'Ünïcode ✓', 'desc', 'https://a.test/c.png', NULL);
        INSERT INTO memberships (channel_id, user_id, role)
        VALUES (1, 1, 'owner'), (1, 2, 'member'), (2, 2, 'moderator');
        """
    )
    bodies = [
        {"type": "text", "content": "Hello world"},
        {"type": "text", "content": 'Привет ✓ \\ " <b>'},
        {
            "type": "file",
            "file_id": "f1",
            "filename": "a.pdf",
            "mime_type": "application/pdf",
            "url": "https://a.test/a.pdf",
            "size_in_bytes": 10,
        },
    ]
    await conn.executemany(
        "INSERT INTO messages (id, channel_id, seq, user_id, body, client_id, created_at)"
        " VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)",
        [
            (100 + n, 1, n, 1 + n % 2, orjson.dumps(body).decode(), f"c-{n}" if n else None, _AT)
            for n, body in enumerate(bodies, start=1)
        ],
    )


async def _check_001(conn: Conn) -> None:
    await conn.execute(
        "INSERT INTO users (id, name, username, email, password) VALUES (3, 'C', 'c', 'c@x', 'h')"
    )
    assert await conn.fetchval("SELECT role FROM users WHERE id = 3") == "user"
    with pytest.raises(asyncpg.UniqueViolationError, match="users_username_key"):
        await conn.execute(
            "INSERT INTO users (id, name, username, email, password)"
            " VALUES (4, 'D', 'C', 'd@x', 'h')"
        )


# --- 002_token_revocation -------------------------------------------------------------


async def _populate_002(conn: Conn) -> None:
    await conn.execute("UPDATE users SET token_generation = 3 WHERE id = 2")


async def _check_002(conn: Conn) -> None:
    generations = await conn.fetch("SELECT token_generation FROM users ORDER BY id")
    assert [row[0] for row in generations] == [0, 0]


# --- 003_go_import --------------------------------------------------------------------


async def _populate_003(conn: Conn) -> None:
    await conn.execute(
        """
        INSERT INTO go_import (fingerprint, source, schema_version, started_at, frontier,
                               phase, position, messages_done, finished_at)
        VALUES ('fp', 'go-host:5432/go', 2, now(), '{"users": 2}', 'done', '{}', 3, now());
        INSERT INTO go_import_users (go_id, user_id) VALUES (7, 1), (8, 2);
        INSERT INTO go_import_channels (go_id, channel_id, message_count) VALUES (9, 1, 3);
        INSERT INTO go_import_memberships (go_id, channel_id, user_id) VALUES (11, 1, 2);
        INSERT INTO go_import_message_batches (go_ids, message_ids)
        VALUES ('{21,22}', '{101,102}');
        INSERT INTO go_import_changes (go_table, go_id, kind, detail)
        VALUES ('users', 8, 'username', 'renamed');
        INSERT INTO go_import_runs (started_at, finished_at, outcome, report)
        VALUES (now(), now(), 'done', 'report text');
        """
    )


async def _check_003(conn: Conn) -> None:
    assert await conn.fetchval("SELECT count(*) FROM go_import") == 0
    await conn.execute(
        "INSERT INTO go_import_message_batches (go_ids, message_ids) VALUES ('{1}', '{101}')"
    )
    rows = await conn.fetch("SELECT go_id, message_id FROM go_import_messages")
    assert [tuple(row) for row in rows] == [(1, 101)]


# --- 004_read_markers -----------------------------------------------------------------


async def _populate_004(conn: Conn) -> None:
    await conn.execute(
        "UPDATE memberships SET last_read_seq = 2, read_at = $1"
        " WHERE channel_id = 1 AND user_id = 2",
        _AT,
    )


async def _check_004(conn: Conn) -> None:
    markers = await conn.fetch(
        "SELECT last_read_seq, read_at FROM memberships ORDER BY channel_id, user_id"
    )
    assert [tuple(row) for row in markers] == [(0, None), (0, None), (0, None)]
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute("UPDATE memberships SET last_read_seq = -1")


# --- 005_governance -------------------------------------------------------------------


async def _populate_005(conn: Conn) -> None:
    await conn.execute(
        """
        INSERT INTO channels (id, name, description, kind) VALUES
            (3, 'secret', '', 'private'), (4, '', '', 'dm');
        INSERT INTO memberships (channel_id, user_id, role) VALUES
            (3, 1, 'owner'), (4, 1, 'member'), (4, 2, 'member');
        INSERT INTO direct_channels (user_low, user_high, channel_id) VALUES (1, 2, 4);
        INSERT INTO channel_bans (channel_id, user_id, banned_by, until) VALUES (1, 2, 1, NULL);
        INSERT INTO channel_mutes (channel_id, user_id, muted_by, until)
        VALUES (2, 1, 2, now() + interval '1 hour');
        INSERT INTO channel_invitations (channel_id, user_id, invited_by) VALUES (3, 2, 1);
        """
    )


async def _check_005(conn: Conn) -> None:
    kinds = await conn.fetch("SELECT kind FROM channels")
    assert {row[0] for row in kinds} == {"public"}  # what existed stays public
    # One owner per channel; names unique (in any case) except for direct messages.
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(
            "UPDATE memberships SET role = 'owner' WHERE channel_id = 1 AND user_id = 2"
        )
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute("INSERT INTO channels (id, name) VALUES (90, 'GENERAL')")
    await conn.execute("INSERT INTO channels (id, name, kind) VALUES (91, 'general', 'dm')")
    with pytest.raises(asyncpg.CheckViolationError):  # no direct message with oneself
        await conn.execute(
            "INSERT INTO direct_channels (user_low, user_high, channel_id) VALUES (1, 1, 1)"
        )


# --- 006_search -----------------------------------------------------------------------


async def _check_006(conn: Conn) -> None:
    found = await conn.fetch(
        "SELECT id FROM messages"
        " WHERE search_vector @@ websearch_to_tsquery('simple', lower('ПРИВЕТ' COLLATE pg_c_utf8))"
    )
    assert [row[0] for row in found] == [102]
    vectors = await conn.fetch("SELECT search_vector IS NULL FROM messages ORDER BY id")
    assert [row[0] for row in vectors] == [False, False, True]  # the file has no text
    assert await conn.fetchval("SELECT to_regclass('messages_search_idx')") is not None


# --- 007_message_changes --------------------------------------------------------------


async def _populate_007(conn: Conn) -> None:
    await conn.execute(
        """
        INSERT INTO messages (id, channel_id, seq, user_id, body, created_at, kind, target_id)
        VALUES (200, 1, 10, 2, '{"body": {"type": "text", "content": "Hello, world"}}', $1,
                'message_edited', 100),
               (201, 1, 11, 2, '{"op": "add", "emoji": "👍", "count": 1}', $1, 'reaction', 100),
               (202, 1, 12, 1, '{"type": "text", "content": "re"}', $1, 'message', 100);
        INSERT INTO message_reactions (message_id, channel_id, user_id, emoji, seq, present)
        VALUES (100, 1, 2, '👍', 11, true);
        """,
        _AT,
    )


async def _check_007(conn: Conn) -> None:
    old = await conn.fetch(
        "SELECT kind, target_id, edited_at, deleted_at, original_body FROM messages"
    )
    assert {tuple(row) for row in old} == {("message", None, None, None, None)}
    # An old message takes events like a new one: an edit, applied by the worker's write.
    async with conn.transaction():
        await insert_messages(
            conn,
            [
                MessageRow(
                    300,
                    1,
                    50,
                    1,
                    '{"body": {"type": "text", "content": "edited"}}',
                    None,
                    1_750_000_000_000,
                    kind="message_edited",
                    target_id=101,
                ),
            ],
        )
    edited = await conn.fetchrow("SELECT body, original_body FROM messages WHERE id = 101")
    assert orjson.loads(edited["body"])["content"] == "edited"
    assert orjson.loads(edited["original_body"])["content"] == "Hello world"
    with pytest.raises(asyncpg.CheckViolationError):  # an event names what it changes
        await conn.execute(
            "INSERT INTO messages (id, channel_id, seq, user_id, body, created_at, kind)"
            " VALUES (301, 1, 51, 1, '{}', now(), 'message_deleted')"
        )
    assert await conn.fetchval("SELECT count(*) FROM message_reactions") == 0


STEPS = [
    Step("001_initial", _populate_001, _check_001),
    Step("002_token_revocation", _populate_002, _check_002),
    Step("003_go_import", _populate_003, _check_003),
    Step("004_read_markers", _populate_004, _check_004),
    Step("005_governance", _populate_005, _check_005),
    Step("006_search", _nothing, _check_006),
    Step("007_message_changes", _populate_007, _check_007),
]
_VERSIONS = [migration.version for migration in load_migrations()]


def test_every_migration_has_a_step() -> None:
    assert [step.version for step in STEPS] == _VERSIONS


@pytest.mark.parametrize("index", range(len(STEPS)), ids=[step.version for step in STEPS])
async def test_a_migration_keeps_the_rows_of_the_version_before_it(
    empty_database_dsn: str, index: int
) -> None:
    step = STEPS[index]
    conn = await asyncpg.connect(empty_database_dsn)
    try:
        if index > 0:
            await apply_migrations(empty_database_dsn, target=_VERSIONS[index - 1])
        for earlier in STEPS[:index]:
            await earlier.populate(conn)
        before = await _snapshot(conn)

        assert await apply_migrations(empty_database_dsn, target=step.version) == [step.version]

        after = await _snapshot(conn)
        for table, rows in before.items():
            if (
                rows and table not in step.rewrites
            ):  # every row, with every column it had (new columns aside), unchanged
                columns = rows[0].keys()
                kept = [{column: row[column] for column in columns} for row in after[table]]
                assert _canonical(kept) == _canonical(rows), table
        await step.check(conn)
    finally:
        await conn.close()


def _canonical(rows: list[dict[str, object]]) -> list[bytes]:
    return sorted(orjson.dumps(row, option=orjson.OPT_SORT_KEYS) for row in rows)


async def _snapshot(conn: Conn) -> dict[str, list[dict[str, object]]]:
    """Every row of every table of the public schema, as JSON objects (the ledger aside)."""
    tables = await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        " AND tablename <> 'schema_migrations'"
    )
    snapshot: dict[str, list[dict[str, object]]] = {}
    for (table,) in tables:
        # The name comes from the catalog, not from input; quote_ident keeps it whole.
        name = await conn.fetchval("SELECT quote_ident($1)", table)
        rows = await conn.fetch(f"SELECT to_jsonb(t)::text FROM {name} t")  # noqa: S608
        snapshot[table] = [orjson.loads(row[0]) for row in rows]
    return snapshot
