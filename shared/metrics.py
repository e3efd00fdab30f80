"""Prometheus metrics, small enough to sit on the hot path: plain counters, no locks.

Everything runs on one event loop, so a counter is an attribute increment and
a histogram observation a `bisect`. `Registry.render()` writes the text
exposition format (version 0.0.4) that Prometheus scrapes from `/metrics`.
Gauges are read at scrape time from a callback, so they cost nothing between
scrapes.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds, from a fraction of a millisecond to a stalled dependency.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class Counter:
    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def samples(self) -> Iterable[str]:
        yield f"{self.name} {self.value}"


class LabeledCounter:
    """A counter per value of one label (an error code, a status class)."""

    def __init__(self, name: str, help_text: str, label: str) -> None:
        self.name = name
        self.help = help_text
        self._label = label
        self.values: dict[str, int] = {}

    def inc(self, label_value: str, amount: int = 1) -> None:
        self.values[label_value] = self.values.get(label_value, 0) + amount

    def samples(self) -> Iterable[str]:
        for value, count in sorted(self.values.items()):
            yield f'{self.name}{{{self._label}="{value}"}} {count}'


class Gauge:
    def __init__(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.name = name
        self.help = help_text
        self._read = read

    def samples(self) -> Iterable[str]:
        yield f"{self.name} {_number(self._read())}"


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.help = help_text
        self._bounds = buckets
        self._counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self.count += 1
        self.sum += value

    def samples(self) -> Iterable[str]:
        cumulative = 0
        for bound, count in zip((*self._bounds, math.inf), self._counts, strict=True):
            cumulative += count
            le = "+Inf" if bound == math.inf else _number(bound)
            yield f'{self.name}_bucket{{le="{le}"}} {cumulative}'
        yield f"{self.name}_sum {_number(self.sum)}"
        yield f"{self.name}_count {self.count}"


Metric = Counter | LabeledCounter | Gauge | Histogram
_KINDS = {Counter: "counter", LabeledCounter: "counter", Gauge: "gauge", Histogram: "histogram"}


class Registry:
    def __init__(self) -> None:
        self._metrics: list[Metric] = []

    def add(self, metric: Metric) -> None:
        self._metrics.append(metric)

    def counter(self, name: str, help_text: str) -> Counter:
        metric = Counter(name, help_text)
        self.add(metric)
        return metric

    def labeled_counter(self, name: str, help_text: str, label: str) -> LabeledCounter:
        metric = LabeledCounter(name, help_text, label)
        self.add(metric)
        return metric

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> Gauge:
        metric = Gauge(name, help_text, read)
        self.add(metric)
        return metric

    def histogram(self, name: str, help_text: str, buckets: tuple[float, ...]) -> Histogram:
        metric = Histogram(name, help_text, buckets)
        self.add(metric)
        return metric

    def render(self) -> bytes:
        lines: list[str] = []
        for metric in self._metrics:
            lines.append(f"# HELP {metric.name} {metric.help}")
            lines.append(f"# TYPE {metric.name} {_KINDS[type(metric)]}")
            lines.extend(metric.samples())
        return ("\n".join(lines) + "\n").encode()


def _number(value: float) -> str:
    return (
        repr(float(value))
        if isinstance(value, float) and not value.is_integer()
        else str(int(value))
    )
