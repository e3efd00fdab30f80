"""Writing one batch of messages to PostgreSQL: one transaction, bad rows isolated.

Data path, last step: the worker (`persistence/worker.py`) hands each batch it
read here. The batch is one `shared.db.messages.insert_messages` in one
transaction, idempotent on the message id; outages are waited out with the
rows kept in memory. A batch that PostgreSQL rejects (a data error) is split
in halves, and each half written again, until the bad rows stand alone: one
bad row among N costs about 2 log2(N) transactions, not N. A lone row is
retried `worker_max_attempts` times in all and then given back as failed,
with its reason, for the worker to dead-letter.

A row whose `(channel_id, seq)` is stored under another message id is a seq
handed out twice, after Redis lost writes: it fails as a seq conflict, and the
worker raises that channel's counter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import asyncpg

from persistence.entries import Entry
from persistence.metrics import WorkerMetrics
from shared.backoff import Backoff
from shared.db.messages import MessageRow, insert_messages, is_seq_conflict, max_seq
from shared.db.pool import POSTGRES_OUTAGE_ERRORS
from shared.settings import Settings

_log = logging.getLogger(__name__)

# SQLSTATE classes that say "try again later", not "this row is bad":
# connection (08), transaction rollback such as deadlock (40), insufficient
# resources (53), operator intervention such as admin shutdown (57), system (58).
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})


def is_transient(exc: Exception) -> bool | None:
    """True for an outage (retry the same write), False for a data error, None for a bug."""
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None) or ""
        return sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
    if isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError):
        return False  # asyncpg's client-side DataError: an argument it cannot encode
    if isinstance(exc, POSTGRES_OUTAGE_ERRORS):
        return True  # closed or broken connection, refused connect, timeout
    return None


@dataclass
class Written:
    """What writing a batch came to."""

    inserted: int = 0  # new rows (re-delivered ones were there already)
    failed: list[tuple[Entry, str]] = field(default_factory=list)  # with the reason
    # channel_id -> its lowest seq found stored under another id
    seq_conflicts: dict[int, int] = field(default_factory=dict)

    def add(self, other: Written) -> None:
        self.inserted += other.inserted
        self.failed += other.failed
        for channel_id, seq in other.seq_conflicts.items():
            self.seq_conflicts[channel_id] = min(seq, self.seq_conflicts.get(channel_id, seq))


class BatchWriter:
    def __init__(
        self, pool: asyncpg.Pool[asyncpg.Record], settings: Settings, metrics: WorkerMetrics
    ) -> None:
        self._pool = pool
        self._max_attempts = settings.worker_max_attempts
        self._timeout = settings.db_command_timeout_seconds
        self._metrics = metrics

    async def write(self, parsed: list[tuple[Entry, MessageRow]]) -> Written:
        """Write all rows in one transaction; on a data error, isolate the bad rows.

        The good rows are stored, and only rows that failed `worker_max_attempts`
        times come back. Waits out outages; an unexpected error propagates.
        """
        if not parsed:
            return Written()
        started = time.perf_counter()
        inserted, error = await self._insert_until_committed([row for _, row in parsed])
        self._metrics.write_seconds.observe(time.perf_counter() - started)
        if error is None:
            return Written(inserted)
        _log.warning(
            "batch rejected, isolating its bad rows",
            extra={"batch_size": len(parsed), "error": repr(error)},
        )
        return await self._isolate(parsed, error)

    async def stored_max(self, channel_id: int) -> int:
        """The channel's highest stored seq, waiting out outages."""
        backoff = Backoff()
        while True:
            try:
                async with asyncio.timeout(self._timeout):
                    return await max_seq(self._pool, channel_id)
            except POSTGRES_OUTAGE_ERRORS as exc:
                await self._unavailable(backoff, exc, channel_id=channel_id)

    async def _isolate(self, part: list[tuple[Entry, MessageRow]], error: Exception) -> Written:
        """Write the rows of `part`, which failed as a whole with `error`, by halves.

        A lone row is retried at once: only a race (the same row committed by a
        peer meanwhile) can clear a data error, not time.
        """
        if len(part) > 1:
            written = Written()
            middle = len(part) // 2
            for half in (part[:middle], part[middle:]):
                inserted, half_error = await self._insert_until_committed([r for _, r in half])
                if half_error is None:
                    written.inserted += inserted
                else:
                    written.add(await self._isolate(half, half_error))
            return written
        [(entry, row)] = part
        for _attempt in range(1, self._max_attempts):
            inserted, retry_error = await self._insert_until_committed([row])
            if retry_error is None:
                return Written(inserted)
            error = retry_error
        attempts = f"(after {self._max_attempts} attempts)"
        if is_seq_conflict(error):
            self._metrics.seq_conflicts.inc()
            reason = (
                f"seq conflict: channel {row.channel_id} seq {row.seq} is stored under another"
                f" message id (Redis lost writes and handed the seq out again) {attempts}"
            )
            return Written(failed=[(entry, reason)], seq_conflicts={row.channel_id: row.seq})
        return Written(failed=[(entry, f"{type(error).__name__}: {error} {attempts}")])

    async def _insert_until_committed(self, rows: list[MessageRow]) -> tuple[int, Exception | None]:
        """Insert in one transaction, waiting out outages.

        Returns the rows inserted and None, or 0 and the data error. The rows
        stay in memory across retries, and the insert is idempotent, so an
        outage neither loses nor duplicates them.
        """
        backoff = Backoff()
        while True:
            self._metrics.insert_transactions.inc()
            try:
                async with (
                    asyncio.timeout(self._timeout),
                    self._pool.acquire() as conn,
                    conn.transaction(),
                ):
                    inserted = await insert_messages(conn, rows)
            except Exception as exc:
                transient = is_transient(exc)
                if transient is None:
                    raise
                if not transient:
                    return 0, exc
                await self._unavailable(backoff, exc, batch_size=len(rows))
            else:
                return inserted, None

    async def _unavailable(self, backoff: Backoff, exc: Exception, **context: int) -> None:
        delay = backoff.next_delay()
        self._metrics.postgres_retries.inc()
        _log.warning(
            "postgresql unavailable, keeping the rows and retrying",
            extra={**context, "retry_in_s": delay, "error": repr(exc)},
        )
        await asyncio.sleep(delay)
