"""Migration 007 (edits, deletes, reactions, replies) on a populated database of
the versions before it."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import orjson

from shared.db.message_changes import reaction_counts
from shared.db.messages import MessageRow, insert_messages, list_messages_before
from shared.db.migrate import apply_migrations
from tests.test_migrate import empty_database_dsn

__all__ = ["empty_database_dsn"]  # the fixture, shared with the other migration tests

_MIGRATIONS = Path(__file__).resolve().parents[1] / "shared" / "db" / "migrations"
_VERSION = "007_message_changes"


async def _apply_before(dsn: str, version: str) -> None:
    """Apply, as `apply_migrations` does, every migration older than `version`."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE schema_migrations (version TEXT PRIMARY KEY,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for path in sorted(_MIGRATIONS.glob("*.sql")):
            if path.stem < version:
                async with conn.transaction():
                    await conn.execute(path.read_text(encoding="utf-8"))
                    await conn.execute("INSERT INTO schema_migrations VALUES ($1)", path.stem)
    finally:
        await conn.close()


async def _populate(conn: asyncpg.Connection[asyncpg.Record]) -> tuple[int, int]:
    user_id = await conn.fetchval(
        "INSERT INTO users (name, username, email, password) VALUES ('Old', 'old', 'o@x.io', 'x')"
        " RETURNING id"
    )
    channel_id = await conn.fetchval("INSERT INTO channels (name) VALUES ('old') RETURNING id")
    await conn.execute(
        "INSERT INTO memberships (channel_id, user_id, role) VALUES ($1, $2, 'owner')",
        channel_id,
        user_id,
    )
    await conn.execute(
        """INSERT INTO messages (id, channel_id, seq, user_id, body, created_at)
           SELECT 1000 + s, $1, s, $2, jsonb_build_object('type', 'text', 'content', 'm' || s),
                  now()
           FROM generate_series(1, 50) AS s""",
        channel_id,
        user_id,
    )
    return user_id, channel_id


async def test_007_keeps_every_stored_message_and_takes_events(empty_database_dsn: str) -> None:
    await _apply_before(empty_database_dsn, _VERSION)
    conn = await asyncpg.connect(empty_database_dsn)
    try:
        user_id, channel_id = await _populate(conn)

        assert _VERSION in await apply_migrations(empty_database_dsn)

        old = await conn.fetch("SELECT kind, target_id, edited_at, deleted_at FROM messages")
        assert len(old) == 50
        assert {tuple(row) for row in old} == {("message", None, None, None)}
        newest = await list_messages_before(conn, channel_id, None, 1)
        assert (newest[0].seq, newest[0].body["content"]) == (50, "m50")
        # An old message can be edited and reacted to like a new one.
        async with conn.transaction():
            await insert_messages(
                conn,
                [
                    MessageRow(
                        2001,
                        channel_id,
                        51,
                        user_id,
                        '{"body":{"type":"text","content":"new"}}',
                        None,
                        1_750_000_000_000,
                        kind="message_edited",
                        target_id=1001,
                    ),
                    MessageRow(
                        2002,
                        channel_id,
                        52,
                        user_id,
                        '{"op":"add","emoji":"👍","count":1}',
                        None,
                        1_750_000_000_001,
                        kind="reaction",
                        target_id=1001,
                    ),
                ],
            )
        edited = await conn.fetchrow("SELECT body, original_body FROM messages WHERE id = 1001")
        assert orjson.loads(edited["body"])["content"] == "new"
        assert orjson.loads(edited["original_body"])["content"] == "m1"
        assert (await reaction_counts(conn, [1001], user_id))[1001][0].count == 1
    finally:
        await conn.close()
