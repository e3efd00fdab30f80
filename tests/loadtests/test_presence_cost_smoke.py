"""A few-seconds run of the presence cost benchmark, so it cannot rot."""

from __future__ import annotations

import asyncio
import json
import sys

_RUN_LIMIT_SECONDS = 60.0


async def test_a_short_run_reports_every_phase(database_dsn: str, redis_url: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtests.presence_cost",
        *("--channels", "3", "--members", "2", "--idle", "0.5", "--churn", "0.5"),
        *("--refresh", "0.2", "--database-url", database_dsn, "--redis-url", redis_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(_RUN_LIMIT_SECONDS):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()[-3000:]
    result = json.loads(stdout)
    assert result["users"] == 6
    assert result["connect"]["presence_keys"] >= 6  # two keys per channel at least
    assert result["connect"]["script_calls"] >= 6  # one add per user at least
    assert result["churn"]["reconnects"] > 0
    # Each channel's first member is online again once the churn ends.
    assert result["online_count_after_churn_in_first_channel"] == 2
