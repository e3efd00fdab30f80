"""A channel's messages after a given `seq`, for resume: Redis first, then PostgreSQL.

The send script appends every frame to the channel's capped recent-history
stream under entry id `<seq>-0`, in the same atomic step that publishes it.
So a range read from that stream is contiguous and holds the exact bytes the
live subscribers got. Older messages (trimmed, expired, or lost with a Redis
that restarted without its data) come from PostgreSQL, rebuilt in the same
frame shape (a message in its latest version; the events that changed it,
edits, deletes and reactions, at their own seqs); the rows a worker has not
committed yet are simply absent, so only the contiguous start of a page is
used.

Reads are single-flight: when a Redis reconnect makes every local socket of a
channel catch up from the same `seq`, one read serves them all. That read runs
in a task the backlog owns, which each caller awaits through a shield, so a
caller that is cancelled (its socket closed) leaves the read to the others; the
read is cancelled only when no caller is left. A catch-up asks for its next page
only once the previous one is queued to its socket, so what a catching-up socket
holds is one page plus its outbound queue, whatever the size of the gap.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import cast

import asyncpg
from redis.asyncio import Redis

from gateway.metrics import GatewayMetrics
from gateway.outages import DEPENDENCY_ERRORS
from shared.db.messages import list_messages_after, max_seq
from shared.errors import UnavailableError
from shared.redis_keys import RedisKeys
from shared.wire import stored_frame

# One page of a catch-up: large enough to amortize a round trip, small enough
# that a page of 10 KB frames stays a few MB.
PAGE_SIZE = 256

Frames = Sequence[tuple[int, bytes]]


class Backlog:
    """The resume reads of one gateway. Owns the shared reads in flight; `aclose` ends them."""

    def __init__(
        self,
        redis: Redis,
        pool: asyncpg.Pool[asyncpg.Record],
        keys: RedisKeys,
        metrics: GatewayMetrics,
    ) -> None:
        self._redis = redis
        self._pool = pool
        self._keys = keys
        self._metrics = metrics
        self._in_flight: dict[tuple[int, int], _SharedRead] = {}
        # Every read task until it ends, a cancelled one included: `aclose` waits for them.
        self._tasks: set[asyncio.Task[Frames]] = set()

    async def head(self, channel_id: int) -> int:
        """The channel's last assigned seq (0 for a channel without messages)."""
        try:
            value = await self._redis.get(self._keys.channel_seq(channel_id))
            if value is not None:
                return int(value)
            # No counter: nothing sent since Redis lost or never had it. The
            # send path seeds it from the same place.
            return await max_seq(self._pool, channel_id)
        except DEPENDENCY_ERRORS as exc:
            raise UnavailableError() from exc

    async def page_after(self, channel_id: int, after_seq: int) -> Frames:
        """Up to PAGE_SIZE frames with seqs after_seq+1, after_seq+2, ... with no hole.

        Empty when the next message is available nowhere yet (not sent, or
        neither in Redis nor written by a worker). Raises UnavailableError.
        Cancelling one caller never reaches the others reading the same page:
        the read runs in a task of its own, which ends early only once every
        caller has gone.
        """
        key = (channel_id, after_seq)
        shared = self._in_flight.get(key)
        if shared is None:
            self._metrics.backlog_reads.inc()
            task = asyncio.create_task(self._read(channel_id, after_seq), name="backlog-read")
            shared = self._in_flight[key] = _SharedRead(task)
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._read_done, key, shared))
        else:
            self._metrics.backlog_read_joins.inc()
        shared.waiters += 1
        try:
            return await asyncio.shield(shared.task)
        finally:
            shared.waiters -= 1
            if not shared.waiters and not shared.task.done():
                shared.task.cancel()  # nobody is left to use the page: stop the query
                self._drop(key, shared)

    async def aclose(self) -> None:
        """Cancel the reads still in flight and wait for them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _read_done(
        self, key: tuple[int, int], shared: _SharedRead, task: asyncio.Task[Frames]
    ) -> None:
        self._tasks.discard(task)
        self._drop(key, shared)
        if not task.cancelled():
            task.exception()  # retrieved: every waiter re-raises it, or none is left to

    def _drop(self, key: tuple[int, int], shared: _SharedRead) -> None:
        # A cancelled read may be replaced by a new one before its task ends.
        if self._in_flight.get(key) is shared:
            del self._in_flight[key]

    async def _read(self, channel_id: int, after_seq: int) -> Frames:
        first = after_seq + 1
        try:
            entries = cast(
                "list[tuple[bytes, dict[bytes, bytes]]]",
                await self._redis.xrange(
                    self._keys.channel_recent(channel_id),
                    min=f"{first}-0",
                    max="+",
                    count=PAGE_SIZE,
                ),
            )
            if entries and _seq_of_entry(entries[0][0]) == first:
                return [(_seq_of_entry(entry_id), fields[b"f"]) for entry_id, fields in entries]
            stored = await list_messages_after(self._pool, channel_id, after_seq, PAGE_SIZE)
        except DEPENDENCY_ERRORS as exc:
            raise UnavailableError() from exc
        frames: list[tuple[int, bytes]] = []
        for message in stored:
            if message.seq != first + len(frames):
                break  # a row a worker has not committed yet: stop before the hole
            frames.append((message.seq, stored_frame(message)))
        return frames


class _SharedRead:
    """One page read in flight and how many catch-ups wait for it."""

    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Task[Frames]) -> None:
        self.task = task
        self.waiters = 0


def _seq_of_entry(entry_id: bytes) -> int:
    return int(entry_id.partition(b"-")[0])
