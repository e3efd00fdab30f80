"""The per-IP HTTP limit, kept in Redis so every replica enforces the same budget."""

from __future__ import annotations

from tests.gateway.api_client import error_of
from tests.gateway.conftest import MakeGateway


async def test_limit_is_shared_by_two_gateways(make_gateway: MakeGateway) -> None:
    gateway_a = await make_gateway(rate_limit_requests=3, rate_limit_window_seconds=60)
    gateway_b = await make_gateway(rate_limit_requests=3, rate_limit_window_seconds=60)
    first = await gateway_a.get("/api/v1/channels")
    assert first.headers["X-RateLimit-Limit"] == "3"
    assert first.headers["X-RateLimit-Remaining"] == "2"
    assert (await gateway_b.get("/api/v1/channels")).status == 200
    assert (await gateway_a.get("/api/v1/channels")).status == 200

    refused = await gateway_b.get("/api/v1/channels")
    assert await error_of(refused) == (429, "rate_limited")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert 1 <= int(refused.headers["X-RateLimit-Reset"]) <= 60


async def test_probes_are_never_limited(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(rate_limit_requests=1)
    for path in ["/", "/healthz", "/readyz"] * 3:
        assert (await gateway.get(path)).status == 200, path


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(rate_limit_requests=1)
    assert (
        await gateway.get("/api/v1/channels", headers={"X-Forwarded-For": "10.0.0.1"})
    ).status == 200
    spoofed = await gateway.get("/api/v1/channels", headers={"X-Forwarded-For": "10.0.0.2"})
    assert spoofed.status == 429


async def test_forwarded_for_is_believed_from_a_trusted_proxy(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(rate_limit_requests=1, trusted_proxies="127.0.0.1")
    for client in ("10.0.0.1", "10.0.0.2"):
        response = await gateway.get("/api/v1/channels", headers={"X-Forwarded-For": client})
        assert response.status == 200, client
    again = await gateway.get("/api/v1/channels", headers={"X-Forwarded-For": "10.0.0.1"})
    assert again.status == 429
