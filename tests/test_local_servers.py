"""Starting, stopping and crashing the local PostgreSQL and Valkey servers."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import asyncpg
import pytest

from shared.local_servers import (
    ServerProcess,
    ServerStartError,
    ensure_database,
    ensure_port_free,
    free_port,
    start_postgres,
    start_valkey,
)


def test_free_port_can_be_bound_by_a_server() -> None:
    port = free_port()

    ensure_port_free("test", port)


def test_valkey_stops_cleanly_and_frees_its_port(tmp_path: Path) -> None:
    server = start_valkey(tmp_path, free_port())

    assert server.stop() == 0
    ensure_port_free("valkey", server.port)


def test_start_refuses_a_port_another_server_listens_on(
    tmp_path: Path, redis_server: ServerProcess
) -> None:
    with pytest.raises(ServerStartError, match="already in use"):
        start_valkey(tmp_path, redis_server.port)


def test_stop_reaches_a_server_paused_with_sigstop(tmp_path: Path) -> None:
    server = start_valkey(tmp_path, free_port(), appendonly=False)
    os.kill(server.pid, signal.SIGSTOP)

    assert server.stop(timeout=5) == 0


def test_kill_ends_the_server_with_sigkill(tmp_path: Path) -> None:
    server = start_valkey(tmp_path, free_port(), appendonly=False)

    assert server.kill() == -signal.SIGKILL
    assert server.stop() == -signal.SIGKILL


def test_postgres_stops_cleanly_and_frees_its_port(servers_dir: Path) -> None:
    server = start_postgres(servers_dir / "stop-test", free_port(), fast=True)

    assert server.stop() == 0
    ensure_port_free("postgres", server.port)


async def test_postgres_recovers_committed_data_after_sigkill(servers_dir: Path) -> None:
    """A killed postmaster leaves a stale postmaster.pid; the next start must cope."""
    data_dir = servers_dir / "crash-test"
    # fsync on: the test is about what survives a crash.
    server = await asyncio.to_thread(start_postgres, data_dir, free_port())
    await _execute(_maintenance_dsn(server), "CREATE TABLE survivor (id int)")
    server.kill()

    restarted = await asyncio.to_thread(start_postgres, data_dir, free_port())
    try:
        conn = await asyncpg.connect(_maintenance_dsn(restarted))
        try:
            assert await conn.fetchval("SELECT to_regclass('survivor') IS NOT NULL")
        finally:
            await conn.close()
    finally:
        assert await asyncio.to_thread(restarted.stop) == 0


async def test_ensure_database_is_idempotent_and_quotes_the_name(
    postgres_admin_dsn: str,
) -> None:
    name = f'odd "name" {uuid.uuid4().hex[:8]}'

    await ensure_database(postgres_admin_dsn, name)
    await ensure_database(postgres_admin_dsn, name)

    try:
        assert await _database_count(postgres_admin_dsn, name) == 1
    finally:
        await _drop_database(postgres_admin_dsn, name)


async def test_ensure_database_tolerates_a_concurrent_create(postgres_admin_dsn: str) -> None:
    name = "race_" + uuid.uuid4().hex[:8]

    await asyncio.gather(*(ensure_database(postgres_admin_dsn, name) for _ in range(4)))

    try:
        assert await _database_count(postgres_admin_dsn, name) == 1
    finally:
        await _drop_database(postgres_admin_dsn, name)


def _maintenance_dsn(server: ServerProcess) -> str:
    return f"postgresql://postgres@127.0.0.1:{server.port}/postgres?sslmode=disable"


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _database_count(admin_dsn: str, name: str) -> int:
    conn = await asyncpg.connect(admin_dsn)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname = $1", name
        )
        return count
    finally:
        await conn.close()


async def _drop_database(admin_dsn: str, name: str) -> None:
    quoted = '"' + name.replace('"', '""') + '"'
    await _execute(admin_dsn, f"DROP DATABASE {quoted} WITH (FORCE)")
