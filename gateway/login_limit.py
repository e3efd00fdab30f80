"""Failed log-ins, limited per identity and per client address, across every gateway.

The per-IP HTTP limit bounds how fast one address guesses, not how many
guesses one account takes from many addresses. So log-ins also count, in
Redis, per lower-cased identity (`login_max_failures`) and per client address
(`login_max_failures_per_ip`; an IPv6 client per /64), in a fixed window of
`login_failure_window_seconds`. Past either limit a log-in is refused with
`429 rate_limited` and `Retry-After` before its password is checked, so even
the right password is refused until the window ends: a guesser learns
nothing from a locked account.

The identity is counted as typed (lower-cased), not as the account it names:
counting per account would let a guesser who locked `alice` learn which
e-mail address is hers by seeing which one is locked too. The identity is
hashed for the key name, so e-mail addresses do not appear in key listings.

If Redis is down, log-ins are not limited (the HTTP limit fails open as well):
an outage of the broker must not lock every user out.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from dataclasses import dataclass

from redis.exceptions import RedisError

from shared.errors import RateLimitedError
from shared.redis_keys import RedisKeys
from shared.scripts import Scripts
from shared.settings import Settings

log = logging.getLogger(__name__)

_COUNT = 1
_GIVE_BACK = -1


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """The counters one log-in attempt was counted in."""

    counters: tuple[str, ...]


class _Outage:
    """Logs a broker outage once, not once per log-in."""

    logged = False


async def count_attempt(
    scripts: Scripts, keys: RedisKeys, settings: Settings, identity: str, client: str
) -> LoginAttempt:
    """Count a log-in attempt, before its password is checked.

    Raises:
        RateLimitedError: the identity or the client has used up its failures
            for the window; `retry_after` is when the later of the two resets.
    """
    digest = hashlib.sha256(identity.lower().encode()).hexdigest()
    limits = [
        (keys.login_failures_of_identity(digest), settings.login_max_failures),
        (keys.login_failures_of_client(client), settings.login_max_failures_per_ip),
    ]
    limits = [(counter, limit) for counter, limit in limits if limit > 0]
    window_ms = settings.login_failure_window_seconds * 1000
    try:
        replies = await asyncio.gather(
            *(_call(scripts, counter, window_ms, _COUNT) for counter, _ in limits)
        )
    except (RedisError, OSError):
        if not _Outage.logged:
            log.warning("log-in limiter unavailable, failed log-ins are not limited")
            _Outage.logged = True
        return LoginAttempt(())
    _Outage.logged = False
    waits = [
        int(reset_ms)
        for (_, limit), (count, reset_ms) in zip(limits, replies, strict=True)
        if count > limit
    ]
    if waits:
        raise RateLimitedError(
            "Too many failed log-ins, try again later",
            retry_after=max(1, math.ceil(max(waits) / 1000)),
        )
    return LoginAttempt(tuple(counter for counter, _ in limits))


async def give_back(scripts: Scripts, settings: Settings, attempt: LoginAttempt) -> None:
    """The attempt's password was right: it does not count as a failure.

    If Redis is down the attempt stays counted, which errs on the strict side.
    """
    window_ms = settings.login_failure_window_seconds * 1000
    try:
        await asyncio.gather(
            *(_call(scripts, counter, window_ms, _GIVE_BACK) for counter in attempt.counters)
        )
    except (RedisError, OSError) as exc:
        log.warning("log-in attempt not given back", extra={"error": type(exc).__name__})


async def _call(scripts: Scripts, counter: str, window_ms: int, delta: int) -> tuple[int, int]:
    count, reset_ms = await scripts.login_failures(keys=[counter], args=[window_ms, delta])
    return int(count), int(reset_ms)
