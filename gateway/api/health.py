"""`GET /` (the Go server's health check), `/healthz` (alive), `/readyz` (ready), `/metrics`."""

from __future__ import annotations

import asyncio

from aiohttp import web
from redis.exceptions import RedisError

from gateway.api.common import ok
from gateway.app_keys import BROKER, METRICS, PG_POOL, READINESS, REDIS, SETTINGS
from gateway.metrics import metrics_response
from shared.db.pool import ping
from shared.errors import UnavailableError


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; see gateway/metrics.py for what is counted."""
    return metrics_response(request.app[METRICS].registry)


async def hello(_request: web.Request) -> web.Response:
    return web.Response(text="Hello world")


async def healthz(_request: web.Request) -> web.Response:
    return ok("alive", None)


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
    if not app[BROKER].subscriber.connected.is_set():
        failed.append("pubsub")
    if failed:
        raise UnavailableError(f"not ready: {', '.join(failed)}")
    return ok("ready", None)
