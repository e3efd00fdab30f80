"""Every application-level object, under a typed key.

Kept apart from `app.py` so handlers can import the keys without importing
the application factory that imports them.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from aiohttp import web
from redis.asyncio import Redis

from gateway.backlog import Backlog
from gateway.channel_topics import ChannelTopics
from gateway.control_events import ControlEvents
from gateway.hub import Hub
from gateway.message_budget import BudgetLimits
from gateway.metrics import GatewayMetrics
from gateway.passwords import PasswordHasher
from gateway.pipelined_redis import PipelinedRedis
from gateway.presence import Presence
from gateway.sender import Sender
from gateway.sockets import Sockets
from shared.redis_keys import RedisKeys
from shared.scripts import Scripts
from shared.settings import Settings


class Readiness:
    """Whether this node should receive traffic; turned off first when draining."""

    def __init__(self) -> None:
        self.draining = False


@dataclass(frozen=True, slots=True)
class OpenApiDocument:
    """The OpenAPI document, built once at start-up (`gateway.api.openapi`)."""

    body: bytes
    etag: str


SETTINGS = web.AppKey("SETTINGS", Settings)
KEYS = web.AppKey("KEYS", RedisKeys)
PG_POOL = web.AppKey("PG_POOL", asyncpg.Pool)
REDIS = web.AppKey("REDIS", Redis)
# What sends go through: see `_redis` in app.py.
SENDS: web.AppKey[PipelinedRedis | Redis] = web.AppKey("SENDS")
SCRIPTS = web.AppKey("SCRIPTS", Scripts)
SENDER = web.AppKey("SENDER", Sender)
TOPICS = web.AppKey("TOPICS", ChannelTopics)
CONTROL_EVENTS = web.AppKey("CONTROL_EVENTS", ControlEvents)
HUB = web.AppKey("HUB", Hub)
PRESENCE = web.AppKey("PRESENCE", Presence)
SOCKETS = web.AppKey("SOCKETS", Sockets)
BACKLOG = web.AppKey("BACKLOG", Backlog)
METRICS = web.AppKey("METRICS", GatewayMetrics)
# Each chat socket's local message budget; None when WS_MESSAGE_RATE is 0.
MESSAGE_LIMITS: web.AppKey[BudgetLimits | None] = web.AppKey("MESSAGE_LIMITS")
# Each multiplexed socket's budgets of subscribes and of read frames; None when off.
SUBSCRIBE_LIMITS: web.AppKey[BudgetLimits | None] = web.AppKey("SUBSCRIBE_LIMITS")
READ_LIMITS: web.AppKey[BudgetLimits | None] = web.AppKey("READ_LIMITS")
PASSWORDS = web.AppKey("PASSWORDS", PasswordHasher)
READINESS = web.AppKey("READINESS", Readiness)
OPENAPI = web.AppKey("OPENAPI", OpenApiDocument)
