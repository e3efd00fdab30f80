"""A fixed log-linear latency histogram, cheap to fill in the load generator's hot path.

Latencies are whole microseconds. Resolution is 10 us below 10 ms, 1 ms below
1 s and 100 ms up to 60 s (later values land in the last bucket), so p99 of a
few milliseconds is exact to 10 us and the histogram is a flat list of about
2,600 ints that worker processes can pickle and the parent can add up.
"""

from __future__ import annotations

from collections.abc import Sequence

BUCKETS = 2600
_FINE_LIMIT_US = 10_000  # 10 us buckets below this
_MEDIUM_LIMIT_US = 1_000_000  # 1 ms buckets below this, 100 ms buckets above


def new_histogram() -> list[int]:
    return [0] * BUCKETS


def bucket_of(latency_us: int) -> int:
    """The bucket a latency falls in; negative latencies count as 0."""
    if latency_us < _FINE_LIMIT_US:
        return latency_us // 10 if latency_us > 0 else 0
    if latency_us < _MEDIUM_LIMIT_US:
        return 990 + latency_us // 1000
    return min(1980 + latency_us // 100_000, BUCKETS - 1)


def bucket_upper_us(bucket: int) -> int:
    """The exclusive upper bound of a bucket, in microseconds (what percentiles report)."""
    if bucket < 1000:
        return (bucket + 1) * 10
    if bucket < 1990:
        return (bucket - 989) * 1000
    return (bucket - 1979) * 100_000


def merge(histograms: Sequence[Sequence[int]]) -> list[int]:
    total = new_histogram()
    for histogram in histograms:
        for index, count in enumerate(histogram):
            if count:
                total[index] += count
    return total


def percentile_ms(histogram: Sequence[int], fraction: float) -> float | None:
    """The latency (ms) that `fraction` of the samples do not exceed; None when empty.

    Reports the upper bound of the bucket holding that sample, so it never
    understates a latency.
    """
    count = sum(histogram)
    if count == 0:
        return None
    rank = max(1, round(fraction * count))
    seen = 0
    for index, bucket_count in enumerate(histogram):
        seen += bucket_count
        if seen >= rank:
            return bucket_upper_us(index) / 1000
    return bucket_upper_us(BUCKETS - 1) / 1000
