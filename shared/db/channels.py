"""SQL for channels and memberships: create, list, join, leave, access checks and audits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import asyncpg

from shared.db.records import Channel, ChatAccess, LostAccess, Member, User

if TYPE_CHECKING:
    from shared.db.records import Executor

from shared.db.moderation import is_banned
from shared.errors import (
    AlreadyMemberError,
    BannedError,
    ChannelNameTakenError,
    ChannelNotFoundError,
    InvitationNotFoundError,
    NotPrivateError,
)


async def create_channel(
    pool: asyncpg.Pool[asyncpg.Record],
    *,
    name: str,
    description: str,
    image_url: str | None,
    owner_id: int,
    private: bool = False,
) -> Channel:
    """Create a channel whose creator is its owner, atomically.

    Raises ChannelNameTakenError when the name exists in any case.
    """
    async with pool.acquire() as conn, conn.transaction():
        try:
            row = await conn.fetchrow(
                """INSERT INTO channels (name, description, image_url, created_by, kind)
                    VALUES ($1, $2, $3, $4, $5)
                   RETURNING id, name, description, image_url, created_at, kind""",
                name,
                description,
                image_url,
                owner_id,
                "private" if private else "public",
            )
        except asyncpg.UniqueViolationError:
            raise ChannelNameTakenError() from None
        assert row is not None  # INSERT ... RETURNING always yields the row
        await conn.execute(
            "INSERT INTO memberships (channel_id, user_id, role) VALUES ($1, $2, 'owner')",
            row["id"],
            owner_id,
        )
    return Channel.from_record(row)


async def get_channel(db: Executor, channel_id: int) -> Channel | None:
    row = await db.fetchrow(
        "SELECT id, name, description, image_url, created_at, kind FROM channels WHERE id = $1",
        channel_id,
    )
    return None if row is None else Channel.from_record(row)


async def list_channels(
    db: Executor, *, limit: int, offset: int, member_id: int | None = None
) -> list[Channel]:
    """Public channels, and the private ones `member_id` is a member of (never direct
    messages: those are in the caller's own list)."""
    rows = await db.fetch(
        """SELECT id, name, description, image_url, created_at, kind FROM channels c
           WHERE c.kind = 'public'
              OR (c.kind = 'private' AND EXISTS (
                  SELECT 1 FROM memberships m WHERE m.channel_id = c.id AND m.user_id = $3))
           ORDER BY id LIMIT $1 OFFSET $2""",
        limit,
        offset,
        member_id,
    )
    return [Channel.from_record(row) for row in rows]


async def add_member(
    pool: asyncpg.Pool[asyncpg.Record], channel_id: int, user_id: int, *, invited: bool = False
) -> None:
    """Join a public channel, or (`invited`) accept the pending invitation into a private one.

    One transaction, which takes the channel's row `FOR SHARE`: a ban being
    written (see `shared.db.moderation`) finishes first, so a banned user
    never slips in. A private channel or direct message the user is not in is
    `ChannelNotFoundError` to a join, as if it did not exist.

    Raises ChannelNotFoundError, AlreadyMemberError, InvitationNotFoundError,
    NotPrivateError, BannedError.
    """
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """SELECT c.kind, EXISTS (SELECT 1 FROM memberships m
                                      WHERE m.channel_id = c.id AND m.user_id = $2) AS member
               FROM channels c WHERE c.id = $1 FOR SHARE""",
            channel_id,
            user_id,
        )
        if row is None:
            raise ChannelNotFoundError()
        if row["member"]:
            raise AlreadyMemberError()
        if invited:
            if row["kind"] == "public":
                raise NotPrivateError()
            status = await conn.execute(
                "DELETE FROM channel_invitations WHERE channel_id = $1 AND user_id = $2",
                channel_id,
                user_id,
            )
            if not status.endswith(" 1"):
                raise InvitationNotFoundError()
        elif row["kind"] != "public":
            raise ChannelNotFoundError()
        if await is_banned(conn, channel_id, user_id):
            raise BannedError()
        try:
            await conn.execute(
                "INSERT INTO memberships (channel_id, user_id) VALUES ($1, $2)",
                channel_id,
                user_id,
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyMemberError() from None  # a concurrent join of the same user


async def remove_member(db: Executor, channel_id: int, user_id: int) -> bool:
    """Returns whether the user was a member."""
    status = await db.execute(
        "DELETE FROM memberships WHERE channel_id = $1 AND user_id = $2", channel_id, user_id
    )
    return status.endswith(" 1")


async def member_role(db: Executor, channel_id: int, user_id: int) -> str | None:
    role: str | None = await db.fetchval(
        "SELECT role FROM memberships WHERE channel_id = $1 AND user_id = $2",
        channel_id,
        user_id,
    )
    return role


async def list_members(db: Executor, channel_id: int, *, limit: int, offset: int) -> list[Member]:
    rows = await db.fetch(
        """SELECT u.id, u.name, u.username, u.avatar_url, m.role, m.joined_at
           FROM memberships m JOIN users u ON u.id = m.user_id
           WHERE m.channel_id = $1
           ORDER BY m.joined_at, u.id
           LIMIT $2 OFFSET $3""",
        channel_id,
        limit,
        offset,
    )
    return [Member.from_record(row) for row in rows]


async def chat_access(db: Executor, channel_id: int, user_id: int) -> ChatAccess:
    """Channel existence and kind, the user's role and mute in it, the user's profile
    and token generation, in one query."""
    row = await db.fetchrow(
        """SELECT (SELECT kind FROM channels WHERE id = $1) AS channel_kind,
                  m.role AS member_role,
                  u.id, u.name, u.username, u.email, u.avatar_url, u.role, u.created_at,
                  u.token_generation,
                  (SELECT x.until FROM channel_mutes x
                    WHERE x.channel_id = $1 AND x.user_id = u.id AND x.until > now())
                    AS muted_until
           FROM users u
           LEFT JOIN memberships m ON m.channel_id = $1 AND m.user_id = u.id
           WHERE u.id = $2""",
        channel_id,
        user_id,
    )
    if row is None:
        exists = await db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM channels WHERE id = $1)", channel_id
        )
        return ChatAccess(channel_exists=bool(exists), role=None, user=None, token_generation=None)
    return ChatAccess(
        channel_exists=row["channel_kind"] is not None,
        role=row["member_role"],
        user=User.from_record(row),
        token_generation=row["token_generation"],
        channel_kind=row["channel_kind"],
        muted_until=row["muted_until"],
    )


