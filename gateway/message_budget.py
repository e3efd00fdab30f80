"""Each chat socket's own message budget, in front of the rate limit in Redis.

The per-user, per-channel limit lives in the send script (`WS_MESSAGE_RATE`
per `WS_MESSAGE_RATE_WINDOW_SECONDS`, a fixed window that starts at the first
message), so every frame a flooding client sends would still cost a script
call. A token bucket per socket refuses the excess before it reaches Redis.
It holds twice the rate, plus one, and refills at the rate. In any `t`
seconds a fixed window lets through at most `2 * rate - 1 + rate * t / window`
messages (the rest of one window just before it ends, the next window's just
after), and one socket sends a part of its user's messages, so the bucket
never refuses what Redis would accept; the two spare messages absorb the
difference between the gateway's clock, which the bucket reads when it takes
a frame, and Redis's, which opens and ends the window when the script runs.
A socket refused more than `WS_MESSAGE_RATE_CLOSE_AFTER` times within about
a window (the count decays at that many per window) is closed with 4429.

The multiplexed socket keeps two more buckets of the same kind
(`BudgetLimits.of_frames`): one for `subscribe` frames (each costs a
PostgreSQL query and a Redis read) and one for `read` frames (each a
PostgreSQL write), refused and closed the same way.

A frame costs a few float operations here; nothing else: no task, no timer.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.settings import Settings


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """What every socket of a gateway is allowed, from the settings."""

    capacity: float
    refill_per_second: float
    close_after: float  # refusals; 0: never close
    strike_decay_per_second: float

    @classmethod
    def from_settings(cls, settings: Settings) -> BudgetLimits | None:
        """None when `WS_MESSAGE_RATE` is 0 (no limit at all)."""
        rate, window = settings.ws_message_rate, settings.ws_message_rate_window_seconds
        return cls._of(settings, 2.0 * rate + 1.0, rate, window)

    @classmethod
    def of_frames(cls, settings: Settings, rate: int) -> BudgetLimits | None:
        """A multiplexed socket's budget of `rate` subscribes (or read frames) per
        `WS_FRAME_RATE_WINDOW_SECONDS`, after a first burst of `WS_MAX_SUBSCRIPTIONS`
        more: a new socket may subscribe (or mark read) every channel it may hold at
        once. None when `rate` is 0."""
        capacity = float(settings.ws_max_subscriptions + rate)
        return cls._of(settings, capacity, rate, settings.ws_frame_rate_window_seconds)

    @classmethod
    def _of(
        cls, settings: Settings, capacity: float, rate: int, window: int
    ) -> BudgetLimits | None:
        if not rate:
            return None
        close_after = settings.ws_message_rate_close_after
        return cls(
            capacity=capacity,
            refill_per_second=rate / window,
            close_after=float(close_after),
            strike_decay_per_second=close_after / window,
        )


class MessageBudget:
    """One socket's budget; `now` is any monotonic clock in seconds, the same each call."""

    __slots__ = ("_limits", "_refilled_at", "_strikes", "_struck_at", "_tokens")

    def __init__(self, limits: BudgetLimits, now: float) -> None:
        self._limits = limits
        self._tokens = limits.capacity
        self._refilled_at = now
        self._strikes = 0.0
        self._struck_at = now

    def spend(self, now: float) -> bool:
        """Take one message from the budget; False (nothing taken) when it is empty."""
        limits = self._limits
        tokens = self._tokens + (now - self._refilled_at) * limits.refill_per_second
        self._refilled_at = now
        if tokens > limits.capacity:
            tokens = limits.capacity
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True

    def refuse(self, now: float) -> tuple[float, bool]:
        """Count a refusal: seconds until a message fits again, and whether to close now."""
        limits = self._limits
        strikes = self._strikes - (now - self._struck_at) * limits.strike_decay_per_second
        self._strikes = max(strikes, 0.0) + 1.0
        self._struck_at = now
        retry_after = (1.0 - self._tokens) / limits.refill_per_second
        return retry_after, 0 < limits.close_after < self._strikes
