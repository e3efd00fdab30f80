"""Schema migrations, the `migrate` command, and the database pool built on the schema."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from shared.db.migrate import apply_migrations
from shared.db.pool import ping
from shared.local_servers import ServerProcess, ensure_database

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ALL_VERSIONS = sorted(
    path.stem for path in (PROJECT_ROOT / "shared" / "db" / "migrations").glob("*.sql")
)
SUBPROCESS_TIMEOUT_SECONDS = 30.0
JWT_SECRET = "migrate-test-secret-0123456789abcdef"


@pytest.fixture
async def empty_database_dsn(
    postgres_server: ServerProcess, postgres_admin_dsn: str
) -> AsyncIterator[str]:
    """A brand-new database with no schema, dropped after the test."""
    name = "migrate_" + uuid.uuid4().hex[:10]
    await ensure_database(postgres_admin_dsn, name)
    yield f"postgresql://postgres@127.0.0.1:{postgres_server.port}/{name}?sslmode=disable"
    conn = await asyncpg.connect(postgres_admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await conn.close()


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
