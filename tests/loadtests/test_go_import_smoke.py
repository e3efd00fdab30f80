"""A few-thousand-message run of the import benchmark (loadtests/go_import.py), so it cannot rot."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
_RUN_LIMIT_SECONDS = 60.0


async def test_import_benchmark_generates_imports_and_reports_a_rate() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "loadtests.go_import", "--messages", "3000", "--users", "40"),
        *("--channels", "6", "--batch-size", "500"),
        cwd=_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(_RUN_LIMIT_SECONDS):
        stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    text = stdout.decode()
    assert re.search(r"^messages +3,000 +3,000 +3,000$", text, re.M), text
    assert re.search(r"^message copy: 3,000 messages in [\d.]+ s = [\d,]+ messages/s", text, re.M)
