"""The persistence worker: ingest streams -> PostgreSQL, at least once, written once.

Data path, last step: the gateway's send script XADDs every message to its
partition's ingest stream. Each partition's stream has its own `persistence`
consumer group, and each worker is one consumer in every one of them: it runs
one loop per partition, so a read touches one stream (one slot in a Redis
Cluster) and one slow partition never delays another, while the workers
share each partition's entries through its group. A cycle reads a batch,
writes it in one transaction (`shared.db.messages.insert_messages`,
idempotent on the message id) and acks the entries only after the commit, so
a crash at any point re-delivers instead of losing, and a re-delivery
inserts nothing twice.

Recovery: at start each loop re-reads the worker's own pending entries of its
partition and claims those a dead peer left idle (XAUTOCLAIM); it repeats the
claim periodically. Entries that cannot be stored (malformed, or rejected by
PostgreSQL `worker_max_attempts` times) go to the partition's dead-letter
stream and are acked, so one bad entry never blocks the rest (the writer,
`persistence/writer.py`, isolates them). Streams are trimmed only below the
group's oldest pending entry, i.e. only what is persisted.

A row whose `(channel_id, seq)` is stored under another id means Redis lost
writes and handed that seq out again: it is dead-lettered as a seq conflict,
and the channel's counter is raised past what PostgreSQL holds (which also
tells every gateway of the channel, `shared.seq_counter`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import asyncpg
import redis.asyncio as aioredis
import redis.exceptions

from persistence.dead_letters import Rejected, add_dead_letters
from persistence.entries import Entry, MalformedEntryError, entries_of, parse_entry, text
from persistence.metrics import WorkerMetrics
from persistence.outage_log import OutageLog
from persistence.writer import BatchWriter, is_transient
from shared.backoff import Backoff
from shared.db.messages import MessageRow
from shared.db.pool import create_pool
from shared.redis_client import REDIS_OUTAGE_ERRORS, RedisClient, close_redis, connect_redis
from shared.redis_keys import CONSUMER_GROUP, RedisKeys
from shared.scripts import Scripts, register_scripts
from shared.seq_counter import raise_counter
from shared.settings import Settings

_log = logging.getLogger(__name__)

# Reclaiming and trimming cost a few round trips per partition: often enough
# that a dead peer's entries wait seconds, not minutes, but not every batch.
_HOUSEKEEPING_INTERVAL_S = 5.0


class Worker:
    """One consumer of every partition's persistence group.

    Pass `redis` and `pool` to use your own clients (they are left open);
    otherwise the worker creates them from `settings` and closes them.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        redis: RedisClient | None = None,
        pool: asyncpg.Pool[asyncpg.Record] | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self._settings = settings
        self.metrics = metrics or WorkerMetrics()
        self._redis_outage = OutageLog(_log, "redis")
        self._keys = RedisKeys(settings.redis_key_prefix, settings.redis_partitions)
        self._streams = self._keys.ingest_streams()
        self._partitions = {stream: p for p, stream in enumerate(self._streams)}
        self.consumer = settings.worker_consumer_name or f"{socket.gethostname()}-{os.getpid()}"
        self._given_redis = redis
        self._given_pool = pool
        # Set by _clients() for the duration of run() / run_until_idle().
        self._redis: RedisClient
        self._scripts: Scripts
        self._pool: asyncpg.Pool[asyncpg.Record]
        self._writer: BatchWriter

    async def run(self, stop: asyncio.Event) -> None:
        """Persist entries until `stop` is set, then finish the in-flight batches and return.

        A read blocks at most `worker_block_ms`, so after `stop` the worker
        returns within one block time plus the write of the last batch of
        each partition (which is acked before returning). Redis and
        PostgreSQL outages are waited out with backoff, per partition (in a
        cluster, one master down stalls only its own partitions); an
        unexpected error propagates.
        """
        async with self._clients(stop), asyncio.TaskGroup() as tasks:
            tasks.create_task(self._keep_alive(stop), name="persistence-heartbeat")
            for partition in range(len(self._streams)):
                tasks.create_task(
                    self._run_partition(partition, stop), name=f"persistence-{partition}"
                )

    async def _run_partition(self, partition: int, stop: asyncio.Event) -> None:
        stream = self._streams[partition]
        recovered = False
        backoff = Backoff()
        # Staggered, so the partitions' housekeeping does not all land at once.
        stagger = _HOUSEKEEPING_INTERVAL_S * partition / len(self._streams)
        next_housekeeping = time.monotonic() + _HOUSEKEEPING_INTERVAL_S + stagger
        while not stop.is_set():
            try:
                if not recovered:
                    await self._ensure_group(stream)
                    await self._recover(stream)
                    recovered = True
                if time.monotonic() >= next_housekeeping:
                    await self._reclaim(stream)
                    await self._trim(stream)
                    next_housekeeping = time.monotonic() + _HOUSEKEEPING_INTERVAL_S
                await self._persist(await self._read_batch(stream))
            except REDIS_OUTAGE_ERRORS as exc:
                self.metrics.redis_errors.inc()
                self._redis_outage.failed(exc, partition=partition)
                await backoff.sleep(stop)
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # The stream or group was deleted under us: recreate and recover.
                _log.warning(
                    "consumer group missing, recreating",
                    extra={"partition": partition, "error": str(exc)},
                )
                recovered = False
            else:
                backoff = Backoff()
                self._redis_outage.succeeded()

    async def run_until_idle(self) -> int:
        """Recover, then read without blocking until nothing is left; return entries persisted.

        For tests and one-shot drains: no clock waits. Goes through the
        partitions one after the other and trims each at the end.
        """
        async with self._clients(None):
            persisted = 0
            for stream in self._streams:
                await self._ensure_group(stream)
                persisted += await self._recover(stream)
                while entries := await self._read_new(stream, None):
                    persisted += await self._persist(entries)
                await self._trim(stream)
            return persisted

    @contextlib.asynccontextmanager
    async def _clients(self, stop: asyncio.Event | None) -> AsyncIterator[None]:
        """Use the injected clients, or create them and close them on exit."""
        self._redis = self._given_redis or await connect_redis(
            self._settings,
            # A blocking read legitimately waits block_ms before it answers.
            socket_timeout=self._settings.redis_timeout_seconds
            + self._settings.worker_block_ms / 1000,
        )
        self._scripts = register_scripts(self._redis)
        try:
            self._pool = self._given_pool or await self._open_pool(stop)
            self._writer = BatchWriter(self._pool, self._settings, self.metrics)
            try:
                yield
            finally:
                if self._given_pool is None:
                    await self._close_pool()
        finally:
            if self._given_redis is None:
                await close_redis(self._redis)

    async def _open_pool(self, stop: asyncio.Event | None) -> asyncpg.Pool[asyncpg.Record]:
        backoff = Backoff()
        while True:
            try:
                return await create_pool(self._settings)
            except Exception as exc:
                if not is_transient(exc) or (stop is not None and stop.is_set()):
                    raise
                _log.warning(
                    "postgresql unavailable at start, retrying", extra={"error": repr(exc)}
                )
                await backoff.sleep(stop)

    async def _close_pool(self) -> None:
        try:
            async with asyncio.timeout(self._settings.db_command_timeout_seconds):
                await self._pool.close()
        except TimeoutError:
            # A connection stuck in a query must not hold the process past shutdown.
            self._pool.terminate()

    async def _ensure_group(self, stream: str) -> None:
        try:
            # Start id 0, not $: entries added before any worker ran are persisted too.
            await self._redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _keep_alive(self, stop: asyncio.Event) -> None:
        """Refresh the heartbeat key every block time until `stop`."""
        interval = self._settings.worker_block_ms / 1000
        # Expires unless refreshed: a refresh is due every block time.
        ttl_ms = 3 * self._settings.worker_block_ms + int(
            self._settings.redis_timeout_seconds * 1000
        )
        key = self._keys.worker_health(self.consumer)
        while not stop.is_set():
            try:
                await self._redis.set(key, str(int(time.time() * 1000)), px=ttl_ms)
            except REDIS_OUTAGE_ERRORS as exc:
                _log.debug("heartbeat not written", extra={"error": repr(exc)})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await stop.wait()

    async def _read_batch(self, stream: str) -> list[Entry]:
        """Block for new entries; if only a few came, linger so more join the same batch.

        A read returns as soon as one entry exists, so under a steady trickle
        every message would cost its own transaction and ack. Lingering
        `worker_linger_ms` trades that much persistence delay (the message is
        already durable in the stream) for batches many times larger.
        """
        settings = self._settings
        entries = await self._read_new(stream, settings.worker_block_ms)
        if entries and len(entries) < settings.worker_batch_size and settings.worker_linger_ms:
            await asyncio.sleep(settings.worker_linger_ms / 1000)
            entries += await self._read_new(
                stream, None, count=settings.worker_batch_size - len(entries)
            )
        return entries

    async def _read_new(
        self, stream: str, block_ms: int | None, count: int | None = None
    ) -> list[Entry]:
        response = await self._redis.xreadgroup(
            CONSUMER_GROUP,
            self.consumer,
            {stream: ">"},
            count=count or self._settings.worker_batch_size,
            block=block_ms,
        )
        return entries_of(response)

    async def _recover(self, stream: str) -> int:
        """Persist this consumer's own pending entries (a previous life's), then claim idle ones."""
        persisted = 0
        cursor = "0"
        while True:
            response = await self._redis.xreadgroup(
                CONSUMER_GROUP,
                self.consumer,
                {stream: cursor},
                count=self._settings.worker_batch_size,
            )
            entries = entries_of(response)
            # The history is done when a read returns nothing past the cursor.
            if not entries:
                break
            persisted += await self._persist(entries)
            cursor = entries[-1].entry_id
        return persisted + await self._reclaim(stream)

    async def _reclaim(self, stream: str) -> int:
        """Take over entries pending longer than `worker_claim_idle_ms` and persist them."""
        persisted = 0
        cursor = "0-0"
        while True:
            response = await self._redis.xautoclaim(
                stream,
                CONSUMER_GROUP,
                self.consumer,
                self._settings.worker_claim_idle_ms,
                cursor,
                count=self._settings.worker_batch_size,
            )
            entries = [Entry(stream, text(eid), fields) for eid, fields in response[1]]
            if len(response) > 2 and response[2]:
                # Trimmed while pending: only possible if something else trimmed the stream.
                _log.error(
                    "pending entries were deleted before being persisted",
                    extra={"stream": stream, "entry_ids": [text(i) for i in response[2]]},
                )
            if entries:
                self.metrics.reclaimed.inc(len(entries))
                _log.info("claimed idle entries", extra={"stream": stream, "count": len(entries)})
                persisted += await self._persist(entries)
            cursor = text(response[0])
            if cursor == "0-0":
                return persisted

    async def _persist(self, entries: list[Entry]) -> int:
        """Write, dead-letter what cannot be written, then ack all.

        Returns the entries now stored (written, or found stored already).
        """
        if not entries:
            return 0
        parsed: list[tuple[Entry, MessageRow]] = []
        rejected: list[Rejected] = []
        for entry in entries:
            try:
                parsed.append((entry, parse_entry(entry.fields)))
            except MalformedEntryError as exc:
                rejected.append(self._reject(entry, f"malformed entry: {exc}"))
        metrics = self.metrics
        metrics.batch_size.observe(len(entries))
        written = await self._writer.write(parsed)
        rejected += [self._reject(entry, reason) for entry, reason in written.failed]
        await self._dead_letter(rejected)
        await self._raise_counters(written.seq_conflicts)
        await self._ack(entries)
        metrics.acked.inc(len(entries))
        metrics.persisted.inc(written.inserted)
        return len(parsed) - len(written.failed)

    def _reject(self, entry: Entry, reason: str) -> Rejected:
        partition = self._partitions[entry.stream]
        return Rejected(partition, entry.stream, entry.entry_id, entry.fields, reason)

    async def _raise_counters(self, seq_conflicts: dict[int, int]) -> None:
        """Raise the counter of each channel that handed a stored seq out again past what
        PostgreSQL holds, and have its gateways tell the sockets that saw those seqs."""
        for channel_id, first_conflict in seq_conflicts.items():
            stored = await self._writer.stored_max(channel_id)
            await self._retry_redis(
                "raise counter",
                functools.partial(self._raise_counter, channel_id, stored, first_conflict),
            )

    async def _raise_counter(self, channel_id: int, stored: int, first_conflict: int) -> None:
        raised = await raise_counter(
            self._redis,
            self._scripts.raise_seq,
            self._keys,
            channel_id,
            stored,
            cluster=self._settings.redis_cluster,
            known_good=first_conflict - 1,
        )
        _log.error(
            "channel handed out stored seqs again (Redis lost writes): counter raised",
            extra={"channel_id": channel_id, "from": raised.before, "to": raised.after},
        )

    async def _dead_letter(self, rejected: list[Rejected]) -> None:
        if rejected:
            self.metrics.dead_letters.inc(len(rejected))
            # add_dead_letters only pipelines XADDs, which a RedisCluster serves alike.
            client = cast(aioredis.Redis, self._redis)
            await self._retry_redis(
                "dead-letter", lambda: add_dead_letters(client, self._keys, rejected)
            )

    async def _ack(self, entries: list[Entry]) -> None:
        by_stream: dict[str, list[str]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry.entry_id)

        async def ack() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                for stream, ids in by_stream.items():
                    pipe.xack(stream, CONSUMER_GROUP, *ids)
                await pipe.execute()

        await self._retry_redis("ack", ack)

    async def _retry_redis(self, what: str, op: Callable[[], Awaitable[None]]) -> None:
        # The batch is committed: retrying here, not from the top, avoids re-writing it.
        backoff = Backoff()
        while True:
            try:
                await op()
            except REDIS_OUTAGE_ERRORS as exc:
                self.metrics.redis_errors.inc()
                self._redis_outage.failed(exc, during=what)
                await backoff.sleep()
            else:
                self._redis_outage.succeeded()
                return

    def _record_backlog(self, stream: str, groups: list[Any], pending: dict[str, Any]) -> None:
        partition = self._partitions[stream]
        self.metrics.pending[partition] = int(pending["pending"])
        for group in groups:
            if text(group["name"]) == CONSUMER_GROUP and group.get("lag") is not None:
                self.metrics.stream_lag[partition] = int(group["lag"])

    async def _trim(self, stream: str) -> None:
        """Trim the stream below the oldest entry the group has not acked."""
        # One MULTI so the pending summary and last-delivered id are a consistent snapshot.
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xinfo_groups(stream)
            pipe.xpending(stream, CONSUMER_GROUP)
            groups, pending = await pipe.execute()
        self._record_backlog(stream, groups, pending)
        if pending["pending"]:
            min_id = text(pending["min"])
        else:
            delivered = [
                g["last-delivered-id"] for g in groups if text(g["name"]) == CONSUMER_GROUP
            ]
            if not delivered:
                return
            min_id = text(delivered[0])
        # MINID keeps ids >= min_id: the oldest pending entry always survives.
        removed = await self._redis.xtrim(stream, minid=min_id, approximate=False)
        if removed:
            _log.debug("stream trimmed", extra={"stream": stream, "removed": removed})
