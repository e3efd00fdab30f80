"""Mutes on the sockets: enforced in memory on the send path, kept current by events.

Each connection carries `muted_until` (epoch seconds; 0: not muted), read with
its membership at admission or subscribe (`shared.db.channels.chat_access`,
the same one query). A mute or unmute publishes a `muted` control event on the
channel's topic, and every gateway sets the new value on the user's
connections in that channel at once (`Hub.mute_user`); the membership audit
refreshes every connection's value from PostgreSQL each
`MEMBERSHIP_RECHECK_SECONDS`, for a gateway that missed the event. So a send
costs one comparison with the clock, no I/O, and a mute set on any gateway
stops sends on every gateway as fast as a removal closes sockets.

`check_not_muted` (a connection) and `ensure_not_muted` (REST: one primary-key
read) are what any other path that posts into a channel calls (reactions).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence

import asyncpg

from gateway.connection import Connection
from shared.db import moderation
from shared.errors import AppError, MutedError
from shared.wire import iso_from_datetime

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def epoch_of(until: dt.datetime | None) -> float:
    return 0.0 if until is None else until.timestamp()


def until_ms(until: dt.datetime) -> int:
    """A mute's end in epoch milliseconds (ends are whole milliseconds: see
    `shared.db.moderation.mute`)."""
    return round(until.timestamp() * 1000)


def _refuse(until: float) -> AppError:
    # Whole milliseconds, exactly: a float's 0.786 may read back as 0.785999.
    ends = _EPOCH + dt.timedelta(milliseconds=round(until * 1000))
    return MutedError(details=[{"until": iso_from_datetime(ends)}])


def check_not_muted(connection: Connection) -> None:
    """Raises MutedError while the connection's user is muted in its channel."""
    until = connection.muted_until
    if until and until > time.time():
        raise _refuse(until)


async def ensure_not_muted(db: asyncpg.Pool[asyncpg.Record], channel_id: int, user_id: int) -> None:
    """The REST form of `check_not_muted`: raises MutedError."""
    until = await moderation.muted_until(db, channel_id, user_id)
    if until is not None:
        raise _refuse(until.timestamp())


async def refresh_mutes(
    db: asyncpg.Pool[asyncpg.Record],
    members: Mapping[tuple[int, int, int], Sequence[Connection]],
) -> None:
    """Set every listed connection's `muted_until` from PostgreSQL (one statement)."""
    pairs = sorted({(channel_id, user_id) for channel_id, user_id, _ in members})
    found = await moderation.mutes_of(db, [c for c, _ in pairs], [u for _, u in pairs])
    for (channel_id, user_id, _), connections in members.items():
        until = epoch_of(found.get((channel_id, user_id)))
        for connection in connections:
            connection.muted_until = until
