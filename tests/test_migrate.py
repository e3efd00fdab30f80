"""Schema migrations, the `migrate` command, and the database pool built on the schema."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg
import pytest

from shared.db.migrate import MigrationRefusedError, apply_migrations, load_migrations
from shared.db.pool import ping

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ALL_VERSIONS = sorted(
    path.stem for path in (PROJECT_ROOT / "shared" / "db" / "migrations").glob("*.sql")
)
SUBPROCESS_TIMEOUT_SECONDS = 30.0
JWT_SECRET = "migrate-test-secret-0123456789abcdef"


async def test_first_run_applies_every_migration_in_order(empty_database_dsn: str) -> None:
    applied = await apply_migrations(empty_database_dsn)

    assert applied == ALL_VERSIONS
    assert await _ledger(empty_database_dsn) == ALL_VERSIONS


async def test_first_run_creates_the_tables(empty_database_dsn: str) -> None:
    await apply_migrations(empty_database_dsn)

    conn = await asyncpg.connect(empty_database_dsn)
    try:
        tables = await conn.fetchval(
            "SELECT array_agg(t ORDER BY t) FROM unnest($1::text[]) AS t"
            " WHERE to_regclass(t) IS NOT NULL",
            ["channels", "memberships", "messages", "users"],
        )
    finally:
        await conn.close()
    assert tables == ["channels", "memberships", "messages", "users"]


async def test_second_run_applies_nothing(empty_database_dsn: str) -> None:
    await apply_migrations(empty_database_dsn)

    assert await apply_migrations(empty_database_dsn) == []
    assert await _ledger(empty_database_dsn) == ALL_VERSIONS


async def test_concurrent_runs_apply_each_migration_once(empty_database_dsn: str) -> None:
    runs = await asyncio.gather(*(apply_migrations(empty_database_dsn) for _ in range(3)))

    assert sorted(runs) == [[], [], ALL_VERSIONS]
    assert await _ledger(empty_database_dsn) == ALL_VERSIONS


async def test_migrate_command_applies_then_reports_up_to_date(empty_database_dsn: str) -> None:
    env = {"DATABASE_URL": empty_database_dsn, "JWT_SECRET": JWT_SECRET}

    first = await _run_python(["-m", "shared.cli", "migrate"], env)
    second = await _run_python(["-m", "shared.cli", "migrate"], env)

    assert first == (0, f"applied migrations: {', '.join(ALL_VERSIONS)}\n", "")
    assert second == (0, "database schema is up to date; nothing to apply\n", "")


async def test_missing_jwt_secret_exits_2_with_one_line_naming_it() -> None:
    code, out, err = await _run_python(
        ["-c", "from shared.settings import load_settings; load_settings(require_jwt_secret=True)"],
        {},
    )

    assert (code, out) == (2, "")
    assert err.splitlines() == ["configuration error: JWT_SECRET: required"]


async def test_invalid_setting_exits_2_with_one_line_naming_it() -> None:
    code, out, err = await _run_python(
        ["-c", "from shared.settings import load_settings; load_settings()"],
        {"PORT": "not-a-port"},
    )

    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1
    assert err.startswith("configuration error: PORT: ")


async def test_production_refuses_a_weak_jwt_secret() -> None:
    code, _, err = await _run_python(
        ["-c", "from shared.settings import load_settings; load_settings()"],
        {"ENVIRONMENT": "production", "JWT_SECRET": "short"},
    )

    assert code == 2
    assert "JWT_SECRET must be at least 32 characters" in err


async def test_pool_round_trips_jsonb_as_python_objects(
    pg_pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    body = {"type": "text", "content": "héllo", "nested": [1, None, True]}

    assert await pg_pool.fetchval("SELECT $1::jsonb", body) == body
    assert await pg_pool.fetchval("SELECT $1::json", body) == body


async def test_ping_answers_on_a_live_pool(pg_pool: asyncpg.Pool[asyncpg.Record]) -> None:
    await ping(pg_pool)


async def _ledger(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    return [row["version"] for row in rows]


async def _run_python(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run the project's Python with only `env` (plus PYTHONPATH): no inherited settings."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        env={"PYTHONPATH": str(PROJECT_ROOT), **env},
        cwd=PROJECT_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(SUBPROCESS_TIMEOUT_SECONDS):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_a_target_applies_up_to_it_and_the_rest_later(empty_database_dsn: str) -> None:
    assert await apply_migrations(empty_database_dsn, target=ALL_VERSIONS[1]) == ALL_VERSIONS[:2]

    assert await apply_migrations(empty_database_dsn) == ALL_VERSIONS[2:]


async def test_an_unknown_target_is_refused(empty_database_dsn: str) -> None:
    with pytest.raises(MigrationRefusedError, match="no such migration file"):
        await apply_migrations(empty_database_dsn, target="999_nonexistent")

    untouched = await _fetch_column(empty_database_dsn, "SELECT to_regclass('schema_migrations')")
    assert untouched == [None]


async def test_going_back_to_an_older_target_is_refused(empty_database_dsn: str) -> None:
    await apply_migrations(empty_database_dsn)

    with pytest.raises(MigrationRefusedError, match="forward only"):
        await apply_migrations(empty_database_dsn, target=ALL_VERSIONS[0])

    assert await _ledger(empty_database_dsn) == ALL_VERSIONS


async def test_an_applied_migration_whose_file_changed_is_refused(
    empty_database_dsn: str,
) -> None:
    await apply_migrations(empty_database_dsn)
    # What the ledger holds for a file edited after it was applied: another checksum.
    await _execute(
        empty_database_dsn,
        "UPDATE schema_migrations SET checksum = repeat('0', 64) WHERE version = $1",
        ALL_VERSIONS[0],
    )

    with pytest.raises(MigrationRefusedError, match="changed since it was applied") as refused:
        await apply_migrations(empty_database_dsn)
    assert refused.value.version == ALL_VERSIONS[0]


async def test_a_pending_migration_older_than_an_applied_one_is_refused(
    empty_database_dsn: str,
) -> None:
    """Two branches numbered out of order: applying the older number after the newer
    one would run them in an order no other database saw."""
    await apply_migrations(empty_database_dsn)
    await _execute(
        empty_database_dsn, "DELETE FROM schema_migrations WHERE version = $1", ALL_VERSIONS[1]
    )

    with pytest.raises(MigrationRefusedError, match="renumber it"):
        await apply_migrations(empty_database_dsn)

    assert ALL_VERSIONS[1] not in await _ledger(empty_database_dsn)


async def test_versions_of_a_newer_release_are_left_alone(empty_database_dsn: str) -> None:
    """An older replica restarting during a rolling deploy still starts."""
    await apply_migrations(empty_database_dsn)
    await _execute(
        empty_database_dsn, "INSERT INTO schema_migrations (version) VALUES ('999_newer')"
    )

    assert await apply_migrations(empty_database_dsn) == []


async def test_a_ledger_from_before_checksums_gets_them_filled_in(
    empty_database_dsn: str,
) -> None:
    await apply_migrations(empty_database_dsn)
    await _execute(empty_database_dsn, "UPDATE schema_migrations SET checksum = NULL")

    assert await apply_migrations(empty_database_dsn) == []

    checksums = await _fetch_column(
        empty_database_dsn, "SELECT checksum FROM schema_migrations ORDER BY version"
    )
    assert checksums == [migration.checksum for migration in load_migrations()]


async def _execute(dsn: str, sql: str, *args: object) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def _fetch_column(dsn: str, sql: str) -> list[object]:
    conn = await asyncpg.connect(dsn)
    try:
        return [row[0] for row in await conn.fetch(sql)]
    finally:
        await conn.close()
