"""Medians over runs, ratios of ours to each baseline, and the human table."""

from __future__ import annotations

import statistics
from typing import Any

_FANOUT = [
    "connections",
    "channels",
    "members_per_channel",
    "senders",
    "send_rate",
    "delivered_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "loss",
    "duplicates",
    "seq_regressions",
    "errors",
    "closed_by_server",
    "rss_per_connection_kb",
    "gateway_cpu_s",
    "generator_cpu_s",
    "redis_cpu_s",
    "worker_cpu_s",
    "deliveries_per_gateway_cpu_s",
]
_SATURATION = [
    "connections",
    "channels",
    "members_per_channel",
    "max_sustained_send_rate",
    "max_sustained_delivered_per_s",
    "p99_ms_at_max",
    "deliveries_per_gateway_cpu_s_at_max",
    "rss_per_connection_kb",
]
_IDLE = [
    "connections",
    "failed_connections",
    "connect_seconds",
    "gateway_rss_before_kb",
    "gateway_rss_connected_kb",
    "rss_per_connection_kb",
]
_PERSISTENCE = [
    "messages",
    "preload_per_s",
    "persisted",
    "loss",
    "persisted_per_s",
    "drain_seconds",
    "worker_cpu_s",
    "redis_cpu_s",
]

METRICS: dict[str, list[str]] = {
    "small-channels": _FANOUT,
    "big-channel": _FANOUT,
    "saturation": _SATURATION,
    "idle": _IDLE,
    "persistence": _PERSISTENCE,
}
# Compared as ours / baseline. Higher is better for rates, lower for p99 and memory.
RATIO_METRICS: dict[str, list[str]] = {
    "small-channels": ["delivered_per_s", "deliveries_per_gateway_cpu_s", "p99_ms"],
    "big-channel": ["delivered_per_s", "deliveries_per_gateway_cpu_s", "p99_ms"],
    "saturation": [
        "max_sustained_send_rate",
        "max_sustained_delivered_per_s",
        "deliveries_per_gateway_cpu_s_at_max",
    ],
    "idle": ["rss_per_connection_kb"],
    "persistence": [],
}


def _median(values: list[Any]) -> Any:
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if numbers:
        middle = statistics.median(numbers)
        return round(middle, 3) if isinstance(middle, float) else middle
    strings = [v for v in values if isinstance(v, str)]
    return ",".join(strings) if strings else None


def summarize(scenario: str, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per target: every run and the median of each figure; ratios of ours to each baseline."""
    targets: dict[str, Any] = {}
    for name, results in runs.items():
        keys = [key for key in METRICS[scenario] if any(key in r for r in results)]
        if scenario == "saturation":
            keys.append("stopped_by")
        median = {key: _median([r.get(key) for r in results]) for key in keys}
        targets[name] = {"median": median, "runs": results}
    ratios: dict[str, dict[str, float | None]] = {}
    if "ours" in targets:
        for name in targets:
            if name == "ours":
                continue
            # The multiplexed socket is ours too: compared to the per-channel one.
            pair = ("mux", "ours") if name == "mux" else ("ours", name)
            top, bottom = (targets[n]["median"] for n in pair)
            ratios["/".join(pair)] = {
                key: _ratio(top.get(key), bottom.get(key)) for key in RATIO_METRICS[scenario]
            }
    return {
        "scenario": scenario,
        "runs": max((len(r) for r in runs.values()), default=0),
        "targets": targets,
        "ratios": ratios,
    }


def _ratio(ours: Any, theirs: Any) -> float | None:
    if not isinstance(ours, int | float) or not isinstance(theirs, int | float) or not theirs:
        return None
    return round(ours / theirs, 2)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render_table(summary: dict[str, Any]) -> str:
    """The human view: one row per figure, a column per target, then the ratio columns."""
    targets: dict[str, Any] = summary["targets"]
    ratios: dict[str, dict[str, Any]] = summary["ratios"]
    names = list(targets)
    keys = METRICS[summary["scenario"]] + (
        ["stopped_by"] if summary["scenario"] == "saturation" else []
    )
    header = ["figure (median)", *names, *ratios]
    rows = [header]
    for key in keys:
        if not any(key in targets[name]["median"] for name in names):
            continue
        row = [key, *(_cell(targets[name]["median"].get(key)) for name in names)]
        row += [_cell(ratio.get(key)) if key in ratio else "" for ratio in ratios.values()]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        f"scenario {summary['scenario']}: median of {summary['runs']} run(s) per target",
        *(
            "  ".join(
                cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                for i, cell in enumerate(row)
            )
            for row in rows
        ),
    ]
    machine = summary.get("machine")
    if machine:
        start = ", ".join(f"{x:.2f}" for x in machine["load_average_at_start"])
        end = ", ".join(f"{x:.2f}" for x in machine["load_average_at_end"])
        lines.append(
            f"{machine['cpus']} CPUs; load average at start {start}, at end {end}"
            f"; wall {summary.get('wall_seconds')} s"
        )
    errors = [
        f"  {name}: {sample}"
        for name, target in targets.items()
        for run in target["runs"]
        for sample in run.get("error_samples", [])
    ]
    if errors:
        lines += ["error samples:", *errors[:6]]
    return "\n".join(lines)
