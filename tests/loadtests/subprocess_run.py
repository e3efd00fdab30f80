"""Runs a benchmark module as the README says to, bounded in time, for the smoke tests."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any


async def run_json(module: str, *args: str, within: float) -> dict[str, Any]:
    """`python -m <module> <args>`: its stdout parsed as JSON; fails on a non-zero exit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(within):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()[-3000:]
    result: dict[str, Any] = json.loads(stdout)
    return result
