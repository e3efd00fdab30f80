"""A raw Redis pub/sub subscription on a channel's topic, for the presence tests: it
sees the `presence` events exactly as the scripts publish them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import redis.asyncio as redis

from shared.redis_keys import RedisKeys

_PREFIX = b"!presence "
RECEIVE_TIMEOUT = 5.0


class PresenceEvents:
    def __init__(self, pubsub: redis.client.PubSub) -> None:
        self._pubsub = pubsub

    async def next(self, within: float = RECEIVE_TIMEOUT) -> dict[str, Any]:
        """The next presence event on the topic (message frames are skipped)."""
        async with asyncio.timeout(within):
            while True:
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=within
                )
                if message is None:
                    continue
                data: bytes = message["data"]
                if data.startswith(_PREFIX):
                    event: dict[str, Any] = orjson.loads(data[len(_PREFIX) :])
                    return event


@asynccontextmanager
async def presence_events(
    redis_url: str, prefix: str, channel_id: int, partitions: int = 16
) -> AsyncIterator[PresenceEvents]:
    """Subscribe to the channel's topic; events published from now on are seen."""
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(RedisKeys(prefix, partitions).channel_topic(channel_id))
        yield PresenceEvents(pubsub)
    finally:
        await pubsub.aclose()
        await client.aclose()
