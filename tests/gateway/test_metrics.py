"""`GET /metrics`: Prometheus text that Prometheus's own parser reads, with figures that move."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.api_client import connect, receive_messages, receive_until, room, send_texts
from tests.gateway.conftest import MakeGateway


async def _scrape(gateway: TestClient[Any, Any]) -> dict[str, float]:
    response = await gateway.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


async def test_metrics_count_sends_deliveries_and_refusals(gateway: TestClient[Any, Any]) -> None:
    channel_id, (alice, bob) = await room(gateway, "alice", "bob")
    ws_alice = await connect(gateway, alice, channel_id)
    ws_bob = await connect(gateway, bob, channel_id)
    before = await _scrape(gateway)
    assert before["chat_connections"] == 2
    assert before["chat_subscriptions"] == 1

    await send_texts(ws_alice, 3, "m")
    await receive_messages(ws_bob, 3)
    await ws_alice.send_str("{not json")
    await receive_until(ws_alice, "error")
    after = await _scrape(gateway)

    assert after["chat_messages_in_total"] - before["chat_messages_in_total"] == 3
    assert after["chat_frames_out_total"] - before["chat_frames_out_total"] == 6
    assert after["chat_send_seconds_count"] - before["chat_send_seconds_count"] == 3
    assert after["chat_delivery_seconds_count"] - before["chat_delivery_seconds_count"] == 3
    assert after["chat_send_rejections_total{code=invalid_json}"] == 1
    assert after["chat_send_seconds_bucket{le=+Inf}"] == after["chat_send_seconds_count"]


async def test_metrics_are_not_rate_limited(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(rate_limit_requests=1)
    assert (await gateway.get("/api/v1/channels")).status != 429
    assert (await gateway.get("/api/v1/channels")).status == 429
    for _ in range(3):
        assert (await gateway.get("/metrics")).status == 200
    assert (await _scrape(gateway))["http_rate_limited_total"] == 1
