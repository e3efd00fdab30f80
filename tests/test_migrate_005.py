"""Migration 005 (governance) on a populated database at 004: every row is kept, every
channel stays public, and the new rules hold on the old data.

A file of its own: the general harness (migrating a populated database of each
previous version) is being built in tests/test_migrate.py on another branch.
"""

from __future__ import annotations

import asyncpg
import pytest

from shared.db import migrate
from tests.test_migrate import empty_database_dsn

__all__ = ["empty_database_dsn"]  # the fixture, imported for this module's tests


async def _migrate_up_to(dsn: str, last: str) -> None:
    """Apply the migrations up to and including `last` only."""
    conn = await asyncpg.connect(dsn)
    try:
        wanted = [m for m in migrate._load_migrations() if m.version <= last]
        await migrate._apply_pending(conn, wanted)
    finally:
        await conn.close()


async def _populate(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """INSERT INTO users (name, username, email, password, role) VALUES
               ('Alice', 'alice', 'alice@example.com', 'x', 'user'),
               ('Bob', 'bob', 'bob@example.com', 'x', 'admin');
           INSERT INTO channels (name, description, created_by) VALUES
               ('General', 'all', 1), ('dm', '', 2);
           INSERT INTO memberships (channel_id, user_id, role, last_read_seq) VALUES
               (1, 1, 'owner', 3), (1, 2, 'moderator', 1), (2, 2, 'member', 0);
           INSERT INTO messages (id, channel_id, seq, user_id, body, created_at) VALUES
               (101, 1, 1, 1, '{"type": "text", "content": "hi"}', now()),
               (102, 1, 2, 2, '{"type": "text", "content": "yo"}', now());"""
    )


_SNAPSHOT = (
    "SELECT id, name, description, created_by FROM channels ORDER BY id",
    "SELECT channel_id, user_id, role, last_read_seq FROM memberships ORDER BY 1, 2",
    "SELECT id, channel_id, seq, user_id, body FROM messages ORDER BY id",
    "SELECT id, username, role FROM users ORDER BY id",
)


async def test_005_keeps_a_populated_004_database_and_makes_every_channel_public(
    empty_database_dsn: str,
) -> None:
    await _migrate_up_to(empty_database_dsn, "004_read_markers")
    conn = await asyncpg.connect(empty_database_dsn)
    try:
        await _populate(conn)
        before = [await conn.fetch(query) for query in _SNAPSHOT]

        assert await migrate.apply_migrations(empty_database_dsn) == ["005_governance"]

        assert [await conn.fetch(query) for query in _SNAPSHOT] == before
        kinds = await conn.fetch("SELECT kind FROM channels")
        assert {row["kind"] for row in kinds} == {"public"}
        # The new rules on the old data: one owner per channel, names unique but for DMs.
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "UPDATE memberships SET role = 'owner' WHERE user_id = 2 AND channel_id = 1"
            )
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("INSERT INTO channels (name) VALUES ('GENERAL')")
        await conn.execute("INSERT INTO channels (name, kind) VALUES ('general', 'dm')")
    finally:
        await conn.close()
