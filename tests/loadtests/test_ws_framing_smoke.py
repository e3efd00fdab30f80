"""A second-long run of the WebSocket framing microbenchmark, so it cannot rot."""

from __future__ import annotations

import pytest

from loadtests import ws_framing


async def test_framing_benchmark_reports_every_measure_for_ours(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # What `--frames 200 --rounds 1 --sockets 5` sets on the command line.
    monkeypatch.setattr(ws_framing, "_FRAMES", 200)
    monkeypatch.setattr(ws_framing, "_ROUNDS", 1)
    monkeypatch.setattr(ws_framing, "_IDLE_SOCKETS", 5)
    await ws_framing.main()
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.split()[:1] == ["ours"] for line in lines) == 4, lines
