"""The worker's `/metrics` endpoint, served only when WORKER_METRICS_PORT is set."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from persistence.metrics import WorkerMetrics, metrics_server
from shared.local_servers import free_port


async def test_metrics_server_serves_what_the_worker_counted() -> None:
    metrics = WorkerMetrics()
    metrics.persisted.inc(5)
    metrics.batch_size.observe(5)
    metrics.pending.update({0: 2, 3: 1})
    port = free_port()
    async with (
        metrics_server(metrics, "127.0.0.1", port),
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }
    assert samples["persistence_messages_written_total"] == 5
    assert samples["persistence_batch_size_count"] == 1
    assert samples["persistence_pending_entries"] == 3


async def test_no_port_means_no_server() -> None:
    port = free_port()
    async with metrics_server(WorkerMetrics(), "127.0.0.1", 0), aiohttp.ClientSession() as session:
        try:
            await session.get(f"http://127.0.0.1:{port}/metrics")
        except aiohttp.ClientConnectorError:
            return
    raise AssertionError("something answered on a port nobody was given")
