"""A channel's seq counter when it is behind what exists: raised, never reused.

Redis can lose acknowledged writes (a restore from an older file, a failover
to a lagging replica, a crash inside `appendfsync everysec`). The counter then
exists but is behind PostgreSQL and behind what gateways delivered, and new
messages would reuse stored `(channel_id, seq)` pairs. Whoever notices raises
it through `raise_seq.lua`: a gateway whose send script answered `behind` or
`noseq`, a gateway re-checking its channels after a pub/sub reconnect, and the
persistence worker when a row's `(channel_id, seq)` is stored under another id.
The script also publishes a `channel_rewound` control event on the channel's
topic, so every gateway tells the sockets that may have seen lost seqs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from shared.redis_client import RedisClient
from shared.redis_keys import RedisKeys

CHANNEL_REWOUND = "channel_rewound"


def publish_command(cluster: bool) -> str:
    """How the scripts publish: a cluster routes SPUBLISH to the master owning the
    topic's slot (the channel's hash tag); PUBLISH would reach every node."""
    return "SPUBLISH" if cluster else "PUBLISH"


@dataclass(frozen=True, slots=True)
class Raised:
    before: int  # -1: there was no counter
    after: int

    @property
    def was_behind(self) -> bool:
        """An existing counter was moved up: Redis had lost seqs of this channel."""
        return 0 <= self.before < self.after


async def raise_counter(
    redis: RedisClient,
    script: AsyncScript,
    keys: RedisKeys,
    channel_id: int,
    target: int,
    *,
    cluster: bool,
    known_good: int | None = None,
) -> Raised:
    """Make the counter at least `target` and at least its recent stream's top.

    `known_good` is the highest seq the caller knows is not reused (by default
    the counter as it was); the `channel_rewound` event tells sockets that saw
    more than it. Idempotent. Raises what the Redis client raises.
    """
    reply = await script(
        keys=[
            keys.channel_seq(channel_id),
            keys.channel_recent(channel_id),
            keys.channel_topic(channel_id),
        ],
        args=[target, publish_command(cluster), "" if known_good is None else known_good],
        # A RedisCluster runs scripts alike, routed to the keys' slot.
        client=cast(Redis, redis),
    )
    return Raised(int(reply[0]), int(reply[1]))
