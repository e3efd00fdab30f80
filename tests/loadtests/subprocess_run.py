"""Runs a benchmark module as the README says to, bounded in time, for the smoke tests."""

from __future__ import annotations

import sys
from typing import Any

import orjson

from tests.processes import run_with_deadline


async def run_json(module: str, *args: str, within: float) -> dict[str, Any]:
    """`python -m <module> <args>`: its stdout parsed as JSON; fails on a non-zero exit."""
    finished = await run_with_deadline(sys.executable, "-m", module, *args, deadline=within)
    assert finished.returncode == 0, finished.stderr.decode()[-3000:]
    result: dict[str, Any] = orjson.loads(finished.stdout)
    return result
