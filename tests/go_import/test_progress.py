"""Import progress: a redrawn bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

from shared.go_import.progress import Progress


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_at_the_start_every_interval_and_at_the_end() -> None:
    stream, clock = io.StringIO(), _Clock()
    progress = Progress(stream, "messages", 1_000, interval=2.0, clock=clock)
    clock.now = 0.5
    progress.advance(100)
    clock.now = 1.0
    progress.advance(100)  # within the interval: no line
    clock.now = 3.0
    progress.advance(300)
    clock.now = 4.0
    progress.advance(500)
    progress.finish()
    assert stream.getvalue().splitlines() == [
        "messages: 100/1,000 (10%), 200/s, 0.5 s",
        "messages: 500/1,000 (50%), 167/s, 3.0 s",
        "messages: 1,000/1,000 (100%), 250/s, 4.0 s",
    ]


def test_a_terminal_gets_one_redrawn_bar_with_rate_and_time_left() -> None:
    stream, clock = _Terminal(), _Clock()
    progress = Progress(stream, "messages", 1_000, clock=clock)
    clock.now = 1.0
    progress.advance(250)
    clock.now = 2.0
    progress.advance(250)
    progress.finish()
    text = stream.getvalue()
    assert "\n" not in text.rstrip("\n")  # one line, redrawn
    assert text.endswith("\n")
    last = text.split("\r")[-1]
    assert last.startswith("messages [###############...............]  50% 500/1,000 250/s")
    assert "2 s left" in last
