"""Read markers: marking a channel read (REST and the multiplexed socket's `read` frame
share `mark_read`), and the channel heads a channel list needs from Redis.

A marker is stored in PostgreSQL (`memberships.last_read_seq`), only moves
forward, and is clamped to the channel's last seq. When it moves, a `read`
event goes out on the channel's topic, so the user's sockets on every gateway
that take live events learn it at once (`ControlEvents.publish_read` ->
`Hub.deliver_event`).

A channel's last seq is the higher of its Redis counter and its highest stored
seq. The counter is the truth for messages a worker has not persisted yet and
is never behind PostgreSQL while Redis keeps its data; the stored maximum
covers a counter that is missing (Redis lost it; the next send seeds it from
PostgreSQL) or behind (Redis restarted from an older snapshot).
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from gateway.app_keys import CONTROL_EVENTS, KEYS, PG_POOL, REDIS
from gateway.outages import DEPENDENCY_ERRORS
from shared.db import channels, read_markers
from shared.errors import ChannelNotFoundError, NotAMemberError, UnavailableError


async def mark_read(app: web.Application, user_id: int, channel_id: int, seq: int) -> int:
    """Move `user_id`'s marker in the channel up to `seq` and return the stored marker.

    `seq` must already be validated (0 to 2**53: `shared.wire.Seq`). A `seq`
    below the marker changes nothing; one beyond the channel's last seq is
    clamped to it. When the marker moved, the user's event-taking sockets on
    every gateway get `{"type":"read","channel_id","user_id","last_read_seq"}`.

    Raises NotAMemberError, ChannelNotFoundError, or UnavailableError (Redis or
    PostgreSQL down; when only the announcement failed the marker is stored,
    and other sockets see it at their next channel list).
    """
    pool = app[PG_POOL]
    try:
        (counter,) = await channel_counters(app, [channel_id])
        result = await read_markers.mark_read(pool, channel_id, user_id, seq, counter=counter or 0)
        if result is None:
            if await channels.get_channel(pool, channel_id) is None:
                raise ChannelNotFoundError()
            raise NotAMemberError()
    except DEPENDENCY_ERRORS as exc:
        raise UnavailableError() from exc
    if result.moved:
        await app[CONTROL_EVENTS].publish_read(channel_id, user_id, result.last_read_seq)
    return result.last_read_seq


async def channel_counters(app: web.Application, channel_ids: Sequence[int]) -> list[int | None]:
    """Each channel's Redis seq counter (None where it has none), in one round trip.

    GETs in a non-transactional pipeline rather than one MGET: the counters
    live in different hash slots, which a cluster pipeline splits by node and
    a single MGET could not span. Raises RedisError.
    """
    if not channel_ids:
        return []
    keys = app[KEYS]
    async with app[REDIS].pipeline(transaction=False) as pipe:
        for channel_id in channel_ids:
            pipe.get(keys.channel_seq(channel_id))
        values = await pipe.execute()
    return [None if value is None else int(value) for value in values]


def last_seq(counter: int | None, stored_seq: int) -> int:
    """A channel's last seq: the higher of its Redis counter and its highest stored seq."""
    return stored_seq if counter is None else max(counter, stored_seq)
