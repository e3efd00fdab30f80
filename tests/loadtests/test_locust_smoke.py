"""A few-seconds headless locust run of loadtests/locustfile.py against a real gateway."""

from __future__ import annotations

import asyncio
import csv
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.app import create_app
from shared.settings import Settings
from tests.processes import run_with_deadline

_RUN_LIMIT_SECONDS = 30.0
_LOCUSTFILE = Path(__file__).resolve().parents[2] / "loadtests" / "locustfile.py"
# Every request the three user classes make in any run of a few seconds.
_EXPECTED = {
    ("POST", "/api/v1/auth/signup"),
    ("POST", "/api/v1/channels/new"),
    ("POST", "/api/v1/channels/join"),
    ("POST", "/api/v1/auth/login"),
    ("GET", "/api/v1/channels"),
    ("GET", "/api/v1/channels/[id]/messages"),
    ("WS", "connect"),
    ("WS", "ack"),
    ("WS", "message"),
    ("WS", "delivery"),
    ("MUX", "connect"),
    ("MUX", "subscribe"),
    ("MUX", "ack"),
    ("MUX", "message"),
    ("MUX", "delivery"),
}


async def test_headless_locust_run_succeeds_against_a_gateway(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    gateway = await aiohttp_client(create_app(make_settings()))
    host = str(gateway.make_url("")).rstrip("/")
    env = os.environ | {
        "LOCUST_ROOMS": "1",
        "LOCUST_WS_RATE": "5",
        "LOCUST_REST_WAIT": "0.05,0.1",
    }
    finished = await run_with_deadline(
        *(sys.executable, "-m", "locust", "-f", str(_LOCUSTFILE), "--headless"),
        *("-u", "5", "-r", "5", "-t", "4s", "--host", host, "--only-summary"),
        *("--csv", str(tmp_path / "smoke"), "--loglevel", "WARNING"),
        deadline=_RUN_LIMIT_SECONDS,
        env=env,
        stderr=asyncio.subprocess.STDOUT,
    )

    assert finished.returncode == 0, finished.stdout.decode()[-3000:]
    with (tmp_path / "smoke_stats.csv").open() as file:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(file)}
    assert set(rows) >= _EXPECTED, sorted(rows)
    for key in _EXPECTED:
        assert int(rows[key]["Request Count"]) > 0, key
    failures = {
        key: row["Failure Count"] for key, row in rows.items() if row["Failure Count"] != "0"
    }
    assert failures == {}, finished.stdout.decode()[-3000:]
