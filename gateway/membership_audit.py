"""The membership audit: sockets of users who lost access close even when the event was missed.

A removal from a channel, and a revocation of a user's tokens (log-out,
password change), reach the gateways as control events on the channels'
topics (`ControlEvents.publish_member_removed`, `publish_tokens_revoked`), which a
gateway whose pub/sub link is reconnecting never hears; and a membership
deleted straight in PostgreSQL publishes nothing. So every
`MEMBERSHIP_RECHECK_SECONDS`, and at once after each pub/sub resync, the
audit asks PostgreSQL in one query which of this gateway's sockets, each
(channel, user, token generation), may no longer stay open, and closes them
with the code the missed event would have: 4403 for a removal, 4401 for a
revoked token. That interval bounds how long a user who lost access keeps a
socket, and with it the send path (a revoked socket sends nothing more, not
even what it had already read). The same check refreshes each remaining
socket's mute (`gateway.mutes`), with a second statement.

Only the connections open before the query are closed: one admitted after
it was checked against a row at least as recent as the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from gateway.control_events import CONTROL_CLOSES
from gateway.hub import Hub
from gateway.metrics import GatewayMetrics
from gateway.mutes import refresh_mutes
from shared.db.channels import sockets_without_access
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
        keys = list(members)
        lost = await sockets_without_access(
            self._pool,
            [channel_id for channel_id, _, _ in keys],
            [user_id for _, user_id, _ in keys],
            [generation for _, _, generation in keys],
        )
        # The mutes of the sockets that stay, for a gateway that missed a `muted` event.
        await refresh_mutes(self._pool, members)
        closed = 0
        for found in lost:
            closing = CONTROL_CLOSES[found.reason]
            for connection in members[found.channel_id, found.user_id, found.token_generation]:
                closed += connection.revoke(*closing)
        if closed:
            self._metrics.membership_revocations.inc(closed)
            log.info("closed sockets of removed members", extra={"count": closed})
        return closed
