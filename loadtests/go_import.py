"""Import benchmark: generate a Go server database, time `chat-group import-go` into ours.

    .venv/bin/python -m loadtests.go_import --messages 1000000

Starts PostgreSQL (fsync on, as `chat-group up` runs it) and Valkey (AOF) in a
temporary folder, creates the Go database next to ours in the same server
(`loadtests.go_database`), and runs the real command as a child process. The
message copy's rate is the one the command's last progress line reports
(messages written to PostgreSQL per second of the copy); the total includes
the plan and the recent-history streams.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from loadtests.go_database import build
from loadtests.stack import BenchStack
from shared.local_servers import ensure_database

_GO_DATABASE = "go_server"
_RATE = re.compile(r"^messages: ([\d,]+)/([\d,]+) \(100%\), ([\d,]+)/s, ([\d.]+) s$")
_ROOT = Path(__file__).resolve().parent.parent


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _make_go_database(dsn: str, args: argparse.Namespace) -> float:
    await ensure_database(_with_database(dsn, "postgres"), _GO_DATABASE)
    seconds = await build(
        _with_database(dsn, _GO_DATABASE),
        version=args.version,
        users=args.users,
        channels=args.channels,
        messages=args.messages,
    )
    # A real Go database was not just written on the target's server: flush the
    # generator's WAL now, so its checkpoint does not fall into the import's time.
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--channels", type=int, default=200)
    parser.add_argument("--version", type=int, choices=(1, 2), default=2)
    parser.add_argument("--batch-size", type=int, default=50_000)
    args = parser.parse_args()
    with BenchStack() as stack:
        assert stack.database_url is not None
        generated = asyncio.run(_make_go_database(stack.database_url, args))
        print(f"generated {args.messages:,} Go messages in {generated:.1f} s", file=sys.stderr)
        command = [
            sys.executable,
            *("-m", "shared.cli", "import-go", "--batch-size", str(args.batch_size)),
            *("--source", _with_database(stack.database_url, _GO_DATABASE)),
        ]
        started = time.perf_counter()
        done = subprocess.run(
            command,
            cwd=_ROOT,
            env=stack.our_env("bench"),
            capture_output=True,
            text=True,
            check=False,
        )
        total = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"import-go exited {done.returncode}:\n{done.stderr}")
    copy = [m for line in done.stderr.splitlines() if (m := _RATE.match(line))][-1]
    copied, rate, seconds = copy.group(1), copy.group(3), copy.group(4)
    print(done.stdout.split("\n\n")[1])  # the report's counts
    print(
        f"message copy: {copied} messages in {seconds} s = {rate}"
        f" messages/s into PostgreSQL; whole import {total:.1f} s"
        f" ({args.messages / total:,.0f} messages/s)"
    )


if __name__ == "__main__":
    main()
