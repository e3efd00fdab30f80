"""`/api/v1/channels/{id}/...`: roles, ownership, kicks, bans and mutes.

Who may do what is `gateway.roles`; each change runs in one transaction that
first locks the channel's governance (`shared.db.moderation.standing`), so the
check and the write see the same roles. After the commit, what must reach the
sockets is published on the channel's topic: a kick or ban closes the user's
sockets in the channel on every gateway (`member_removed`, 4403; the
membership audit is the backstop), a mute or unmute sets their sockets'
`muted_until` on every gateway (`muted`, see `gateway.mutes`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from asyncpg.pool import PoolConnectionProxy

from gateway.api.common import PAGE, caller, ok, page, path_id, read_body
from gateway.api.docs import Auth, documented
from gateway.app_keys import CONTROL_EVENTS, PG_POOL
from gateway.auth import TokenClaims
from gateway.mutes import until_ms
from gateway.roles import Rank, check_target, require_rank
from shared.db import channels, moderation
from shared.db.moderation import Restriction, Standing
from shared.errors import (
    ChannelNotFoundError,
    DirectMessageError,
    ForbiddenRoleError,
    MemberNotFoundError,
    NotAMemberError,
    UnavailableError,
    UserNotFoundError,
)
from shared.responses import (
    ChannelUserJson,
    ListedRestrictionJson,
    MemberRoleJson,
    RestrictionJson,
)
from shared.wire import BanBody, MuteBody, RoleBody, UserRefBody, iso_from_datetime

Connection = PoolConnectionProxy

# What every governance route can refuse, besides its own.
_GOVERNANCE_ERRORS = (
    ChannelNotFoundError,
    NotAMemberError,
    ForbiddenRoleError,
    DirectMessageError,
    UserNotFoundError,
)
_MEMBER_TARGET_ERRORS = (*_GOVERNANCE_ERRORS, MemberNotFoundError)
_SOCKETS_TOLD = (
    " Published to every gateway (503 `unavailable` if Redis is down: the change is stored, and "
    "the membership audit applies it within MEMBERSHIP_RECHECK_SECONDS)."
)


@asynccontextmanager
async def governing(
    request: web.Request,
    claims: TokenClaims,
    channel_id: int,
    target_id: int,
    at_least: Rank,
) -> AsyncIterator[tuple[Connection, Standing, Rank]]:
    """A transaction holding the channel's governance lock, once the caller is found to
    rank `at_least`: yields the connection, the standing and the caller's rank."""
    async with request.app[PG_POOL].acquire() as conn, conn.transaction():
        found = await moderation.standing(conn, channel_id, claims.user_id, target_id, lock=True)
        rank = require_rank(found, at_least)
        assert found is not None  # require_rank refuses a missing channel
        yield conn, found, rank


async def _target(request: web.Request) -> tuple[TokenClaims, int, int]:
    claims = await caller(request)
    return claims, path_id(request, "id"), path_id(request, "user_id")


@documented(
    "Make a member a moderator, or a moderator a member; the owner and admins only",
    body=RoleBody,
    data=MemberRoleJson,
    errors=_MEMBER_TARGET_ERRORS,
    auth=Auth.REQUIRED,
)
async def set_role(request: web.Request) -> web.Response:
    claims, channel_id, user_id = await _target(request)
    body = await read_body(request, RoleBody)
    async with governing(request, claims, channel_id, user_id, Rank.OWNER) as (conn, found, rank):
        check_target(found, rank, claims.user_id, user_id, member=True)
        await moderation.set_role(conn, channel_id, user_id, body.role)
    data: MemberRoleJson = {"channel_id": channel_id, "user_id": user_id, "role": body.role}
    return ok("role changed", data)


@documented(
    "Hand the channel's ownership to a member; the owner and admins only",
    description="Atomic: the owner becomes a moderator and the member the owner, in one "
    "transaction; a channel never has two owners.",
    body=UserRefBody,
    data=MemberRoleJson,
    errors=_MEMBER_TARGET_ERRORS,
    auth=Auth.REQUIRED,
)
async def transfer_ownership(request: web.Request) -> web.Response:
    claims = await caller(request)
    channel_id = path_id(request, "id")
    body = await read_body(request, UserRefBody)
    user_id = body.user_id
    async with governing(request, claims, channel_id, user_id, Rank.OWNER) as (conn, found, rank):
        check_target(found, rank, claims.user_id, user_id, member=True, outranked=False)
        await moderation.transfer_ownership(conn, channel_id, user_id)
    data: MemberRoleJson = {"channel_id": channel_id, "user_id": user_id, "role": "owner"}
    return ok("ownership transferred", data)


@documented(
    "Remove a member (who may join again); moderators, the owner and admins",
    description="The member's sockets in the channel close with 4403 on every gateway."
    + _SOCKETS_TOLD,
    body=UserRefBody,
    data=ChannelUserJson,
    errors=(*_MEMBER_TARGET_ERRORS, UnavailableError),
    auth=Auth.REQUIRED,
)
async def kick(request: web.Request) -> web.Response:
    claims = await caller(request)
    channel_id = path_id(request, "id")
    user_id = (await read_body(request, UserRefBody)).user_id
    async with governing(request, claims, channel_id, user_id, Rank.MODERATOR) as (
        conn,
        found,
        rank,
    ):
        check_target(found, rank, claims.user_id, user_id, member=True)
        await channels.remove_member(conn, channel_id, user_id)
    await request.app[CONTROL_EVENTS].publish_member_removed(channel_id, user_id)
    return ok("member kicked", _channel_user(channel_id, user_id))


