"""`/api/v1/me/*`: what is about the caller only: their channels with read state."""

from __future__ import annotations

from aiohttp import web

from gateway.api.common import PAGE, caller, channel_json, ok, page
from gateway.api.docs import Auth, documented
from gateway.app_keys import PG_POOL
from gateway.read_markers import channel_counters, last_seq
from shared.db import read_markers
from shared.db.read_markers import UNREAD_COUNT_MAX, LastMessage, MyChannel
from shared.responses import LastMessageJson, MyChannelJson
from shared.wire import author_json, iso_from_datetime


@documented(
    "The caller's channels with read state, most recently active first",
    description="Each with `kind` (a direct message is `dm`, with `other_user`), `last_seq` "
    "(messages not yet persisted included), `last_read_seq`, "
    "`unread_count` and its newest stored message. Activity is that message's time, else when "
    "the caller joined.",
    data=list[MyChannelJson],
    query=PAGE,
    auth=Auth.REQUIRED,
)
async def list_my_channels(request: web.Request) -> web.Response:
    """The caller's channels, most recently active first (`limit`/`offset`), each with
    `last_seq`, `last_read_seq`, `unread_count` and `last_message`.

    Two round trips whatever the page size: one SQL statement for the page and
    one Redis pipeline for its counters (see `gateway.read_markers`).
    """
    claims = await caller(request)
    limit, offset = page(request)
    found = await read_markers.list_my_channels(
        request.app[PG_POOL], claims.user_id, limit=limit, offset=offset
    )
    counters = await channel_counters(request.app, [mine.channel.id for mine in found])
    data = [_my_channel_json(mine, counter) for mine, counter in zip(found, counters, strict=True)]
    return ok("channels retrieved", data)


def _my_channel_json(mine: MyChannel, counter: int | None) -> MyChannelJson:
    head = last_seq(counter, mine.stored_seq)
    last = mine.last_message
    other = mine.other_user
    return {
        **channel_json(mine.channel),
        "other_user": None
        if other is None
        else author_json(other.id, other.name, other.username, other.avatar_url),
        "role": mine.role,
        "last_seq": head,
        "last_read_seq": mine.last_read_seq,
        "unread_count": unread_count(mine, head),
        "last_message": None if last is None else _last_message_json(last),
    }


def unread_count(mine: MyChannel, head: int) -> int:
    """Messages after the caller's marker: those stored (counted in the table, events
    left out), plus the seqs after everything stored (not persisted yet: for the
    moment the worker lags, an event among them counts too), capped."""
    pending = max(0, head - max(mine.stored_seq, mine.last_read_seq))
    return min(UNREAD_COUNT_MAX, mine.stored_unread + pending)


def _last_message_json(message: LastMessage) -> LastMessageJson:
    return {
        "id": message.id,
        "seq": message.seq,
        "user": author_json(
            message.user_id, message.user_name, message.user_username, message.user_avatar_url
        ),
        "type": message.type,
        "preview": message.preview,
        "created_at": iso_from_datetime(message.created_at),
    }
