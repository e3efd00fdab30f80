"""A few-seconds run of the fan-out benchmark against our stack, so it cannot rot.

The benchmark starts its own gateways and worker as processes, on the test
session's PostgreSQL and Valkey (with a key prefix of its own).
"""

from __future__ import annotations

from typing import Any

import pytest

from loadtests.report import METRICS
from tests.loadtests.subprocess_run import run_json

_RUN_LIMIT_SECONDS = 45.0


async def _run_fanout(*args: str) -> dict[str, Any]:
    return await run_json("loadtests.fanout", *args, "--json", within=_RUN_LIMIT_SECONDS)


async def test_small_channels_run_delivers_every_message_once(
    database_dsn: str, redis_url: str
) -> None:
    summary = await _run_fanout(
        *("--scenario", "small-channels", "--target", "ours", "--runs", "1"),
        *("--channels", "4", "--members", "3", "--rate", "40", "--duration", "2"),
        *("--warmup", "0.5", "--database-url", database_dsn, "--redis-url", redis_url),
    )

    run = summary["targets"]["ours"]["runs"][0]
    assert set(METRICS["small-channels"]) <= set(run)
    assert set(METRICS["small-channels"]) <= set(summary["targets"]["ours"]["median"])
    assert run["connections"] == 12
    assert run["sent"] > 0
    assert run["expected"] == run["sent"] * 3
    assert run["delivered"] == run["expected"]
    assert run["loss"] == 0
    assert run["duplicates"] == 0
    assert run["seq_regressions"] == 0
    assert run["errors"] == 0
    assert run["acks"] == run["sent"]
    assert run["p99_ms"] is not None
    assert run["gateway_cpu_s"] > 0


async def test_multiplexed_run_delivers_every_message_once_next_to_the_chat_socket(
    database_dsn: str, redis_url: str
) -> None:
    summary = await _run_fanout(
        *("--scenario", "small-channels", "--target", "ours,mux", "--runs", "1"),
        *("--channels", "4", "--members", "3", "--channels-per-user", "2"),
        *("--rate", "40", "--duration", "1", "--warmup", "0.5"),
        *("--database-url", database_dsn, "--redis-url", redis_url),
    )

    per_channel = summary["targets"]["ours"]["runs"][0]
    mux = summary["targets"]["mux"]["runs"][0]
    assert per_channel["connections"] == 12
    assert mux["connections"] == 6  # 12 memberships, each user in 2 channels
    assert mux["delivered"] == mux["expected"] == mux["sent"] * 3 > 0
    assert (mux["loss"], mux["duplicates"], mux["seq_regressions"], mux["errors"]) == (0, 0, 0, 0)
    assert mux["acks"] == mux["sent"]
    assert per_channel["delivered"] == per_channel["expected"] > 0
    assert set(summary["ratios"]) == {"mux/ours"}


async def test_naive_baseline_run_delivers_every_message_once(
    redis_url: str, database_dsn: str
) -> None:
    summary = await _run_baseline("naive", redis_url, database_dsn)

    run = summary["targets"]["naive"]["runs"][0]
    assert run["delivered"] == run["expected"] == run["sent"] * 3 > 0
    assert (run["loss"], run["duplicates"], run["errors"]) == (0, 0, 0)


async def test_socketio_baseline_run_delivers_every_message_once(
    redis_url: str, database_dsn: str
) -> None:
    pytest.importorskip("socketio", reason="python-socketio is in the `bench` extra")
    summary = await _run_baseline("socketio", redis_url, database_dsn)

    run = summary["targets"]["socketio"]["runs"][0]
    assert run["delivered"] == run["expected"] == run["sent"] * 3 > 0
    assert (run["loss"], run["duplicates"], run["errors"]) == (0, 0, 0)


async def _run_baseline(target: str, redis_url: str, database_dsn: str) -> dict[str, Any]:
    return await _run_fanout(
        *("--scenario", "small-channels", "--target", target, "--runs", "1"),
        *("--channels", "4", "--members", "3", "--rate", "40", "--duration", "1"),
        *("--warmup", "0.5", "--database-url", database_dsn, "--redis-url", redis_url),
    )
