"""What the persistence worker counts, served at `GET /metrics` on `WORKER_METRICS_PORT`.

The worker has no other HTTP surface, so this is a minimal aiohttp server with
that one route (and `/healthz`), started only when the port is set.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from shared.metrics import CONTENT_TYPE, LATENCY_BUCKETS, SIZE_BUCKETS, Registry


class WorkerMetrics:
    def __init__(self) -> None:
        registry = self.registry = Registry()
        self.persisted = registry.counter(
            "persistence_messages_written_total",
            "Messages newly inserted into PostgreSQL (re-deliveries of stored ones not counted).",
        )
        self.insert_transactions = registry.counter(
            "persistence_insert_transactions_total",
            "Insert transactions tried: batches, halves of a rejected batch, single rows.",
        )
        self.seq_conflicts = registry.counter(
            "persistence_seq_conflicts_total",
            "Entries dead-lettered because their (channel_id, seq) is stored under another id.",
        )
        self.acked = registry.counter(
            "persistence_entries_acked_total", "Stream entries acknowledged after their commit."
        )
        self.batch_size = registry.histogram(
            "persistence_batch_size", "Entries per batch written.", SIZE_BUCKETS
        )
        self.write_seconds = registry.histogram(
            "persistence_write_seconds", "One batch's insert and commit.", LATENCY_BUCKETS
        )
        self.dead_letters = registry.counter(
            "persistence_dead_letters_total", "Entries moved to the dead-letter stream."
        )
        self.postgres_retries = registry.counter(
            "persistence_postgres_retries_total", "Batch writes retried after an outage."
        )
        self.redis_errors = registry.counter(
            "persistence_redis_errors_total", "Stream reads or acks that failed and were retried."
        )
        self.reclaimed = registry.counter(
            "persistence_entries_reclaimed_total", "Pending entries taken over from dead peers."
        )
        # Per partition, refreshed by the worker's housekeeping, summed at scrape time.
        self.stream_lag: dict[int, int] = {}
        self.pending: dict[int, int] = {}
        registry.gauge(
            "persistence_stream_lag",
            "Entries in the ingest streams not yet delivered to the group (all partitions).",
            lambda: sum(self.stream_lag.values()),
        )
        registry.gauge(
            "persistence_pending_entries",
            "Entries delivered to the group and not yet acknowledged (all partitions).",
            lambda: sum(self.pending.values()),
        )


@asynccontextmanager
async def metrics_server(metrics: WorkerMetrics, host: str, port: int) -> AsyncIterator[None]:
    """Serve `/metrics` and `/healthz` while the context is open; nothing when port is 0."""
    if port == 0:
        yield
        return

    async def scrape(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.registry.render(), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield
    finally:
        await runner.cleanup()
