"""`/api/v1/channels*`: channels, membership, members and message history."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from gateway.api.common import (
    MAX_ID,
    PAGE,
    IntParam,
    caller,
    channel_json,
    history_items,
    member_json,
    ok,
    page,
    path_id,
    read_body,
)
from gateway.api.docs import Auth, documented
from gateway.app_keys import CONTROL_EVENTS, PG_POOL, PRESENCE
from gateway.read_markers import mark_read
from gateway.roles import check_visible
from shared.db import channels, messages, moderation, users
from shared.db.records import Channel
from shared.errors import (
    AlreadyMemberError,
    AppError,
    BannedError,
    ChannelNameTakenError,
    ChannelNotFoundError,
    DirectMessageError,
    InvalidParameterError,
    NotAMemberError,
    UnavailableError,
)
from shared.responses import (
    ChannelJson,
    ChannelRefJson,
    ChannelWithMembersJson,
    HistoryPageJson,
    MemberJson,
    PresenceJson,
    ReadMarkerJson,
)
from shared.wire import (
    ChannelRefBody,
    NewChannelBody,
    ReadBody,
    author_json,
)

_CHANNEL_MEMBERS_SHOWN = 100

HISTORY_LIMIT = IntParam("limit", 1, 200, 50, "Messages per page.")
BEFORE = IntParam("before", 1, MAX_ID, None, "Messages with seq below it, newest first.")
AFTER_SEQ = IntParam("after_seq", 0, MAX_ID, None, "Messages with seq above it, oldest first.")


async def why_not_a_member(pool: asyncpg.Pool[asyncpg.Record], channel_id: int) -> AppError:
    """The error for a caller found not to be a member: the channel may not exist at all,
    and a private one (or a direct message) is not found to a non-member."""
    channel = await channels.get_channel(pool, channel_id)
    if channel is None or channel.private:
        return ChannelNotFoundError()
    return NotAMemberError()


async def visible_channel(request: web.Request, channel_id: int, user_id: int | None) -> Channel:
    """The channel, if the caller may know of it: a public one for anyone, a private one
    or a direct message for its members and admins. Raises ChannelNotFoundError."""
    pool = request.app[PG_POOL]
    channel = await channels.get_channel(pool, channel_id)
    if channel is None:
        raise ChannelNotFoundError()
    if channel.private:
        standing = None if user_id is None else await moderation.standing(pool, channel_id, user_id)
        check_visible(standing)
    return channel


@documented(
    "Channels",
    description="Public channels; with a token also the private ones the caller is a member "
    "of. Direct messages are listed only in `GET /api/v1/me/channels`.",
    data=list[ChannelJson],
    query=PAGE,
    auth=Auth.OPTIONAL,
)
async def list_channels(request: web.Request) -> web.Response:
    member_id = (await caller(request)).user_id if "Authorization" in request.headers else None
    limit, offset = page(request)
    found = await channels.list_channels(
        request.app[PG_POOL], limit=limit, offset=offset, member_id=member_id
    )
    return ok("channels retrieved", [channel_json(channel) for channel in found])


@documented(
    "One channel",
    description=f"With a token, also its first {_CHANNEL_MEMBERS_SHOWN} `members`: who is in a "
    "channel is not public. A private channel or direct message is 404 `channel_not_found` to "
    "anyone but its members and admins.",
    data=ChannelWithMembersJson | ChannelJson,
    errors=(ChannelNotFoundError,),
    auth=Auth.OPTIONAL,
)
async def get_channel(request: web.Request) -> web.Response:
    """The channel, for anyone; with `members` (the first 100) only for a valid token,
    since who is in a channel is not public. A bad token is refused (401)."""
    pool = request.app[PG_POOL]
    channel_id = path_id(request, "id")
    signed_in = "Authorization" in request.headers
    # A token that is sent must be valid.
    user_id = (await caller(request)).user_id if signed_in else None
    channel = await visible_channel(request, channel_id, user_id)
    if not signed_in:
        return ok("channel retrieved", channel_json(channel))
    members = await channels.list_members(pool, channel_id, limit=_CHANNEL_MEMBERS_SHOWN, offset=0)
    data: ChannelWithMembersJson = {
        **channel_json(channel),
        "members": [member_json(member) for member in members],
    }
    return ok("channel retrieved", data)


@documented(
    "Create a channel; the caller becomes its owner",
    body=NewChannelBody,
    data=ChannelJson,
    status=201,
    errors=(ChannelNameTakenError,),
    auth=Auth.REQUIRED,
)
async def new_channel(request: web.Request) -> web.Response:
    claims = await caller(request)
    body = await read_body(request, NewChannelBody)
    channel = await channels.create_channel(
        request.app[PG_POOL],
        name=body.name,
        description=body.description,
        image_url=body.image_url,
        owner_id=claims.user_id,
        private=body.private,
    )
    return ok("channel created", channel_json(channel), status=201)


@documented(
    "Join a public channel",
    description="A private channel or direct message is 404 `channel_not_found` to a join (accept "
    "an invitation instead); a banned user gets 403 `banned` until the ban ends.",
    body=ChannelRefBody,
    data=ChannelRefJson,
    errors=(ChannelNotFoundError, AlreadyMemberError, BannedError),
    auth=Auth.REQUIRED,
)
async def join_channel(request: web.Request) -> web.Response:
    claims = await caller(request)
    body = await read_body(request, ChannelRefBody)
    await channels.add_member(request.app[PG_POOL], body.channel_id, claims.user_id)
    return ok("joined channel", {"channel_id": body.channel_id})


@documented(
    "Leave a channel",
    description="The caller's sockets in the channel, on every gateway, are closed with 4403. "
    "A direct message cannot be left (409 `direct_message`).",
    body=ChannelRefBody,
    data=ChannelRefJson,
    errors=(ChannelNotFoundError, NotAMemberError, DirectMessageError),
    auth=Auth.REQUIRED,
)
async def leave_channel(request: web.Request) -> web.Response:
    claims = await caller(request)
    body = await read_body(request, ChannelRefBody)
    pool = request.app[PG_POOL]
    channel = await channels.get_channel(pool, body.channel_id)
    if channel is not None and channel.kind == "dm":
        raise DirectMessageError()
    if not await channels.remove_member(pool, body.channel_id, claims.user_id):
        raise await why_not_a_member(pool, body.channel_id)
    # Sockets the user still holds in the channel, on any node, are closed now.
    await request.app[CONTROL_EVENTS].publish_member_removed(body.channel_id, claims.user_id)
    return ok("left channel", {"channel_id": body.channel_id})


@documented(
    "A channel's members",
    data=list[MemberJson],
    query=PAGE,
    errors=(ChannelNotFoundError,),
    auth=Auth.REQUIRED,
)
async def list_members(request: web.Request) -> web.Response:
    """Members need a valid token: who is in a channel is not public (nor, for a private
    channel, to non-members)."""
    claims = await caller(request)
    pool = request.app[PG_POOL]
    channel_id = path_id(request, "id")
    await visible_channel(request, channel_id, claims.user_id)
    limit, offset = page(request)
    members = await channels.list_members(pool, channel_id, limit=limit, offset=offset)
    return ok("members retrieved", [member_json(member) for member in members])


@documented(
    "A channel's history, members only",
    description="Newest first below `before` (the default: from the newest message), or oldest "
    "first above `after_seq`; not both (`invalid_parameter`). Messages only, each in its latest "
    "version (`edited_at`) or as a tombstone (`deleted_at`, `body` `{}`), with `reactions` and "
    "`reply_count`; the events that changed them are not items. Read from PostgreSQL only: a "
    "message acknowledged but not yet written by the worker is not in it yet.",
    data=HistoryPageJson,
    query=(HISTORY_LIMIT, BEFORE, AFTER_SEQ),
    errors=(ChannelNotFoundError, NotAMemberError),
    auth=Auth.REQUIRED,
)
async def list_messages(request: web.Request) -> web.Response:
    """History, members only: newest first below `before`, or oldest first after `after_seq`.

    `next_cursor` is the value to pass as the same parameter for the next page,
    or null when there is none.
    """
    claims = await caller(request)
    pool = request.app[PG_POOL]
    channel_id = path_id(request, "id")
    limit = HISTORY_LIMIT.query(request)
    before = BEFORE.query(request)
    after_seq = AFTER_SEQ.query(request)
    if before is not None and after_seq is not None:
        raise InvalidParameterError("use either before or after_seq, not both")
    if await channels.member_role(pool, channel_id, claims.user_id) is None:
        raise await why_not_a_member(pool, channel_id)
    if after_seq is not None:
        found = await messages.list_messages_after(pool, channel_id, after_seq, limit, events=False)
    else:
        found = await messages.list_messages_before(pool, channel_id, before, limit)
    next_cursor = found[-1].seq if len(found) == limit else None
    data: HistoryPageJson = {
        "messages": await history_items(pool, found, claims.user_id),
        "next_cursor": next_cursor,
    }
    return ok("messages retrieved", data)


@documented(
    "Mark a channel read up to a seq, members only",
    description="The marker only moves forward (a lower `seq` changes nothing) and is clamped "
    "to the channel's last seq; the answer is the stored marker. When it moved, the caller's "
    "multiplexed sockets subscribed to the channel get a `read` event, on every gateway.",
    body=ReadBody,
    data=ReadMarkerJson,
    errors=(ChannelNotFoundError, NotAMemberError, UnavailableError),
    auth=Auth.REQUIRED,
)
async def mark_channel_read(request: web.Request) -> web.Response:
    """Move the caller's read marker up to `seq` (never back, clamped to the channel's
    last seq); the answer is the stored marker. See `gateway.read_markers.mark_read`."""
    claims = await caller(request)
    channel_id = path_id(request, "id")
    body = await read_body(request, ReadBody)
    stored = await mark_read(request.app, claims.user_id, channel_id, body.seq)
    data: ReadMarkerJson = {"channel_id": channel_id, "last_read_seq": stored}
    return ok("channel marked read", data)


@documented(
    "Who is online in a channel, members only",
    description="Users with a socket open in the channel, on any gateway, each once. Above "
    "PRESENCE_MAX_LISTED online users `users` is null (counts only). Expired entries of a "
    "gateway that died are left out.",
    data=PresenceJson,
    errors=(ChannelNotFoundError, NotAMemberError, UnavailableError),
    auth=Auth.REQUIRED,
)
async def channel_presence(request: web.Request) -> web.Response:
    """Who is online in the channel, members only: `users` is null above
    PRESENCE_MAX_LISTED online users (a big channel reports its count only)."""
    claims = await caller(request)
    pool = request.app[PG_POOL]
    channel_id = path_id(request, "id")
    if await channels.member_role(pool, channel_id, claims.user_id) is None:
        raise await why_not_a_member(pool, channel_id)
    online = await request.app[PRESENCE].online(channel_id)
    listed = None
    if online.user_ids is not None:
        found = await users.get_users(pool, online.user_ids)
        listed = [author_json(u.id, u.name, u.username, u.avatar_url) for u in found]
    data: PresenceJson = {"channel_id": channel_id, "online_count": online.count, "users": listed}
    return ok("presence retrieved", data)
