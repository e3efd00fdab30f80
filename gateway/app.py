"""The gateway application: routes, middlewares, and the lifetime of its resources.

`create_app(settings)` does no I/O. Resources open in cleanup contexts, in
dependency order (PostgreSQL -> Redis -> channel topics, sender and hub), and close in reverse.
`drain` is the first step of a shutdown (SIGTERM): the node reports not
ready and refuses new sockets, waits `drain_delay_seconds` for the load
balancer to notice, then closes every chat socket with 1012 (service restart)
so clients reconnect to another replica and resume from their last seq.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import cast

import aiohttp_cors
from aiohttp import web
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.api import (
    auth,
    channels,
    health,
    invitations,
    me,
    messages,
    moderation,
    openapi,
    search,
    users,
    webapp,
)
from gateway.app_keys import (
    BACKLOG,
    CONTROL_EVENTS,
    HUB,
    KEYS,
    MESSAGE_LIMITS,
    METRICS,
    OPENAPI,
    PASSWORDS,
    PG_POOL,
    PRESENCE,
    READ_LIMITS,
    READINESS,
    REDIS,
    SCRIPTS,
    SENDER,
    SENDS,
    SETTINGS,
    SOCKETS,
    SUBSCRIBE_LIMITS,
    TOPICS,
    Readiness,
)
from gateway.backlog import Backlog
from gateway.channel_topics import ChannelTopics
from gateway.chat import chat_socket
from gateway.control_events import ControlEvents
from gateway.hub import Hub
from gateway.membership_audit import MembershipAudit
from gateway.message_budget import BudgetLimits
from gateway.metrics import GatewayMetrics
from gateway.middlewares import error_middleware, rate_limit_middleware, request_id_middleware
from gateway.mux import mux_socket
from gateway.passwords import PasswordHasher, hash_concurrency
from gateway.pipelined_redis import PipelinedRedis
from gateway.presence import Presence
from gateway.sender import Sender
from gateway.seq_floors import SeqFloors
from gateway.sockets import Sockets
from shared.db.pool import create_pool
from shared.errors import CloseCode
from shared.redis_client import close_redis, connect_redis
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
    app[METRICS] = GatewayMetrics()
    app[MESSAGE_LIMITS] = BudgetLimits.from_settings(settings)
    app[SUBSCRIBE_LIMITS] = BudgetLimits.of_frames(settings, settings.ws_subscribe_rate)
    app[READ_LIMITS] = BudgetLimits.of_frames(settings, settings.ws_read_rate)
    app[SOCKETS] = Sockets(
        max_size=settings.ws_max_frame_bytes,
        max_fragments=settings.ws_max_fragments,
        send_buffer_bytes=settings.ws_socket_send_buffer_bytes,
    )
    app.cleanup_ctx.extend(
        [_passwords, _postgres, _redis, _channels, _presence, _membership_audit, _heartbeat]
    )
    app.on_shutdown.append(drain)
    _add_routes(app, settings)
    app[OPENAPI] = openapi.build_document(app)  # refuses an undocumented route
    return app


_MESSAGE = "/api/v1/channels/{id:[0-9]+}/messages/{message_id:[0-9]+}"


def _add_routes(app: web.Application, settings: Settings) -> None:
    app.router.add_get("/", health.hello)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", health.metrics)
    app.router.add_get("/api/v1/chat/{channel_id}", chat_socket)
    app.router.add_get("/api/v1/ws", mux_socket)
    webapp.add_routes(app)  # same origin as the API: no CORS for the page's own calls
    # Ids in REST paths match digits only, so `GET /api/v1/channels/join` is the
    # POST-only resource answering 405, not channel "join" answering 422.
    rest = [
        app.router.add_get(openapi.PATH, openapi.openapi_json),
        app.router.add_post("/api/v1/auth/signup", auth.signup),
        app.router.add_post("/api/v1/auth/login", auth.login),
        app.router.add_post("/api/v1/auth/logout", auth.logout),
        app.router.add_get("/api/v1/auth/me", auth.me),
        app.router.add_put("/api/v1/auth/change-password", auth.change_password),
        app.router.add_post("/api/v1/auth/ws-ticket", auth.ws_ticket),
        app.router.add_get("/api/v1/users", users.list_users),
        app.router.add_put("/api/v1/users/edit", users.edit_user),
        app.router.add_get("/api/v1/users/{id:[0-9]+}", users.get_user),
        app.router.add_get("/api/v1/channels", channels.list_channels),
        app.router.add_post("/api/v1/channels/new", channels.new_channel),
        app.router.add_post("/api/v1/channels/join", channels.join_channel),
        app.router.add_post("/api/v1/channels/leave", channels.leave_channel),
        app.router.add_get("/api/v1/channels/{id:[0-9]+}", channels.get_channel),
        app.router.add_get("/api/v1/channels/{id:[0-9]+}/members", channels.list_members),
        app.router.add_get("/api/v1/channels/{id:[0-9]+}/messages", channels.list_messages),
        app.router.add_get("/api/v1/channels/{id:[0-9]+}/presence", channels.channel_presence),
        app.router.add_patch(_MESSAGE, messages.edit_message),
        app.router.add_delete(_MESSAGE, messages.delete_message),
        app.router.add_post(_MESSAGE + "/reactions", messages.react_to_message),
        app.router.add_get(_MESSAGE + "/replies", messages.list_message_replies),
        app.router.add_put("/api/v1/channels/{id:[0-9]+}/read", channels.mark_channel_read),
        app.router.add_get("/api/v1/me/channels", me.list_my_channels),
        app.router.add_get("/api/v1/search", search.search),
        *_governance_routes(app),
    ]
    _enable_cors(app, settings, rest)


def _governance_routes(app: web.Application) -> list[web.AbstractRoute]:
    """Roles, moderation, invitations and direct messages (see gateway.roles)."""
    channel = "/api/v1/channels/{id:[0-9]+}"
    target = "{user_id:[0-9]+}"
    router = app.router
    return [
        router.add_put(f"{channel}/members/{target}/role", moderation.set_role),
        router.add_post(f"{channel}/transfer-ownership", moderation.transfer_ownership),
        router.add_post(f"{channel}/kick", moderation.kick),
        router.add_get(f"{channel}/bans", moderation.list_bans),
        router.add_post(f"{channel}/bans", moderation.ban),
        router.add_delete(f"{channel}/bans/{target}", moderation.unban),
        router.add_get(f"{channel}/mutes", moderation.list_mutes),
        router.add_post(f"{channel}/mutes", moderation.mute),
        router.add_delete(f"{channel}/mutes/{target}", moderation.unmute),
        router.add_get(f"{channel}/invitations", invitations.list_channel_invitations),
        router.add_post(f"{channel}/invitations", invitations.invite),
        router.add_delete(f"{channel}/invitations/{target}", invitations.revoke_invitation),
        router.add_get("/api/v1/me/invitations", invitations.list_my_invitations),
        router.add_post(
            "/api/v1/me/invitations/{channel_id:[0-9]+}/accept", invitations.accept_invitation
        ),
        router.add_post(
            "/api/v1/me/invitations/{channel_id:[0-9]+}/decline", invitations.decline_invitation
        ),
        router.add_post("/api/v1/dm", invitations.direct_message),
    ]


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


async def _passwords(app: web.Application) -> AsyncIterator[None]:
    app[PASSWORDS] = PasswordHasher(hash_concurrency(app[SETTINGS].password_hash_concurrency))
    yield
    app[PASSWORDS].close()


async def _postgres(app: web.Application) -> AsyncIterator[None]:
    app[PG_POOL] = await create_pool(app[SETTINGS])
    yield
    await app[PG_POOL].close()


async def _redis(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    timeout = settings.redis_timeout_seconds
    # A pooled connection goes stale when Redis restarts; one retry on a fresh
    # connection hides that from reads, counters and publishes. (In a cluster
    # a retry also re-reads the slot map.)
    redis = await connect_redis(
        settings,
        socket_timeout=timeout,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.01), 2),
        retry_on_error=[RedisConnectionError],
    )
    # The send script is never retried by a client: a script that ran but whose
    # reply was lost would store the message twice. The sender decides. On one
    # server every send of this gateway shares one pipelined connection; in a
    # cluster a client of its own routes each script to its slot's master
    # (MOVED and ASK are still followed: the script did not run).
    sends: PipelinedRedis | Redis
    if settings.redis_cluster:
        sends = cast(
            Redis,
            await connect_redis(settings, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)),
        )
    else:
        sends = PipelinedRedis(settings.redis_url.get_secret_value(), timeout=timeout)
    # With REDIS_CLUSTER these are RedisCluster clients. The gateway calls only
    # single-key commands and scripts, which both clients serve alike, so the
    # app keys keep the single-server type.
    app[REDIS] = cast(Redis, redis)
    app[SENDS] = sends
    app[SCRIPTS] = register_scripts(redis)
    yield
    if isinstance(sends, PipelinedRedis):
        sends.close()
    else:
        await close_redis(sends)
    await close_redis(redis)


async def _channels(app: web.Application) -> AsyncIterator[None]:
    """The send path, the channel topics and the hub, which share the channels' floors."""
    settings, keys, metrics = app[SETTINGS], app[KEYS], app[METRICS]
    seq_floors = SeqFloors(settings, app[REDIS], app[SCRIPTS], app[PG_POOL], keys)
    topics = ChannelTopics(settings, keys, seq_floors)
    hub = Hub(topics, metrics, max_sockets_per_user=settings.ws_max_sockets_per_user)
    metrics.registry.gauge(
        "chat_connections", "Chat sockets open on this gateway.", lambda: hub.connection_count
    )
    metrics.registry.gauge(
        "chat_subscriptions", "Channels this gateway is subscribed to.", lambda: hub.channel_count
    )
    topics.bind(hub)
    app[TOPICS] = topics
    app[SENDER] = Sender(settings, app[SENDS], app[SCRIPTS], keys, seq_floors)
    app[CONTROL_EVENTS] = ControlEvents(app[REDIS], keys, cluster=settings.redis_cluster)
    app[HUB] = hub
    app[BACKLOG] = Backlog(app[REDIS], app[PG_POOL], keys, metrics)
    listener = asyncio.create_task(topics.subscriber.run(), name="pubsub-listener")
    try:
        async with asyncio.timeout(settings.redis_timeout_seconds):
            await topics.subscriber.connected.wait()
    except TimeoutError:
        pass  # start anyway: /readyz reports "pubsub" until the listener connects
    yield
    listener.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await listener
    await app[BACKLOG].aclose()
    await seq_floors.aclose()
    await topics.aclose()


