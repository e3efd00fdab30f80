"""Liveness, readiness, the Go server's `GET /`, and CORS."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from gateway.app_keys import READINESS
from shared.local_servers import free_port
from tests.gateway.api_client import error_of


async def test_root_says_hello_world(gateway: TestClient[Any, Any]) -> None:
    response = await gateway.get("/")
    assert (response.status, await response.text()) == (200, "Hello world")


async def test_healthz_and_readyz_are_ok_with_both_dependencies_up(
    gateway: TestClient[Any, Any],
) -> None:
    assert (await gateway.get("/healthz")).status == 200
    ready = await gateway.get("/readyz")
    assert (ready.status, (await ready.json())["status"]) == (200, "success")


async def test_readyz_is_503_while_draining(gateway: TestClient[Any, Any]) -> None:
    gateway.app[READINESS].draining = True
    assert await error_of(await gateway.get("/readyz")) == (503, "unavailable")


async def test_cors_preflight_allows_configured_origin_only(gateway: TestClient[Any, Any]) -> None:
    def preflight(origin: str) -> dict[str, str]:
        return {"Origin": origin, "Access-Control-Request-Method": "POST"}

    allowed = await gateway.options("/api/v1/auth/login", headers=preflight("http://allowed.test"))
    denied = await gateway.options("/api/v1/auth/login", headers=preflight("https://evil.test"))
    assert allowed.headers["Access-Control-Allow-Origin"] == "http://allowed.test"
    assert "Access-Control-Allow-Origin" not in denied.headers


async def test_responses_carry_a_request_id(gateway: TestClient[Any, Any]) -> None:
    echoed = await gateway.get("/api/v1/channels", headers={"X-Request-ID": "req-123"})
    generated = await gateway.get("/api/v1/channels")
    assert echoed.headers["X-Request-ID"] == "req-123"
    assert len(generated.headers["X-Request-ID"]) == 32


async def test_readyz_is_503_when_redis_is_unreachable(make_gateway: Any) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    gateway = await make_gateway(redis_url=dead_redis, redis_timeout_seconds=0.5)
    response = await gateway.get("/readyz")
    assert await error_of(response) == (503, "unavailable")
    assert "redis" in (await response.json())["message"]
    assert (await gateway.get("/healthz")).status == 200
