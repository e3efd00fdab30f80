"""Private channels' invitations and direct messages.

Owners, moderators and admins invite users into a private channel
(`POST /api/v1/channels/{id}/invitations`); the invitee lists theirs
(`GET /api/v1/me/invitations`) and accepts or declines; the inviter or a
moderator revokes. A direct message (`POST /api/v1/dm`) is the pair's one
private channel of kind `dm`: created on first ask, the same channel after,
concurrent asks included; both users are members with the role `member`, and
nobody joins, leaves, is invited, moderated or promoted in it. Nobody has a
direct message with themselves: it would be a one-member channel, which a
private channel already is.
"""

from __future__ import annotations

from aiohttp import web

from gateway.api.common import PAGE, caller, channel_json, ok, page, path_id, read_body
from gateway.api.docs import Auth, documented
from gateway.api.moderation import governing
from gateway.app_keys import PG_POOL
from gateway.roles import Rank, rank_of, require_rank
from shared.db import channels, direct_channels, invitations, moderation, users
from shared.db.invitations import MAX_PENDING_PER_CHANNEL, MAX_PENDING_PER_USER, Invitation
from shared.errors import (
    AlreadyInvitedError,
    AlreadyMemberError,
    BannedError,
    ChannelNotFoundError,
    DirectMessageError,
    ForbiddenRoleError,
    InvitationNotFoundError,
    NotAMemberError,
    NotPrivateError,
    TooManyInvitationsError,
    UserNotFoundError,
)
from shared.responses import ChannelJson, ChannelUserJson, DirectChannelJson, InvitationJson
from shared.wire import UserRefBody, author_json, iso_from_datetime

_BOUNDS = (
    f"at most {MAX_PENDING_PER_CHANNEL} pending per channel and {MAX_PENDING_PER_USER} per user"
)


@documented(
    "Invite a user into a private channel; moderators, the owner and admins",
    description=f"One pending invitation per channel and user, {_BOUNDS}.",
    body=UserRefBody,
    data=ChannelUserJson,
    status=201,
    errors=(
        ChannelNotFoundError,
        NotAMemberError,
        ForbiddenRoleError,
        DirectMessageError,
        NotPrivateError,
        UserNotFoundError,
        AlreadyMemberError,
        AlreadyInvitedError,
        BannedError,
        TooManyInvitationsError,
    ),
    auth=Auth.REQUIRED,
)
async def invite(request: web.Request) -> web.Response:
    claims = await caller(request)
    channel_id = path_id(request, "id")
    user_id = (await read_body(request, UserRefBody)).user_id
    async with governing(request, claims, channel_id, user_id, Rank.MODERATOR) as (conn, found, _):
        if found.kind != "private":
            raise NotPrivateError()
        if not found.target_exists:
            raise UserNotFoundError()
        if found.target_role is not None:
            raise AlreadyMemberError("That user is already a member of this channel")
        if await moderation.is_banned(conn, channel_id, user_id):
            raise BannedError("That user is banned from this channel")
        await invitations.invite(conn, channel_id, user_id, claims.user_id)
    return ok("user invited", {"channel_id": channel_id, "user_id": user_id}, status=201)


@documented(
    "A private channel's pending invitations; moderators, the owner and admins",
    data=list[InvitationJson],
    query=PAGE,
    errors=(ChannelNotFoundError, NotAMemberError, ForbiddenRoleError, DirectMessageError),
    auth=Auth.REQUIRED,
)
async def list_channel_invitations(request: web.Request) -> web.Response:
    claims = await caller(request)
    channel_id = path_id(request, "id")
    limit, offset = page(request)
    pool = request.app[PG_POOL]
    require_rank(await moderation.standing(pool, channel_id, claims.user_id), Rank.MODERATOR)
    found = await invitations.list_invitations(
        pool, channel_id=channel_id, limit=limit, offset=offset
    )
    return ok("invitations retrieved", [_invitation_json(i) for i in found])