@documented(
    "Ban a user (a member or not), optionally for a duration; moderators, the owner and admins",
    description="Ends the membership and any pending invitation; a banned user cannot join, be "
    "invited or accept an invitation (403 `banned`) for `duration_seconds` (none: until "
    "unbanned); the answer's `until` is when it ends. The "
    "user's sockets in the channel close with 4403 on every gateway." + _SOCKETS_TOLD,
    body=BanBody,
    data=RestrictionJson,
    errors=(*_GOVERNANCE_ERRORS, UnavailableError),
    auth=Auth.REQUIRED,
)
async def ban(request: web.Request) -> web.Response:
    claims = await caller(request)
    channel_id = path_id(request, "id")
    body = await read_body(request, BanBody)
    user_id = body.user_id
    async with governing(request, claims, channel_id, user_id, Rank.MODERATOR) as (
        conn,
        found,
        rank,
    ):
        check_target(found, rank, claims.user_id, user_id, member=False)
        was_member, until = await moderation.ban(
            conn, channel_id, user_id, claims.user_id, body.duration_seconds
        )
    if was_member:
        await request.app[CONTROL_EVENTS].publish_member_removed(channel_id, user_id)
    data: RestrictionJson = {
        "channel_id": channel_id,
        "user_id": user_id,
        "until": None if until is None else iso_from_datetime(until),
    }
    return ok("user banned", data)


@documented(
    "Lift a user's ban (idempotent); moderators, the owner and admins",
    data=ChannelUserJson,
    errors=_GOVERNANCE_ERRORS,
    auth=Auth.REQUIRED,
)
async def unban(request: web.Request) -> web.Response:
    claims, channel_id, user_id = await _target(request)
    async with governing(request, claims, channel_id, user_id, Rank.MODERATOR) as (
        conn,
        found,
        rank,
    ):
        check_target(found, rank, claims.user_id, user_id, member=False)
        await moderation.unban(conn, channel_id, user_id)
    return ok("user unbanned", _channel_user(channel_id, user_id))


@documented(
    "Mute a member for a duration; moderators, the owner and admins",
    description="A muted member reads but cannot send, type or react (403 / error frame "
    "`muted`), on every gateway at once, until the mute ends; a new mute replaces the old. It "
    "survives leaving and rejoining." + _SOCKETS_TOLD,
    body=MuteBody,
    data=RestrictionJson,
    errors=(*_MEMBER_TARGET_ERRORS, UnavailableError),
    auth=Auth.REQUIRED,
)
async def mute(request: web.Request) -> web.Response:
    claims = await caller(request)
    channel_id = path_id(request, "id")
    body = await read_body(request, MuteBody)
    user_id = body.user_id
    async with governing(request, claims, channel_id, user_id, Rank.MODERATOR) as (
        conn,
        found,
        rank,
    ):
        check_target(found, rank, claims.user_id, user_id, member=True)
        until = await moderation.mute(
            conn, channel_id, user_id, claims.user_id, body.duration_seconds
        )
    await request.app[CONTROL_EVENTS].publish_muted(channel_id, user_id, until_ms(until))
    data: RestrictionJson = {
        "channel_id": channel_id,
        "user_id": user_id,
        "until": iso_from_datetime(until),
    }
    return ok("member muted", data)


@documented(
    "Lift a user's mute (idempotent); moderators, the owner and admins",
    description="Published to every gateway, like the mute." + _SOCKETS_TOLD,
    data=ChannelUserJson,
    errors=(*_GOVERNANCE_ERRORS, UnavailableError),
    auth=Auth.REQUIRED,
)
async def unmute(request: web.Request) -> web.Response:
    claims, channel_id, user_id = await _target(request)
    async with governing(request, claims, channel_id, user_id, Rank.MODERATOR) as (
        conn,
        found,
        rank,
    ):
        check_target(found, rank, claims.user_id, user_id, member=False)
        await moderation.unmute(conn, channel_id, user_id)
    await request.app[CONTROL_EVENTS].publish_muted(channel_id, user_id, 0)
    return ok("member unmuted", _channel_user(channel_id, user_id))


async def _restrictions(request: web.Request, table: str) -> list[ListedRestrictionJson]:
    claims = await caller(request)
    channel_id = path_id(request, "id")
    limit, offset = page(request)
    pool = request.app[PG_POOL]
    require_rank(await moderation.standing(pool, channel_id, claims.user_id), Rank.MODERATOR)
    found = await moderation.list_restrictions(pool, channel_id, table, limit=limit, offset=offset)
    return [_restriction_json(r) for r in found]


@documented(
    "The bans in force, newest first; moderators, the owner and admins",
    data=list[ListedRestrictionJson],
    query=PAGE,
    errors=(ChannelNotFoundError, NotAMemberError, ForbiddenRoleError, DirectMessageError),
    auth=Auth.REQUIRED,
)
async def list_bans(request: web.Request) -> web.Response:
    return ok("bans retrieved", await _restrictions(request, "bans"))


@documented(
    "The mutes in force, newest first; moderators, the owner and admins",
    data=list[ListedRestrictionJson],
    query=PAGE,
    errors=(ChannelNotFoundError, NotAMemberError, ForbiddenRoleError, DirectMessageError),
    auth=Auth.REQUIRED,
)
async def list_mutes(request: web.Request) -> web.Response:
    return ok("mutes retrieved", await _restrictions(request, "mutes"))


def _channel_user(channel_id: int, user_id: int) -> ChannelUserJson:
    return {"channel_id": channel_id, "user_id": user_id}


def _restriction_json(found: Restriction) -> ListedRestrictionJson:
    return {
        "user_id": found.user_id,
        "username": found.username,
        "by": found.by,
        "until": None if found.until is None else iso_from_datetime(found.until),
        "created_at": iso_from_datetime(found.created_at),
    }
