"""The gateway application: routes, middlewares, and the lifetime of its resources.

`create_app(settings)` does no I/O. Resources open in cleanup contexts, in
dependency order (PostgreSQL -> Redis -> broker and hub), and close in reverse.
On shutdown the node first reports not ready, then closes every chat socket
with 1012 (service restart) so clients reconnect to another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp_cors
from aiohttp import web
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.api import auth, channels, health, users
from gateway.app_keys import (
    BROKER,
    HUB,
    KEYS,
    PG_POOL,
    READINESS,
    REDIS,
    SCRIPTS,
    SETTINGS,
    Readiness,
)
from gateway.broker import Broker
from gateway.chat import chat_socket
from gateway.hub import Hub
from gateway.middlewares import error_middleware, rate_limit_middleware, request_id_middleware
from shared.db.pool import create_pool
from shared.errors import CloseCode
from shared.redis_keys import RedisKeys
from shared.scripts import register_scripts
from shared.settings import Settings

# REST bodies are small; anything bigger is refused with 413 before parsing.
_MAX_REQUEST_BYTES = 64 * 1024


def create_app(settings: Settings) -> web.Application:
    settings.signing_key()  # fail at start, not at the first log-in, when JWT_SECRET is missing
    app = web.Application(
        middlewares=[request_id_middleware, error_middleware, rate_limit_middleware],
        client_max_size=_MAX_REQUEST_BYTES,
    )
    app[SETTINGS] = settings
    app[KEYS] = RedisKeys(settings.redis_key_prefix, settings.redis_partitions)
    app[READINESS] = Readiness()
    app.cleanup_ctx.extend([_postgres, _redis, _broker])
    app.on_shutdown.append(_drain)
    _add_routes(app, settings)
    return app


def _add_routes(app: web.Application, settings: Settings) -> None:
    app.router.add_get("/", health.hello)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/api/v1/chat/{channel_id}", chat_socket)
    rest = [
        app.router.add_post("/api/v1/auth/signup", auth.signup),
        app.router.add_post("/api/v1/auth/login", auth.login),
        app.router.add_get("/api/v1/auth/me", auth.me),
        app.router.add_put("/api/v1/auth/change-password", auth.change_password),
        app.router.add_get("/api/v1/users", users.list_users),
        app.router.add_put("/api/v1/users/edit", users.edit_user),
        app.router.add_get("/api/v1/users/{id}", users.get_user),
        app.router.add_get("/api/v1/channels", channels.list_channels),
        app.router.add_post("/api/v1/channels/new", channels.new_channel),
        app.router.add_post("/api/v1/channels/join", channels.join_channel),
        app.router.add_post("/api/v1/channels/leave", channels.leave_channel),
        app.router.add_get("/api/v1/channels/{id}", channels.get_channel),
        app.router.add_get("/api/v1/channels/{id}/members", channels.list_members),
        app.router.add_get("/api/v1/channels/{id}/messages", channels.list_messages),
    ]
    _enable_cors(app, settings, rest)


def _enable_cors(app: web.Application, settings: Settings, routes: list[web.AbstractRoute]) -> None:
    options = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        allow_credentials=False,
        allow_headers=("Authorization", "Content-Type", "X-Request-ID"),
        expose_headers=(
            "X-Request-ID",
            "Retry-After",
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
        ),
        allow_methods=("GET", "POST", "PUT", "OPTIONS"),
        max_age=600,
    )
    cors = aiohttp_cors.setup(app, defaults=dict.fromkeys(settings.allowed_origins, options))
    for route in routes:
        cors.add(route)


async def _postgres(app: web.Application) -> AsyncIterator[None]:
    app[PG_POOL] = await create_pool(app[SETTINGS])
    yield
    await app[PG_POOL].close()


async def _redis(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    redis = Redis.from_url(
        settings.redis_url.get_secret_value(),
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        # Never retried by the client: a re-sent send script would store the
        # message twice. Callers decide (clients re-send with their client_id).
        retry=Retry(NoBackoff(), 0),
    )
    app[REDIS] = redis
    app[SCRIPTS] = register_scripts(redis)
    yield
    await redis.aclose()


async def _broker(app: web.Application) -> AsyncIterator[None]:
    broker = Broker(app[SETTINGS], app[REDIS], app[SCRIPTS], app[PG_POOL])
    hub = Hub(broker)
    broker.bind(hub)
    app[BROKER] = broker
    app[HUB] = hub
    listener = asyncio.create_task(broker.subscriber.run(), name="pubsub-listener")
    try:
        async with asyncio.timeout(app[SETTINGS].redis_timeout_seconds):
            await broker.subscriber.connected.wait()
    except TimeoutError:
        pass  # start anyway: /readyz reports "pubsub" until the listener connects
    yield
    listener.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await listener
    await broker.aclose()


async def _drain(app: web.Application) -> None:
    app[READINESS].draining = True
    app[HUB].close_all(CloseCode.SERVICE_RESTART, "server restarting, reconnect to resume")
