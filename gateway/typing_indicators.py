"""Typing indicators: at most one relayed per user and channel per
`WS_TYPING_INTERVAL_SECONDS`, whichever of the user's sockets and gateways
they come from.

The multiplexed socket drops a refresh within the interval locally, so a
flood on one socket never reaches Redis. What passes runs
`shared/redis_scripts/typing.lua` (one round trip): `SET <marker> NX PX
<interval>`, and only when that set the marker, publish the `typing` control
event on the channel's topic. The marker carries the channel's hash tag, so
the script is single-slot in a cluster. Every gateway delivers the event to
the channel's event-taking sockets (`Hub.deliver_event`) as a `typing` frame
with `expires_in_ms`; nothing is stored, and the marker expires on its own.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from redis.exceptions import RedisError

from gateway.app_keys import KEYS, REDIS, SCRIPTS, SETTINGS
from gateway.control_events import control_payload
from shared.errors import UnavailableError
from shared.seq_counter import publish_command
from shared.wire import TYPING_EXPIRES_MS


async def relay_typing(app: web.Application, channel_id: int, user_id: int) -> bool:
    """Publish that `user_id` types in the channel, unless one of their sockets did
    within the interval; returns whether this call published.

    Raises UnavailableError when Redis does not answer.
    """
    settings, keys = app[SETTINGS], app[KEYS]
    interval_ms = max(1, round(settings.ws_typing_interval_seconds * 1000))
    payload = control_payload("typing", user_id, expires_in_ms=TYPING_EXPIRES_MS)
    try:
        async with asyncio.timeout(settings.redis_timeout_seconds):
            published = await app[SCRIPTS].typing(
                keys=[keys.typing(channel_id, user_id), keys.channel_topic(channel_id)],
                args=[interval_ms, publish_command(settings.redis_cluster), payload],
                client=app[REDIS],
            )
    except (RedisError, OSError, TimeoutError) as exc:
        raise UnavailableError() from exc
    return bool(published)
