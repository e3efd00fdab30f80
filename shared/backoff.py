"""Capped exponential backoff with jitter, for every reconnect and retry loop."""

from __future__ import annotations

import asyncio
import contextlib
import random

_BASE_SECONDS = 0.05
_CAP_SECONDS = 5.0


class Backoff:
    """Delays of 0.05 s doubling up to 5 s, jittered so restarted peers do not retry in step.

    Make a new one after a success to start again from the shortest delay.
    """

    def __init__(self) -> None:
        self._attempt = 0

    def next_delay(self) -> float:
        ceiling = min(_CAP_SECONDS, _BASE_SECONDS * 2 ** min(self._attempt, 16))
        self._attempt += 1
        # Half fixed, half random: keeps a floor so a flapping server is not hammered.
        return random.uniform(ceiling / 2, ceiling)

    async def sleep(self, stop: asyncio.Event | None = None) -> None:
        """Wait the next delay; return early if `stop` is set."""
        delay = self.next_delay()
        if stop is None:
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stop.wait()
