"""Who is online in each channel, per user, across every gateway.

Redis holds, per channel, one entry per (user, gateway) with an expiry
(`shared/redis_scripts/presence_*.lua`); a user is online while any of their
entries lives. This module keeps the gateway's side: it counts local sockets
per (channel, user), adds the gateway's entry when the first opens and
removes it when the last closes, and every `PRESENCE_REFRESH_SECONDS`
refreshes all its entries in one pipelined batch (one script call per channel,
however many sockets), which also sweeps entries that expired: those of a
gateway that died without removing them. The scripts decide atomically whether
a user's presence changed and only then publish a `presence` event on the
channel's topic.

Presence never breaks a socket: when Redis fails, the failure is logged once,
opens and closes stop calling Redis, and the next refresh that succeeds puts
every local entry back (entries of closed sockets expire on their own).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from shared.errors import UnavailableError
from shared.redis_keys import RedisKeys
from shared.scripts import Scripts
from shared.settings import Settings

log = logging.getLogger(__name__)

# Users per script call in a refresh: bounds one call's arguments and run time.
_REFRESH_CHUNK = 500
_REDIS_FAILURES = (RedisError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Online:
    """A channel's presence: `user_ids` is None above PRESENCE_MAX_LISTED (counts only)."""

    count: int
    user_ids: list[int] | None