async def _presence(app: web.Application) -> AsyncIterator[None]:
    presence = app[PRESENCE] = Presence(app[SETTINGS], app[REDIS], app[SCRIPTS])
    app[METRICS].registry.gauge(
        "chat_presence_entries",
        "Users online through this gateway, counted once per channel.",
        lambda: presence.entry_count,
    )
    refresher = asyncio.create_task(presence.run(), name="presence-refresh")
    yield
    refresher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await refresher
    await presence.leave_all()


async def _membership_audit(app: web.Application) -> AsyncIterator[None]:
    audit = MembershipAudit(
        app[HUB],
        app[PG_POOL],
        app[METRICS],
        interval_seconds=app[SETTINGS].membership_recheck_seconds,
    )
    app[HUB].on_resync(audit.wake)
    checks = asyncio.create_task(audit.run(), name="membership-audit")
    yield
    checks.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await checks


async def _heartbeat(app: web.Application) -> AsyncIterator[None]:
    beats = asyncio.create_task(
        app[SOCKETS].heartbeat(app[SETTINGS].ws_heartbeat_seconds), name="ws-heartbeat"
    )
    yield
    beats.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await beats


async def drain(app: web.Application) -> None:
    """Hand this node's clients to the other replicas; idempotent.

    Waits up to `shutdown_timeout_seconds` for the sockets to close; the
    runner's cleanup, which follows, waits as long for any request in flight.
    """
    readiness = app[READINESS]
    if readiness.draining:
        return
    readiness.draining = True
    await asyncio.sleep(app[SETTINGS].drain_delay_seconds)
    app[HUB].close_all(CloseCode.SERVICE_RESTART, "server restarting, reconnect to resume")
    await app[SOCKETS].wait_closed(app[SETTINGS].shutdown_timeout_seconds)
