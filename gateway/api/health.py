"""`GET /` (the Go server's health check), `/healthz` (alive), `/readyz` (ready), `/metrics`."""

from __future__ import annotations

import asyncio

from aiohttp import web
from redis.exceptions import RedisError

from gateway.api.common import ok
from gateway.api.docs import Raw, documented
from gateway.app_keys import METRICS, PG_POOL, READINESS, REDIS, SETTINGS, TOPICS
from gateway.metrics import metrics_response
from shared.db.pool import ping
from shared.errors import UnavailableError

_TEXT = "text/plain"


@documented(
    "Prometheus metrics of this gateway",
    description="Keep it off the public load balancer.",
    raw=Raw(_TEXT, {"type": "string"}),
    storage=False,
)
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; see gateway/metrics.py for what is counted."""
    return metrics_response(request.app[METRICS].registry)


@documented(
    "The Go server's health check",
    raw=Raw(_TEXT, {"type": "string", "const": "Hello world"}),
    storage=False,
)
async def hello(_request: web.Request) -> web.Response:
    return web.Response(text="Hello world")


@documented("Alive: the process answers (dependencies not checked)", storage=False)
async def healthz(_request: web.Request) -> web.Response:
    return ok("alive", None)


@documented(
    "Ready: not draining, and PostgreSQL, Redis and the subscription answer",
    description="503 `unavailable` says `draining` or which dependencies failed.",
    errors=(UnavailableError,),
)
async def readyz(request: web.Request) -> web.Response:
    """Ready when not draining and PostgreSQL, Redis and the subscription answer."""
    app = request.app
    if app[READINESS].draining:
        raise UnavailableError("draining")
    timeout = app[SETTINGS].redis_timeout_seconds
    failed: list[str] = []
    try:
        await ping(app[PG_POOL])
    except Exception:  # any failure means not ready; the kind is irrelevant to a probe
        failed.append("postgres")
    try:
        async with asyncio.timeout(timeout):
            await app[REDIS].ping()
    except (RedisError, OSError, TimeoutError):
        failed.append("redis")
    if not app[TOPICS].subscriber.connected.is_set():
        failed.append("pubsub")
    if failed:
        raise UnavailableError(f"not ready: {', '.join(failed)}")
    return ok("ready", None)
