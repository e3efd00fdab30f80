"""`/api/v1/channels*`: channels, membership, members and message history."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from gateway.api.common import (
    caller,
    channel_json,
    member_json,
    ok,
    page,
    path_id,
    query_int,
    read_body,
)
from gateway.app_keys import BROKER, PG_POOL, PRESENCE
from shared.db import channels, messages, users
from shared.errors import (
    AppError,
    ChannelNotFoundError,
    InvalidParameterError,
    NotAMemberError,
)
from shared.wire import (
    ChannelRefBody,
    NewChannelBody,
    author_json,
    stored_message_json,
)

_CHANNEL_MEMBERS_SHOWN = 100
_MAX_SEQ = 2**53


async def _why_not_a_member(pool: asyncpg.Pool[asyncpg.Record], channel_id: int) -> AppError:
    """The error for a caller found not to be a member: the channel may not exist at all."""
    if await channels.get_channel(pool, channel_id) is None:
        return ChannelNotFoundError()
    return NotAMemberError()


async def list_channels(request: web.Request) -> web.Response:
    limit, offset = page(request)
    found = await channels.list_channels(request.app[PG_POOL], limit=limit, offset=offset)
    return ok("channels retrieved", [channel_json(channel) for channel in found])


async def get_channel(request: web.Request) -> web.Response:
    """The channel, for anyone; with `members` (the first 100) only for a valid token,
    since who is in a channel is not public. A bad token is refused (401)."""
    pool = request.app[PG_POOL]
    channel_id = path_id(request, "id")
    signed_in = "Authorization" in request.headers
    if signed_in:
        await caller(request)  # a token that is sent must be valid
    channel = await channels.get_channel(pool, channel_id)
    if channel is None:
        raise ChannelNotFoundError()
    data = channel_json(channel)
    if signed_in:
        members = await channels.list_members(
            pool, channel_id, limit=_CHANNEL_MEMBERS_SHOWN, offset=0
        )
        data["members"] = [member_json(member) for member in members]
    return ok("channel retrieved", data)


async def new_channel(request: web.Request) -> web.Response:
    claims = await caller(request)
    body = await read_body(request, NewChannelBody)
    channel = await channels.create_channel(
        request.app[PG_POOL],
        name=body.name,
        description=body.description,
        image_url=body.image_url,
        owner_id=claims.user_id,
    )
    return ok("channel created", channel_json(channel), status=201)


async def join_channel(request: web.Request) -> web.Response:
    claims = await caller(request)
    body = await read_body(request, ChannelRefBody)
    await channels.add_member(request.app[PG_POOL], body.channel_id, claims.user_id)
    return ok("joined channel", {"channel_id": body.channel_id})


async def leave_channel(request: web.Request) -> web.Response:
    claims = await caller(request)
    body = await read_body(request, ChannelRefBody)
    pool = request.app[PG_POOL]
    if not await channels.remove_member(pool, body.channel_id, claims.user_id):
        raise await _why_not_a_member(pool, body.channel_id)
    # Sockets the user still holds in the channel, on any node, are closed now.
    await request.app[BROKER].publish_member_removed(body.channel_id, claims.user_id)
    return ok("left channel", {"channel_id": body.channel_id})


async def list_members(request: web.Request) -> web.Response:
    """Members need a valid token: who is in a channel is not public."""
    await caller(request)
    pool = request.app[PG_POOL]
    channel_id = path_id(request, "id")
    if await channels.get_channel(pool, channel_id) is None:
        raise ChannelNotFoundError()
    limit, offset = page(request)
    members = await channels.list_members(pool, channel_id, limit=limit, offset=offset)
    return ok("members retrieved", [member_json(member) for member in members])


async def list_messages(request: web.Request) -> web.Response:
    """History, members only: newest first below `before`, or oldest first after `after_seq`.

    `next_cursor` is the value to pass as the same parameter for the next page,
    or null when there is none.
    """
    claims = await caller(request)
    pool = request.app[PG_POOL]
    channel_id = path_id(request, "id")
    limit = query_int(request, "limit", default=50, low=1, high=200)
    before = query_int(request, "before", default=None, low=1, high=_MAX_SEQ)
    after_seq = query_int(request, "after_seq", default=None, low=0, high=_MAX_SEQ)
    assert limit is not None  # it has a default
    if before is not None and after_seq is not None:
        raise InvalidParameterError("use either before or after_seq, not both")
    if await channels.member_role(pool, channel_id, claims.user_id) is None:
        raise await _why_not_a_member(pool, channel_id)
    if after_seq is not None:
        found = await messages.list_messages_after(pool, channel_id, after_seq, limit)
    else:
        found = await messages.list_messages_before(pool, channel_id, before, limit)
    next_cursor = found[-1].seq if len(found) == limit else None
    data = {
        "messages": [stored_message_json(m) for m in found],
        "next_cursor": next_cursor,
    }
    return ok("messages retrieved", data)


async def channel_presence(request: web.Request) -> web.Response:
    """Who is online in the channel, members only: `users` is null above
    PRESENCE_MAX_LISTED online users (a big channel reports its count only)."""
    claims = await caller(request)
    pool = request.app[PG_POOL]
    channel_id = path_id(request, "id")
    if await channels.member_role(pool, channel_id, claims.user_id) is None:
        raise await _why_not_a_member(pool, channel_id)
    online = await request.app[PRESENCE].online(channel_id)
    listed = None
    if online.user_ids is not None:
        found = await users.get_users(pool, online.user_ids)
        listed = [author_json(u.id, u.name, u.username, u.avatar_url) for u in found]
    data = {"channel_id": channel_id, "online_count": online.count, "users": listed}
    return ok("presence retrieved", data)
