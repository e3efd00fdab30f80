"""Progress of a long copy: a bar on a terminal, plain lines anywhere else.

On a terminal one line is redrawn in place (`\\r`) with the bar, the counts,
the rate and the time left. Anywhere else (a log, CI, a pipe) it writes one
plain line at the first step, then at most one every `interval` seconds, and
one at the end, so a log shows progress without a line per batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

_BAR_WIDTH = 30
_LINE_INTERVAL_SECONDS = 2.0
# A terminal redraw costs a write: a few per second look live.
_REDRAW_INTERVAL_SECONDS = 0.2


class Progress:
    def __init__(
        self,
        stream: TextIO,
        label: str,
        total: int,
        *,
        interval: float = _LINE_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._label = label
        self._total = total
        self._done = 0
        self._clock = clock
        self._started = clock()
        self._last_shown: float | None = None
        self._shown = -1  # the count the last line showed
        self._terminal = stream.isatty()
        self._interval = _REDRAW_INTERVAL_SECONDS if self._terminal else interval

    def advance(self, count: int) -> None:
        self._done += count
        now = self._clock()
        if self._last_shown is None or now - self._last_shown >= self._interval:
            self._show(now)

    def finish(self) -> None:
        if self._shown != self._done:
            self._show(self._clock())
        if self._terminal:
            self._stream.write("\n")
            self._stream.flush()

    def _show(self, now: float) -> None:
        self._last_shown, self._shown = now, self._done
        elapsed = max(now - self._started, 1e-9)
        rate = self._done / elapsed
        share = self._done / self._total if self._total else 1.0
        counts = f"{self._done:,}/{self._total:,}"
        if self._terminal:
            filled = round(share * _BAR_WIDTH)
            left = (self._total - self._done) / rate if rate else 0.0
            bar = "#" * filled + "." * (_BAR_WIDTH - filled)
            self._stream.write(
                f"\r{self._label} [{bar}] {share:4.0%} {counts} {rate:,.0f}/s {left:4.0f} s left "
            )
        else:
            self._stream.write(
                f"{self._label}: {counts} ({share:.0%}), {rate:,.0f}/s, {elapsed:.1f} s\n"
            )
        self._stream.flush()
