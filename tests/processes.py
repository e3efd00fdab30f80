"""Running a command-line program from a test: bounded in time, never left behind."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Finished:
    returncode: int
    stdout: bytes
    stderr: bytes


async def run_with_deadline(*args: str, deadline: float, **options: Any) -> Finished:
    """Run `args` to completion with stdout and stderr captured (pass `stderr=STDOUT`
    to merge them); a run past `deadline` seconds is killed and raises TimeoutError."""
    options.setdefault("stdout", asyncio.subprocess.PIPE)
    options.setdefault("stderr", asyncio.subprocess.PIPE)
    process = await asyncio.create_subprocess_exec(*args, **options)
    try:
        async with asyncio.timeout(deadline):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None  # communicate() returned: it has exited
    return Finished(process.returncode, stdout or b"", stderr or b"")