# The membership audit's question for a whole gateway at once: which of these
# sockets, each (channel, user, token generation it was opened with), may no
# longer stay open. Every reason is a condition of the one WHERE clause, and
# the CASE names it: a revoked token (or a deleted user) first, then a
# membership that is gone. `check_generation` in gateway/auth.py is the same
# token test, made at connect time.
_SOCKETS_WITHOUT_ACCESS = """
SELECT s.channel_id, s.user_id, s.token_generation,
       CASE WHEN u.token_generation IS DISTINCT FROM s.token_generation
            THEN 'tokens_revoked' ELSE 'member_removed' END AS reason
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[])
     AS s(channel_id, user_id, token_generation)
LEFT JOIN users u ON u.id = s.user_id
WHERE u.token_generation IS DISTINCT FROM s.token_generation
   OR NOT EXISTS (
       SELECT 1 FROM memberships m WHERE m.channel_id = s.channel_id AND m.user_id = s.user_id
   )
"""


async def sockets_without_access(
    db: Executor,
    channel_ids: Sequence[int],
    user_ids: Sequence[int],
    token_generations: Sequence[int],
) -> list[LostAccess]:
    """Which of the sockets `(channel_ids[i], user_ids[i], token_generations[i])` may no
    longer stay open, and why.

    One statement for any number of them (arrays in, unnest to rows). Listed:
    a user whose tokens of that generation were revoked (log-out, password
    change) or who was deleted (`tokens_revoked`), and a user who is no longer
    a member of the channel (`member_removed`).
    """
    rows = await db.fetch(_SOCKETS_WITHOUT_ACCESS, channel_ids, user_ids, token_generations)
    return [
        LostAccess(
            channel_id=row["channel_id"],
            user_id=row["user_id"],
            token_generation=row["token_generation"],
            reason=row["reason"],
        )
        for row in rows
    ]
