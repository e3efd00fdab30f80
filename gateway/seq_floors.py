"""What this gateway knows exists of each channel's seqs, and the repair of a
counter that went back below it.

Redis can lose acknowledged writes (a restore from an older file, a failover
to a lagging replica, a crash inside `appendfsync everysec`). The channel's
counter then exists but is behind, and would hand out stored or delivered
seqs again. Three checks catch it:

- Every send passes the channel's floor, the highest seq this gateway knows
  exists: PostgreSQL's `max(seq)` when it subscribed, every head it read, every
  seq it delivered. The send script answers `behind` to a counter below it
  (or below the recent stream's top), and `repair` raises the counter to the
  floor and PostgreSQL's `max(seq)` (`shared.seq_counter`) before it sends again.
- After a pub/sub reconnect, when such a loss happens, every subscribed
  channel is checked the same way, in the background (`verify`).
- A live message with a seq already delivered but a newer id (ids grow with
  seqs in a channel) was numbered by a counter that went back at another
  gateway, which knew less: `delivered` reports it, and this gateway repairs.

A raise publishes `channel_rewound`, and each gateway tells its sockets.
Side branch of the send path: a send reads one attribute, a delivery parses
the id and updates two; repairs run once per channel and loss.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.db.messages import max_seq, max_seqs
from shared.db.pool import POSTGRES_OUTAGE_ERRORS
from shared.errors import UnavailableError
from shared.redis_keys import RedisKeys
from shared.scripts import Scripts
from shared.seq_counter import raise_counter
from shared.settings import Settings

log = logging.getLogger(__name__)

# Channels re-checked at once after a reconnect: bounds the Redis calls in flight.
_VERIFY_CONCURRENCY = 32


class Seen:
    """One subscribed channel's seqs as this gateway knows them."""

    __slots__ = ("floor", "newest_id", "newest_seq")

    def __init__(self, floor: int) -> None:
        self.floor = floor  # the highest seq known to exist
        self.newest_id = 0  # the newest message delivered here, by id, and its seq
        self.newest_seq = 0

    def delivered(self, seq: int, message_id: int) -> bool:
        """Note a delivered message; True if it reuses a seq a newer id already had."""
        if seq > self.floor:
            self.floor = seq
        if message_id <= self.newest_id:
            return False  # older than what was delivered: a late copy, no news
        reused = seq <= self.newest_seq
        self.newest_id = message_id
        self.newest_seq = seq
        return reused


class SeqFloors:
    """The subscribed channels' `Seen`, and their counters' repair."""

    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        scripts: Scripts,
        pool: asyncpg.Pool[asyncpg.Record],
        keys: RedisKeys,
    ) -> None:
        self._cluster = settings.redis_cluster
        self._redis = redis
        self._scripts = scripts
        self._pool = pool
        self._keys = keys
        # An entry exists while the channel is subscribed; the sender reads it on
        # every send and the channel topics update it on every delivery.
        self.channels: dict[int, Seen] = {}
        self._repairs: dict[int, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def open(self, channel_id: int) -> None:
        """Start the channel's floor at its highest stored seq. Raises UnavailableError."""
        stored = await self._stored(channel_id)
        self.channels.setdefault(channel_id, Seen(stored))

    def close(self, channel_id: int) -> None:
        self.channels.pop(channel_id, None)

    def observe(self, channel_id: int, seq: int) -> int:
        """Note that `seq` exists (a head just read); return the channel's floor."""
        seen = self.channels.get(channel_id)
        if seen is None:
            return seq
        seen.floor = max(seen.floor, seq)
        return seen.floor

    async def repair(self, channel_id: int) -> None:
        """Raise the channel's counter to its floor and stored max; one run per channel
        at a time, shared by every send that found it behind. Raises UnavailableError."""
        task = self._repairs.get(channel_id)
        if task is None or task.done():
            task = asyncio.create_task(self._repair(channel_id), name="seq-repair")
            self._repairs[channel_id] = task
            task.add_done_callback(lambda done: self._repaired(channel_id, done))
        # Shielded: a sender that gives up must not cancel the others' repair.
        await asyncio.shield(task)

    def repair_soon(self, channel_id: int) -> None:
        """`repair` in the background: another node raised the counter to less than
        this one has seen, or a delivery showed it went back."""
        self._spawn(self.repair(channel_id), "seq-repair-soon")

    def verify(self, channel_ids: list[int]) -> None:
        """Check these channels' counters in the background (after a pub/sub reconnect)."""
        if channel_ids:
            self._spawn(self._verify(channel_ids), "seq-verify")

    async def aclose(self) -> None:
        tasks = [*self._background, *self._repairs.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _repaired(self, channel_id: int, task: asyncio.Task[None]) -> None:
        if self._repairs.get(channel_id) is task:
            del self._repairs[channel_id]
        if not task.cancelled():
            task.exception()  # retrieved: the waiters, if any are left, re-raise it

    async def _repair(self, channel_id: int) -> None:
        await self._raise(channel_id, await self._stored(channel_id))

    async def _verify(self, channel_ids: list[int]) -> None:
        try:
            stored = await max_seqs(self._pool, channel_ids)
        except POSTGRES_OUTAGE_ERRORS as exc:
            # The send script still compares each counter with the floor.
            log.warning("channel counters not re-checked", extra={"error": repr(exc)})
            return
        limit = asyncio.Semaphore(_VERIFY_CONCURRENCY)

        async def check(channel_id: int) -> None:
            async with limit:
                await self._raise(channel_id, stored.get(channel_id, 0))

        results = await asyncio.gather(*(check(c) for c in channel_ids), return_exceptions=True)
        failed = sum(isinstance(result, Exception) for result in results)
        if failed:
            log.warning("channel counters not re-checked", extra={"channels": failed})

    async def _stored(self, channel_id: int) -> int:
        try:
            return await max_seq(self._pool, channel_id)
        except POSTGRES_OUTAGE_ERRORS as exc:
            raise UnavailableError() from exc

    async def _raise(self, channel_id: int, stored: int) -> None:
        seen = self.channels.get(channel_id)
        target = max(stored, seen.floor if seen is not None else 0)
        try:
            raised = await raise_counter(
                self._redis,
                self._scripts.raise_seq,
                self._keys,
                channel_id,
                target,
                cluster=self._cluster,
            )
        except (RedisError, OSError) as exc:
            raise UnavailableError() from exc
        if raised.was_behind:
            log.error(
                "channel seq counter was behind what exists (Redis lost writes): raised",
                extra={"channel_id": channel_id, "from": raised.before, "to": raised.after},
            )
        self.observe(channel_id, raised.after)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning("channel counter repair failed", extra={"error": repr(error)})
