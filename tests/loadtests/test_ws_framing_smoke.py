"""A second-long run of the WebSocket framing microbenchmark, so it cannot rot."""

from __future__ import annotations

import asyncio
import sys

_RUN_LIMIT_SECONDS = 30.0


async def test_framing_benchmark_reports_every_measure_for_ours() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtests.ws_framing",
        "--frames=200",
        "--rounds=1",
        "--sockets=5",
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
    lines = stdout.decode().splitlines()
    assert sum(line.split()[:1] == ["ours"] for line in lines) == 4, lines
