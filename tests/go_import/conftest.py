"""Go server databases in the suite's PostgreSQL, and the import run against the test target."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import pytest

from shared.go_import.run import ImportOptions, run_import
from shared.local_servers import ServerProcess, ensure_database
from shared.settings import Settings
from tests.gateway.conftest import make_gateway  # noqa: F401 - the gateway tests' fixture

_IMPORT_TABLES = "go_import, go_import_message_batches, go_import_changes, go_import_runs"

GoDatabase = Callable[[], Awaitable[str]]


@dataclass
class ImportRun:
    code: int
    report: str
    progress: str


ImportGo = Callable[..., Awaitable[ImportRun]]


@pytest.fixture(autouse=True)
async def clean_import_tables(clean_database: None, database_dsn: str) -> AsyncIterator[None]:
    """The suite empties users, channels, ... (and so the mappings that reference them);
    the import's own state goes too, before and after, so no other test sees an import."""
    await _truncate_import_tables(database_dsn)
    yield
    await _truncate_import_tables(database_dsn)


async def _truncate_import_tables(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"TRUNCATE {_IMPORT_TABLES} RESTART IDENTITY")
    finally:
        await conn.close()


@pytest.fixture
async def go_database(
    postgres_server: ServerProcess, postgres_admin_dsn: str
) -> AsyncIterator[GoDatabase]:
    """Factory of empty databases standing for a Go server's; dropped after the test."""
    names: list[str] = []

    async def create() -> str:
        name = "go_" + uuid.uuid4().hex[:10]
        await ensure_database(postgres_admin_dsn, name)
        names.append(name)
        return f"postgresql://postgres@127.0.0.1:{postgres_server.port}/{name}?sslmode=disable"

    yield create
    conn = await asyncpg.connect(postgres_admin_dsn)
    try:
        for name in names:
            await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def import_go(make_settings: Callable[..., Settings]) -> ImportGo:
    """Run `chat-group import-go` in this process against the test target."""

    async def run(source: str, *, dry_run: bool = False, batch_size: int = 20_000) -> ImportRun:
        out, err = io.StringIO(), io.StringIO()
        options = ImportOptions(source, dry_run=dry_run, batch_size=batch_size)
        code = await run_import(make_settings(), options, out, err)
        return ImportRun(code, out.getvalue(), err.getvalue())

    return run
