"""Session-wide real servers and per-test isolation for the whole suite.

One PostgreSQL and one Valkey start on the first test that needs them and stop
at the end of the session; they are never restarted per test. Tests are
isolated by `TRUNCATE` before each test (PostgreSQL) and by a Redis key prefix
unique to the test (Valkey).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from shared.db.migrate import apply_migrations
from shared.db.pool import create_pool
from shared.local_servers import (
    ServerProcess,
    ensure_database,
    free_port,
    start_postgres,
    start_valkey,
)
from shared.settings import Settings

# The machines running this suite are shared and noisy (2 cores, CI alongside
# other work). Hypothesis's timing checks judge how fast inputs are generated
# and examples run, not what the code does: a cold first run in a fresh venv
# tripped `too_slow`. The properties themselves are unchanged.
hypothesis_settings.register_profile(
    "shared-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.load_profile("shared-machine")

_TEST_DATABASE = "chat_test"
# 64+ bytes: tests that forge HS512 tokens with it must not trip PyJWT's key-length warning.
_TEST_JWT_SECRET = "test-secret-" + "0123456789abcdef" * 4
_ALLOWED_ORIGIN = "http://allowed.test"
# Generous for a TRUNCATE or a pool close, yet far below the per-test timeout,
# so a test that leaks a lock fails with a clear error instead of hanging.
_DB_HOUSEKEEPING_TIMEOUT_SECONDS = 10.0

SettingsFactory = Callable[..., Settings]


def _postgres_dsn(port: int, database: str) -> str:
    # Trust auth and no TLS: the server is ours and listens on 127.0.0.1 only.
    return f"postgresql://postgres@127.0.0.1:{port}/{database}?sslmode=disable"


@pytest.fixture(scope="session")
def servers_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where the session's servers keep their data and logs."""
    if os.geteuid() != 0:
        yield tmp_path_factory.mktemp("servers")
        return
    # Under root PostgreSQL runs as `nobody`, who cannot enter pytest's 0700
    # temp root; a folder in the system temp dir is reachable.
    path = Path(tempfile.mkdtemp(prefix="chat-test-servers-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture(scope="session")
def postgres_server(servers_dir: Path) -> Iterator[ServerProcess]:
    server = start_postgres(servers_dir / "postgres", free_port(), fast=True)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(servers_dir: Path) -> Iterator[ServerProcess]:
    server = start_valkey(servers_dir / "valkey", free_port(), appendonly=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_admin_dsn(postgres_server: ServerProcess) -> str:
    """DSN of the `postgres` maintenance database, for CREATE/DROP DATABASE."""
    return _postgres_dsn(postgres_server.port, "postgres")


@pytest.fixture(scope="session")
async def database_dsn(postgres_server: ServerProcess, postgres_admin_dsn: str) -> str:
    """DSN of the migrated test database, shared by the whole session."""
    await ensure_database(postgres_admin_dsn, _TEST_DATABASE)
    dsn = _postgres_dsn(postgres_server.port, _TEST_DATABASE)
    await apply_migrations(dsn)
    return dsn


@pytest.fixture
async def empty_database_dsn(
    postgres_server: ServerProcess, postgres_admin_dsn: str
) -> AsyncIterator[str]:
    """A brand-new database with no schema, dropped after the test."""
    name = "migrate_" + uuid.uuid4().hex[:10]
    await ensure_database(postgres_admin_dsn, name)
    yield _postgres_dsn(postgres_server.port, name)
    conn = await asyncpg.connect(postgres_admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def redis_url(redis_server: ServerProcess) -> str:
    return f"redis://127.0.0.1:{redis_server.port}/0"


@pytest.fixture
def make_settings(database_dsn: str, redis_url: str) -> SettingsFactory:
    """Factory of test `Settings`; keyword overrides win over the test defaults.

    Every call within one test shares one Redis key prefix, so two gateways
    built in the same test talk through the same namespace.
    """
    prefix = "t" + uuid.uuid4().hex[:10]

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": database_dsn,
            "redis_url": redis_url,
            "jwt_secret": _TEST_JWT_SECRET,
            "redis_key_prefix": prefix,
            "rate_limit_requests": 0,
            "ws_message_rate": 0,
            "allowed_origins": [_ALLOWED_ORIGIN],
            "log_json": False,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
async def pg_pool(make_settings: SettingsFactory) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    pool = await create_pool(make_settings())
    yield pool
    async with asyncio.timeout(_DB_HOUSEKEEPING_TIMEOUT_SECONDS):
        await pool.close()


@pytest.fixture(autouse=True)
async def clean_database(database_dsn: str) -> None:
    """Empty every table before each test; ids restart at 1."""
    conn = await asyncpg.connect(database_dsn, command_timeout=_DB_HOUSEKEEPING_TIMEOUT_SECONDS)
    try:
        await conn.execute(
            "TRUNCATE users, channels, memberships, messages RESTART IDENTITY CASCADE"
        )
    finally:
        await conn.close()