@documented(
    "Revoke a pending invitation; its inviter, moderators, the owner and admins",
    data=ChannelUserJson,
    errors=(
        ChannelNotFoundError,
        NotAMemberError,
        ForbiddenRoleError,
        DirectMessageError,
        InvitationNotFoundError,
    ),
    auth=Auth.REQUIRED,
)
async def revoke_invitation(request: web.Request) -> web.Response:
    claims = await caller(request)
    channel_id, user_id = path_id(request, "id"), path_id(request, "user_id")
    async with governing(request, claims, channel_id, user_id, Rank.MEMBER) as (conn, found, _):
        inviter = await invitations.inviter_of(conn, channel_id, user_id)
        if inviter is None:
            raise InvitationNotFoundError()
        rank = rank_of(found.actor_role, found.actor_admin)
        if inviter != claims.user_id and rank < Rank.MODERATOR:
            raise ForbiddenRoleError()
        await invitations.revoke(conn, channel_id, user_id)
    return ok("invitation revoked", {"channel_id": channel_id, "user_id": user_id})


@documented(
    "The caller's pending invitations, newest first",
    data=list[InvitationJson],
    query=PAGE,
    auth=Auth.REQUIRED,
)
async def list_my_invitations(request: web.Request) -> web.Response:
    claims = await caller(request)
    limit, offset = page(request)
    found = await invitations.list_invitations(
        request.app[PG_POOL], user_id=claims.user_id, limit=limit, offset=offset
    )
    return ok("invitations retrieved", [_invitation_json(i) for i in found])


@documented(
    "Accept an invitation: the caller becomes a member of the private channel",
    data=ChannelJson,
    errors=(
        InvitationNotFoundError,
        AlreadyMemberError,
        BannedError,
        ChannelNotFoundError,
        NotPrivateError,
    ),
    auth=Auth.REQUIRED,
)
async def accept_invitation(request: web.Request) -> web.Response:
    claims = await caller(request)
    channel_id = path_id(request, "channel_id")
    pool = request.app[PG_POOL]
    await channels.add_member(pool, channel_id, claims.user_id, invited=True)
    channel = await channels.get_channel(pool, channel_id)
    if channel is None:  # deleted since: the membership went with it
        raise ChannelNotFoundError()
    return ok("invitation accepted", channel_json(channel))


@documented(
    "Decline an invitation (it is deleted)",
    data=ChannelUserJson,
    errors=(InvitationNotFoundError,),
    auth=Auth.REQUIRED,
)
async def decline_invitation(request: web.Request) -> web.Response:
    claims = await caller(request)
    channel_id = path_id(request, "channel_id")
    if not await invitations.revoke(request.app[PG_POOL], channel_id, claims.user_id):
        raise InvitationNotFoundError()
    return ok("invitation declined", {"channel_id": channel_id, "user_id": claims.user_id})


@documented(
    "The direct message with a user, created on first ask",
    description="Idempotent, concurrent asks included: the same channel (kind `dm`, both users "
    "members) every time. Not with oneself (409 `direct_message`).",
    body=UserRefBody,
    data=DirectChannelJson,
    errors=(UserNotFoundError, DirectMessageError),
    auth=Auth.REQUIRED,
)
async def direct_message(request: web.Request) -> web.Response:
    claims = await caller(request)
    other_id = (await read_body(request, UserRefBody)).user_id
    if other_id == claims.user_id:
        raise DirectMessageError("A direct message needs another user")
    pool = request.app[PG_POOL]
    other = await users.get_user(pool, other_id)
    if other is None:
        raise UserNotFoundError()
    channel, _ = await direct_channels.direct_channel(pool, claims.user_id, other_id)
    data: DirectChannelJson = {
        **channel_json(channel),
        "other_user": author_json(other.id, other.name, other.username, other.avatar_url),
    }
    return ok("direct message retrieved", data)


def _invitation_json(found: Invitation) -> InvitationJson:
    return {
        "channel": channel_json(found.channel),
        "user_id": found.user_id,
        "username": found.username,
        "invited_by": found.invited_by,
        "created_at": iso_from_datetime(found.created_at),
    }
