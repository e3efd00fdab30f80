"""An import stopped halfway, by SIGKILL or by SIGTERM, completes on the next run
with every message once and seqs without a gap."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from loadtests.go_database import build
from shared.settings import Settings
from tests.gateway.api_client import eventually
from tests.go_import.conftest import GoDatabase, ImportGo

ROOT = Path(__file__).resolve().parents[2]
# Many batches: after its first one the import has plenty to go, which the test's
# reaction to the first progress line beats.
MESSAGES = 10_000
BATCH = 100
_PROGRESS = re.compile(r"^messages: ([\d,]+)/")
_EXIT_TIMEOUT_SECONDS = 30.0


@pytest.fixture
async def generated_source(go_database: GoDatabase) -> str:
    dsn = await go_database()
    await build(dsn, version=2, users=30, channels=6, messages=MESSAGES)
    return dsn


@pytest.fixture
async def start_import(
    make_settings: Any,
) -> AsyncIterator[Any]:
    """Start `chat-group import-go` as its own process; killed at the end if still running."""
    processes: list[asyncio.subprocess.Process] = []

    async def start(source: str) -> asyncio.subprocess.Process:
        settings: Settings = make_settings()
        env = {
            **os.environ,
            "DATABASE_URL": settings.postgres_dsn(),
            "REDIS_URL": settings.redis_url.get_secret_value(),
            "REDIS_KEY_PREFIX": settings.redis_key_prefix,
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "shared.cli", "import-go", "--source", source, "--batch-size", str(BATCH)),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _first_progress(process: asyncio.subprocess.Process) -> int:
    """Messages committed when the import printed its first progress line."""
    assert process.stderr is not None
    async with asyncio.timeout(_EXIT_TIMEOUT_SECONDS):
        while line := (await process.stderr.readline()).decode():
            if match := _PROGRESS.match(line):
                return int(match.group(1).replace(",", ""))
    raise AssertionError("the import ended without a progress line")


async def _assert_complete(pool: asyncpg.Pool[asyncpg.Record]) -> None:
    assert await pool.fetchval("SELECT count(*) FROM messages") == MESSAGES
    assert await pool.fetchval("SELECT count(DISTINCT go_id) FROM go_import_messages") == MESSAGES
    gaps = await pool.fetchval(
        """SELECT count(*) FROM (SELECT channel_id, max(seq) AS top, count(*) AS n
                                 FROM messages GROUP BY channel_id) c WHERE top <> n"""
    )
    assert gaps == 0
    assert await pool.fetchval("SELECT phase FROM go_import") == "done"


async def test_a_killed_import_completes_on_the_next_run(
    generated_source: str,
    start_import: Any,
    import_go: ImportGo,
    pg_pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    process = await start_import(generated_source)
    assert await _first_progress(process) > 0
    # Hold the import's state row: its next batch waits on the lock before it commits.
    async with pg_pool.acquire() as blocker, blocker.transaction():
        await blocker.execute("LOCK TABLE go_import IN EXCLUSIVE MODE")

        async def importer_waits() -> bool:
            if process.returncode is not None:
                assert process.stderr is not None
                rest = (await process.stderr.read()).decode()
                pytest.fail(f"the import ended ({process.returncode}) before the lock: {rest}")
            # From another connection: a transaction sees pg_stat_activity as it first read it.
            waiting = await pg_pool.fetchval(
                """SELECT count(*) FROM pg_stat_activity
                   WHERE wait_event_type = 'Lock'
                     AND query LIKE '%UPDATE go_import SET position%'"""
            )
            return bool(waiting)

        await eventually(importer_waits, within=_EXIT_TIMEOUT_SECONDS)
        process.kill()
        async with asyncio.timeout(_EXIT_TIMEOUT_SECONDS):
            assert await process.wait() == -signal.SIGKILL
    done = await pg_pool.fetchval("SELECT messages_done FROM go_import")
    assert 0 < done < MESSAGES
    assert await pg_pool.fetchval("SELECT count(*) FROM messages") == done
    assert await pg_pool.fetchval("SELECT count(*) FROM go_import_messages") == done

    run = await import_go(generated_source)

    assert run.code == 0, run.report
    assert re.search(
        rf"^messages +{MESSAGES:,} +{MESSAGES:,} +{MESSAGES - done:,}$", run.report, re.M
    )
    await _assert_complete(pg_pool)


async def test_sigterm_stops_after_a_batch_and_the_next_run_completes(
    generated_source: str,
    start_import: Any,
    import_go: ImportGo,
    pg_pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    process = await start_import(generated_source)
    await _first_progress(process)
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(_EXIT_TIMEOUT_SECONDS):
        stdout, _ = await process.communicate()
    report = stdout.decode()
    if process.returncode == 0:
        pytest.fail("the import finished before SIGTERM reached it; raise MESSAGES")
    assert process.returncode == 130
    assert "interrupted after" in report
    assert "run the same command again to continue" in report
    done = await pg_pool.fetchval("SELECT messages_done FROM go_import")
    assert await pg_pool.fetchval("SELECT count(*) FROM messages") == done
    stored = await pg_pool.fetchval("SELECT outcome FROM go_import_runs")
    assert stored.startswith("interrupted")

    run = await import_go(generated_source)

    assert run.code == 0, run.report
    await _assert_complete(pg_pool)
