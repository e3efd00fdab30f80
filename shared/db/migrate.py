"""Schema migrations: the SQL files in `shared/db/migrations`, applied in name order.

Each file runs in its own transaction together with its row in
`schema_migrations`, so a file is applied entirely or not at all. A
session-level advisory lock serialises concurrent runs, so replicas that
start together apply each file once.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

import asyncpg

# Arbitrary but fixed: every replica of every version must take the same lock.
# (The bytes of "chatmigr" read as a big-endian integer.)
_MIGRATION_LOCK_KEY = 0x636861746D696772
_CONNECT_TIMEOUT_SECONDS = 10.0
# A peer holding the lock is running migrations; waiting longer than this
# means it is stuck, and failing start-up is better than hanging.
_LOCK_TIMEOUT_SECONDS = 300.0

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    TEXT PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    """A migration file failed; it was rolled back. The cause is chained."""

    def __init__(self, version: str, cause: Exception) -> None:
        super().__init__(f"migration {version} failed and was rolled back: {cause}")
        self.version = version


@dataclass(frozen=True, slots=True)
class _Migration:
    version: str
    sql: str


async def apply_migrations(dsn: str) -> list[str]:
    """Apply every migration not yet recorded; return the versions applied by this call.

    Idempotent: a second run returns `[]`. A failing file rolls back alone; the
    files before it stay applied.

    Raises:
        MigrationError: a file failed (its PostgreSQL error is the cause).
        OSError, asyncpg.PostgresError: the database cannot be reached or locked.
    """
    conn = await asyncpg.connect(dsn, timeout=_CONNECT_TIMEOUT_SECONDS)
    try:
        await conn.execute(
            "SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY, timeout=_LOCK_TIMEOUT_SECONDS
        )
        try:
            return await _apply_pending(conn, _load_migrations())
        finally:
            # Closing the session would also release the lock; unlocking
            # explicitly keeps that from depending on how the close goes.
            if not conn.is_closed():
                await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_KEY)
    finally:
        await conn.close()


def _load_migrations() -> list[_Migration]:
    # importlib.resources works from a source tree and an installed wheel alike.
    folder = files("shared.db").joinpath("migrations")
    entries = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    return [
        _Migration(entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8"))
        for entry in entries
    ]


async def _apply_pending(
    conn: asyncpg.Connection[asyncpg.Record], migrations: list[_Migration]
) -> list[str]:
    """Run the migrations missing from the ledger; the caller holds the lock."""
    await conn.execute(_CREATE_LEDGER)
    rows = await conn.fetch("SELECT version FROM schema_migrations")
    done = {row["version"] for row in rows}
    applied: list[str] = []
    for migration in migrations:
        if migration.version in done:
            continue
        try:
            async with conn.transaction():
                # No arguments: asyncpg uses the simple protocol, which runs a
                # multi-statement file in one call.
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)", migration.version
                )
        except asyncpg.PostgresError as exc:
            raise MigrationError(migration.version, exc) from exc
        applied.append(migration.version)
    return applied
