"""Who may govern a channel: the ranks and the rules every governance route applies.

Ranks, lowest first: outsider (not a member), member, moderator, owner, and
the global `admin` role above all. An actor acts on a target only when the
target ranks strictly lower (a moderator on members, the owner on moderators
and members, an admin on anyone below admin), never on themselves, and nobody
kicks, bans or mutes the owner: a channel keeps exactly one owner, so an
admin moves ownership first. A target who is a global admin outranks every
channel role. A direct message has no roles: nothing here applies in one.
A private channel or direct message is "not found" to an outsider who is not
an admin, so its existence does not leak.
"""

from __future__ import annotations

from enum import IntEnum

from shared.db.moderation import Standing
from shared.errors import (
    ChannelNotFoundError,
    DirectMessageError,
    ForbiddenRoleError,
    MemberNotFoundError,
    NotAMemberError,
    UserNotFoundError,
)


class Rank(IntEnum):
    OUTSIDER = 0
    MEMBER = 1
    MODERATOR = 2
    OWNER = 3
    ADMIN = 4


_CHANNEL_RANKS = {"member": Rank.MEMBER, "moderator": Rank.MODERATOR, "owner": Rank.OWNER}


def rank_of(channel_role: str | None, admin: bool) -> Rank:
    if admin:
        return Rank.ADMIN
    return _CHANNEL_RANKS.get(channel_role or "", Rank.OUTSIDER)


def check_visible(standing: Standing | None) -> Standing:
    """The channel, if the actor may know it exists: raises ChannelNotFoundError."""
    if standing is None:
        raise ChannelNotFoundError()
    if standing.kind != "public" and standing.actor_role is None and not standing.actor_admin:
        raise ChannelNotFoundError()
    return standing


def require_rank(standing: Standing | None, at_least: Rank) -> Rank:
    """The actor's rank, if it is `at_least`; raises ChannelNotFoundError,
    DirectMessageError, NotAMemberError or ForbiddenRoleError."""
    found = check_visible(standing)
    if found.kind == "dm":
        raise DirectMessageError()
    rank = rank_of(found.actor_role, found.actor_admin)
    if rank is Rank.OUTSIDER:
        raise NotAMemberError()
    if rank < at_least:
        raise ForbiddenRoleError()
    return rank


def check_target(
    standing: Standing,
    actor: Rank,
    actor_id: int,
    target_id: int,
    *,
    member: bool,
    outranked: bool = True,
) -> None:
    """Whether the actor may act on the target (see the module docstring); `member`:
    the target must be a member; `outranked`: the target must rank below the actor
    (not so for a transfer of ownership, which raises the target). Raises
    UserNotFoundError, MemberNotFoundError, ForbiddenRoleError."""
    if not standing.target_exists:
        raise UserNotFoundError()
    if target_id == actor_id:
        raise ForbiddenRoleError("You cannot do this to yourself")
    if standing.target_role == "owner":
        raise ForbiddenRoleError("The owner cannot be moderated; transfer ownership first")
    if member and standing.target_role is None:
        raise MemberNotFoundError()
    if outranked and rank_of(standing.target_role, standing.target_admin) >= actor:
        raise ForbiddenRoleError("You can act only on users ranking below you")
