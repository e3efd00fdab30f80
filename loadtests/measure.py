"""The measured part of each scenario: steps, CPU accounting, the saturation search, persistence.

CPU seconds are read from /proc for each group of processes around a step:
the gateways (or baseline servers), the load generator's workers, Valkey
(when the benchmark started it) and the persistence worker.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from loadtests.generator import LoadGenerator, StepResult
from loadtests.histogram import percentile_ms
from loadtests.stack import BenchStack, Service, cpu_seconds
from shared.db.messages import count_messages

# Rows are counted this often while the worker drains the backlog; a count is
# a few ms of PostgreSQL time, small next to the writes it measures.
_PERSISTENCE_POLL_SECONDS = 0.02
_PERSISTENCE_LIMIT_SECONDS = 120.0
# Preloading is limited by the send path, not by a rate, so it asks for more than it gets.
_PRELOAD_RATE = 20_000.0
# A saturation step whose generator could not send this share of the asked rate
# measured the generator, not the server.
_GENERATOR_SHORTFALL = 0.9


@dataclass
class CpuProbe:
    servers: list[Service]
    redis_pid: int | None
    worker: Service | None
    generator_pids: list[int] = field(default_factory=list)

    def sample(self) -> dict[str, float]:
        groups = {
            "gateway": [server.pid for server in self.servers],
            "generator": self.generator_pids,
            "redis": [self.redis_pid] if self.redis_pid is not None else [],
            "worker": [self.worker.pid] if self.worker is not None else [],
        }
        return {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in groups.items()}


def fanout_step(
    generator: LoadGenerator,
    probe: CpuProbe,
    step: int,
    rate: float,
    duration: float,
    drain_limit: float,
) -> dict[str, Any]:
    """Run one measured step and turn its counts into the reported figures."""
    before = probe.sample()
    result = generator.step(step, rate, duration, drain_limit)
    after = probe.sample()
    cpu = {name: round(after[name] - before[name], 2) for name in after}
    return figures(result, rate, cpu)


def figures(result: StepResult, rate: float, cpu: dict[str, float]) -> dict[str, Any]:
    report = result.report
    delivered: int = report["received"]
    window = (report["last_delivery_ns"] - result.started_ns) / 1e9 if delivered else 0.0
    histogram = report["histogram"]
    gateway_cpu = cpu["gateway"]
    return {
        "send_rate_target": rate,
        "send_rate": round(result.total_sent / result.send_seconds, 1),
        "sent": result.total_sent,
        "expected": report["expected"],
        "delivered": delivered,
        "delivered_per_s": round(delivered / window, 1) if window > 0 else 0.0,
        "p50_ms": percentile_ms(histogram, 0.50),
        "p95_ms": percentile_ms(histogram, 0.95),
        "p99_ms": percentile_ms(histogram, 0.99),
        "max_ms": round(report["max_us"] / 1000, 2),
        "loss": report["loss"],
        "duplicates": report["duplicates"],
        "seq_regressions": report["seq_regressions"],
        "reordered": report["reordered"],
        "unexpected": report["extra"],
        "acks": report["acks"],
        "errors": report["errors"],
        "closed_by_server": report["closed"],
        "error_samples": report["error_samples"],
        "gateway_cpu_s": gateway_cpu,
        "generator_cpu_s": cpu["generator"],
        "redis_cpu_s": cpu["redis"],
        "worker_cpu_s": cpu["worker"],
        "deliveries_per_gateway_cpu_s": round(delivered / gateway_cpu) if gateway_cpu else None,
    }


def saturation(args: Any, generator: LoadGenerator, probe: CpuProbe) -> dict[str, Any]:
    """Raise the rate step by step until p99 passes the limit, or any loss; keep the best step."""
    duration = args.duration or 5.0
    steps: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    stopped_by = "max_steps"
    rate = args.start_rate
    for number in range(args.max_steps):
        step = fanout_step(generator, probe, 2 + number, rate, duration, args.drain_timeout)
        steps.append(step)
        p99 = step["p99_ms"]
        if step["loss"] or step["duplicates"] or step["closed_by_server"]:
            stopped_by = "loss"
        elif p99 is None or p99 > args.p99_limit_ms:
            stopped_by = "p99"
        elif step["send_rate"] < _GENERATOR_SHORTFALL * rate:
            stopped_by = "generator"
        else:
            best = step
            rate *= args.step_factor
            continue
        break
    return {
        "max_sustained_send_rate": best["send_rate"] if best else 0.0,
        "max_sustained_delivered_per_s": best["delivered_per_s"] if best else 0.0,
        "p99_ms_at_max": best["p99_ms"] if best else None,
        "deliveries_per_gateway_cpu_s_at_max": (
            best["deliveries_per_gateway_cpu_s"] if best else None
        ),
        "stopped_by": stopped_by,
        "steps": steps,
    }


def persistence(
    args: Any, generator: LoadGenerator, probe: CpuProbe, stack: BenchStack, key_prefix: str
) -> dict[str, Any]:
    """Preload a backlog through the gateways with no worker running, then time its drain."""
    assert stack.database_url is not None
    rows_before = asyncio.run(_count_rows(stack.database_url))
    preload = generator.step(
        1,
        _PRELOAD_RATE,
        _PERSISTENCE_LIMIT_SECONDS,
        _PERSISTENCE_LIMIT_SECONDS,
        messages=args.messages,
    )
    if preload.report["loss"]:
        raise RuntimeError(f"preload lost {preload.report['loss']} messages")
    sent = preload.total_sent
    # Every echo arrived, and the send script appends to the ingest stream before it
    # publishes, so the whole backlog is in the streams now.
    preload_seconds = (preload.report["last_delivery_ns"] - preload.started_ns) / 1e9
    worker = stack.start_worker(key_prefix)
    probe.worker = worker
    before = probe.sample()
    drained = asyncio.run(_wait_for_rows(stack.database_url, rows_before + sent))
    after = probe.sample()
    written = drained["rows"] - rows_before
    rate = None
    if drained["last_at"] is not None and drained["last_at"] > drained["first_at"]:
        rate = round(
            (drained["rows"] - drained["first_rows"]) / (drained["last_at"] - drained["first_at"])
        )
    return {
        "messages": sent,
        "preload_per_s": round(sent / preload_seconds) if preload_seconds > 0 else None,
        "persisted": written,
        "loss": sent - written,
        "persisted_per_s": rate,
        "drain_seconds": round(drained["done_after"], 2),
        "worker_cpu_s": round(after["worker"] - before["worker"], 2),
        "redis_cpu_s": round(after["redis"] - before["redis"], 2),
    }


async def _count_rows(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await count_messages(conn)
    finally:
        await conn.close()


async def _wait_for_rows(dsn: str, target: int) -> dict[str, Any]:
    """Poll the row count until it reaches `target` (bounded); when rows first and last grew."""
    conn = await asyncpg.connect(dsn)
    try:
        started = time.monotonic()
        first_at = last_at = None
        first_rows = rows = await count_messages(conn)
        while rows < target and time.monotonic() - started < _PERSISTENCE_LIMIT_SECONDS:
            await asyncio.sleep(_PERSISTENCE_POLL_SECONDS)
            counted = await count_messages(conn)
            now = time.monotonic()
            if counted > rows:
                if first_at is None:
                    first_at, first_rows = now, counted
                last_at = now
            rows = counted
        return {
            "rows": rows,
            "first_rows": first_rows,
            "first_at": first_at,
            "last_at": last_at,
            "done_after": time.monotonic() - started,
        }
    finally:
        await conn.close()


def headline(result: dict[str, Any]) -> str:
    """One progress line for a finished run."""
    keys = [
        "connections",
        "delivered_per_s",
        "p99_ms",
        "loss",
        "duplicates",
        "deliveries_per_gateway_cpu_s",
        "max_sustained_delivered_per_s",
        "rss_per_connection_kb",
        "persisted_per_s",
    ]
    return ", ".join(f"{key}={result[key]}" for key in keys if key in result)
