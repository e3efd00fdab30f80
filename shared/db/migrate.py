"""Schema migrations: the SQL files in `shared/db/migrations`, applied in name order.

Each file runs in its own transaction together with its row in
`schema_migrations`, so a file is applied entirely or not at all. A
session-level advisory lock serialises concurrent runs, so replicas that
start together apply each file once.

Migrations go forward only. The ledger keeps each file's SHA-256, and a run
refuses (applying nothing) when an applied file was changed since, when a
pending file sorts before one already applied (two branches numbered out of
order), or when asked for a target older than what is applied. Versions in the
ledger that this code has no file for were applied by a newer release; they
are left alone, so an older replica still starts during a rolling deploy.
"""

from __future__ import annotations

import hashlib
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

# `checksum` came after the ledger itself: rows recorded before it are NULL
# until the next run fills them in from the files.
_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    TEXT PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum TEXT
"""


class MigrationError(Exception):
    """Migrating stopped at `version`; the files applied before it stay applied."""

    def __init__(self, version: str, message: str) -> None:
        super().__init__(message)
        self.version = version


class MigrationFailedError(MigrationError):
    """A migration file failed; it was rolled back. The cause is chained."""

    def __init__(self, version: str, cause: Exception) -> None:
        super().__init__(version, f"migration {version} failed and was rolled back: {cause}")


class MigrationRefusedError(MigrationError):
    """The files and the ledger disagree (see the module docstring); nothing was applied."""

    def __init__(self, version: str, reason: str) -> None:
        super().__init__(version, f"migration {version} refused: {reason}")


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


async def apply_migrations(dsn: str, *, target: str | None = None) -> list[str]:
    """Apply every migration not yet recorded, up to and including `target` (None: all);
    return the versions applied by this call.

    Idempotent: a second run returns `[]`. A failing file rolls back alone; the
    files before it stay applied.

    Raises:
        MigrationFailedError: a file failed (its PostgreSQL error is the cause).
        MigrationRefusedError: an applied file changed, a pending one is out of
            order, or `target` is unknown or older than what is applied.
        OSError, asyncpg.PostgresError: the database cannot be reached or locked.
    """
    migrations = load_migrations()
    if target is not None:
        versions = [migration.version for migration in migrations]
        if target not in versions:
            raise MigrationRefusedError(target, "no such migration file")
        migrations = migrations[: versions.index(target) + 1]
    conn = await asyncpg.connect(dsn, timeout=_CONNECT_TIMEOUT_SECONDS)
    try:
        await conn.execute(
            "SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY, timeout=_LOCK_TIMEOUT_SECONDS
        )
        try:
            return await _apply_pending(conn, migrations, target)
        finally:
            # Closing the session would also release the lock; unlocking
            # explicitly keeps that from depending on how the close goes.
            if not conn.is_closed():
                await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_KEY)
    finally:
        await conn.close()


def load_migrations() -> list[Migration]:
    """Every migration file, in the order they apply."""
    # importlib.resources works from a source tree and an installed wheel alike.
    folder = files("shared.db").joinpath("migrations")
    entries = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    return [
        Migration(entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8"))
        for entry in entries
    ]


async def _apply_pending(
    conn: asyncpg.Connection[asyncpg.Record], migrations: list[Migration], target: str | None
) -> list[str]:
    """Run the migrations missing from the ledger; the caller holds the lock."""
    await conn.execute(_CREATE_LEDGER)
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    recorded: dict[str, str | None] = {row["version"]: row["checksum"] for row in rows}
    pending = _check_ledger(migrations, recorded, target)
    for migration in migrations:
        if migration.version in recorded and recorded[migration.version] is None:
            await conn.execute(
                "UPDATE schema_migrations SET checksum = $2 WHERE version = $1",
                migration.version,
                migration.checksum,
            )
    applied: list[str] = []
    for migration in pending:
        try:
            async with conn.transaction():
                # No arguments: asyncpg uses the simple protocol, which runs a
                # multi-statement file in one call.
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                    migration.version,
                    migration.checksum,
                )
        except asyncpg.PostgresError as exc:
            raise MigrationFailedError(migration.version, exc) from exc
        applied.append(migration.version)
    return applied


def _check_ledger(
    migrations: list[Migration], recorded: dict[str, str | None], target: str | None
) -> list[Migration]:
    """The migrations to apply, in order; MigrationRefusedError if going forward is not safe."""
    newest = max(recorded, default="")
    if target is not None and target < newest:
        raise MigrationRefusedError(target, f"the database is already at {newest}; forward only")
    pending: list[Migration] = []
    for migration in migrations:
        if migration.version not in recorded:
            if migration.version < newest:
                raise MigrationRefusedError(
                    migration.version, f"not applied, but {newest} already is; renumber it"
                )
            pending.append(migration)
        elif recorded[migration.version] not in (None, migration.checksum):
            raise MigrationRefusedError(migration.version, "the file changed since it was applied")
    return pending