class Presence:
    """This gateway's part of presence.

    The socket code calls `socket_opened` once a socket of `user_id` in
    `channel_id` is live and `socket_closed` once it is gone (any number of
    sockets per user; only the first and the last reach Redis). Neither
    raises. `run` is the refresh loop (one task, owned by the app); `online`
    answers the REST route.
    """

    def __init__(self, settings: Settings, redis: Redis, scripts: Scripts) -> None:
        self._redis = redis
        self._scripts = scripts
        self._keys = RedisKeys(settings.redis_key_prefix, settings.redis_partitions)
        self._cluster = settings.redis_cluster
        self._interval = settings.presence_refresh_seconds
        self._timeout = settings.redis_timeout_seconds
        # Random per process: a restarted gateway never mistakes its
        # predecessor's entries for its own, which expire instead.
        self.node_id = secrets.token_hex(8)
        self._publish_command = "SPUBLISH" if settings.redis_cluster else "PUBLISH"
        self._max_listed = settings.presence_max_listed
        self._throttle_ms = int(settings.presence_refresh_seconds * 1000)
        self._ttl_ms = int(settings.presence_ttl_seconds * 1000)
        self._local: dict[int, dict[int, int]] = {}  # channel -> user -> local sockets
        # Per channel, so one user's add and remove reach Redis in the order they
        # were decided (two pooled connections could swap them).
        self._locks: dict[int, asyncio.Lock] = {}
        self._waiting: dict[int, int] = {}  # callers holding or awaiting each lock
        self._degraded = False

    async def socket_opened(self, channel_id: int, user_id: int) -> None:
        users = self._local.setdefault(channel_id, {})
        held = users.get(user_id, 0)
        users[user_id] = held + 1
        if held == 0:
            await self._sync(channel_id, user_id)

    async def socket_closed(self, channel_id: int, user_id: int) -> None:
        users = self._local.get(channel_id)
        if users is None or user_id not in users:
            return
        held = users[user_id] - 1
        if held:
            users[user_id] = held
            return
        del users[user_id]
        if not users:
            del self._local[channel_id]
        await self._sync(channel_id, user_id)

    @property
    def entry_count(self) -> int:
        """This gateway's entries: (channel, user) pairs with a local socket open."""
        return sum(len(users) for users in self._local.values())

    async def online(self, channel_id: int) -> Online:
        """Who is online now (expired entries swept first). Raises UnavailableError."""
        try:
            async with asyncio.timeout(self._timeout):
                reply = await self._call(self._scripts.presence_read, channel_id, ())
        except _REDIS_FAILURES as exc:
            raise UnavailableError() from exc
        count = int(reply[0])
        user_ids = None if len(reply) < 2 else sorted(int(user) for user in reply[1])
        return Online(count, user_ids)

    async def run(self) -> None:
        """Refresh this gateway's entries every interval, until cancelled."""
        while True:
            await asyncio.sleep(self._interval)  # a clock is what this loop follows
            try:
                await self.refresh()
            except _REDIS_FAILURES as exc:
                self._degrade(exc)
            except Exception:
                log.exception("presence refresh failed")

    async def refresh(self) -> None:
        """Refresh (or re-add) every local entry and sweep expired ones, one script
        call per channel, pipelined. Raises Redis errors."""
        snapshot = {channel_id: list(users) for channel_id, users in self._local.items()}
        calls = [
            (channel_id, users[start : start + _REFRESH_CHUNK])
            for channel_id, users in snapshot.items()
            for start in range(0, len(users), _REFRESH_CHUNK)
        ]
        async with asyncio.timeout(self._timeout):
            await self._call_all(self._scripts.presence_add, calls)
        if self._degraded:
            self._degraded = False
            log.info("presence updates resumed")
        # A socket that closed while the batch was out may have been re-added by it.
        for channel_id, users in snapshot.items():
            local = self._local.get(channel_id, {})
            for user_id in users:
                if user_id not in local:
                    await self._sync(channel_id, user_id)

    async def leave_all(self) -> None:
        """Remove every local entry (at shutdown): its users go offline now, not at expiry."""
        calls = [(channel_id, list(users)) for channel_id, users in self._local.items()]
        self._local.clear()
        try:
            async with asyncio.timeout(self._timeout):
                await self._call_all(self._scripts.presence_remove, calls)
        except _REDIS_FAILURES as exc:
            log.warning("presence entries left to expire", extra={"error": type(exc).__name__})

    async def _sync(self, channel_id: int, user_id: int) -> None:
        """Tell Redis whether `user_id` is online here, as the local count says when
        the channel's turn comes."""
        if self._degraded:
            return  # the next refresh that succeeds catches up
        lock = self._locks.get(channel_id) or self._locks.setdefault(channel_id, asyncio.Lock())
        self._waiting[channel_id] = self._waiting.get(channel_id, 0) + 1
        try:
            async with lock:
                here = user_id in self._local.get(channel_id, ())
                script = self._scripts.presence_add if here else self._scripts.presence_remove
                async with asyncio.timeout(self._timeout):
                    await self._call(script, channel_id, (user_id,))
        except _REDIS_FAILURES as exc:
            self._degrade(exc)
        finally:
            waiting = self._waiting[channel_id] - 1
            if waiting:
                self._waiting[channel_id] = waiting
            else:
                del self._waiting[channel_id]
                del self._locks[channel_id]

    def _degrade(self, exc: BaseException) -> None:
        if not self._degraded:
            self._degraded = True
            log.warning(
                "presence updates paused until Redis answers",
                extra={"error": type(exc).__name__},
            )

    def _script_keys(self, channel_id: int) -> list[str]:
        keys = self._keys
        return [
            keys.presence_entries(channel_id),
            keys.presence_users(channel_id),
            keys.presence_shown(channel_id),
            keys.channel_topic(channel_id),
        ]

    async def _call(
        self,
        script: AsyncScript,
        channel_id: int,
        user_ids: Sequence[int],
        client: Redis | Pipeline | None = None,
    ) -> list[bytes]:
        # The argument order of presence_common.lua.
        args: list[str | int] = [
            self._publish_command,
            channel_id,
            self._max_listed,
            self._throttle_ms,
            self._ttl_ms,
            self.node_id,
            *user_ids,
        ]
        reply: list[bytes] = await script(
            keys=self._script_keys(channel_id), args=args, client=client or self._redis
        )
        return reply

    async def _call_all(self, script: AsyncScript, calls: list[tuple[int, list[int]]]) -> None:
        """Run `script` once per (channel, users), in one round trip on one server."""
        if not calls:
            return
        if self._cluster:
            # A cluster pipeline cannot run scripts; each call goes to its slot's master.
            await asyncio.gather(*(self._call(script, ch, users) for ch, users in calls))
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for channel_id, users in calls:
                await self._call(script, channel_id, users, client=pipe)
            await pipe.execute()
