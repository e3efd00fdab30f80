"""The membership audit: sockets of users who lost access close even when the event was missed.

A removal reaches the gateways as a control event on the channel's topic
(`Broker.publish_member_removed`), which a gateway whose pub/sub link is
reconnecting never hears, and a membership deleted straight in PostgreSQL
publishes nothing. So every `MEMBERSHIP_RECHECK_SECONDS`, and at once after
each pub/sub resync, the audit asks PostgreSQL in one query which of this
gateway's (channel, user) pairs may no longer hold a socket, and closes those
sockets with the code a live removal uses (4403). That interval bounds how
long a removed member keeps a socket, and with it the send path (a revoked
socket sends nothing more, not even what it had already read).

Only the connections open before the query are closed: one admitted after
it was checked against a membership at least as recent as the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from gateway.broker import CONTROL_CLOSES
from gateway.hub import Hub
from gateway.metrics import GatewayMetrics
from shared.db.channels import pairs_without_access
from shared.db.pool import POSTGRES_OUTAGE_ERRORS

log = logging.getLogger(__name__)


class MembershipAudit:
    """Run by one task per gateway (`run`); `wake` asks for a check now."""

    def __init__(
        self,
        hub: Hub,
        pool: asyncpg.Pool[asyncpg.Record],
        metrics: GatewayMetrics,
        *,
        interval_seconds: float,
    ) -> None:
        self._hub = hub
        self._pool = pool
        self._metrics = metrics
        self._interval = interval_seconds
        self._woken = asyncio.Event()

    def wake(self) -> None:
        """Check as soon as possible (several wakes before a check make one check)."""
        self._woken.set()

    async def run(self) -> None:
        """Check every interval and after every wake, until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._woken.wait()
            self._woken.clear()
            try:
                await self.check()
            except POSTGRES_OUTAGE_ERRORS as exc:
                # The next interval tries again; sockets stay as they are meanwhile.
                log.warning("membership audit skipped", extra={"error": type(exc).__name__})
            except Exception:
                log.exception("membership audit failed")

    async def check(self) -> int:
        """Close the local sockets whose user lost access; returns how many."""
        members = self._hub.members()
        if not members:
            return 0
        pairs = list(members)
        revoked = await pairs_without_access(
            self._pool, [channel_id for channel_id, _ in pairs], [user_id for _, user_id in pairs]
        )
        closed = 0
        for pair in revoked:
            for connection in members[pair]:
                closed += connection.revoke(*CONTROL_CLOSES["member_removed"])
        if closed:
            self._metrics.membership_revocations.inc(closed)
            log.info("closed sockets of removed members", extra={"count": closed})
        return closed
