"""SQL for invitations into private channels: invite, list, revoke (accepting is
`channels.add_member(..., invited=True)`; declining is `revoke`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from shared.db.records import Channel
from shared.errors import AlreadyInvitedError, TooManyInvitationsError

if TYPE_CHECKING:
    from shared.db.records import Executor

# Pending invitations at most, per channel and per invited user: bounds what
# one moderator can pile onto a channel, or onto someone's list.
MAX_PENDING_PER_CHANNEL = 500
MAX_PENDING_PER_USER = 100


@dataclass(frozen=True, slots=True)
class Invitation:
    channel: Channel
    user_id: int
    username: str
    invited_by: int | None
    created_at: dt.datetime


async def invite(db: Executor, channel_id: int, user_id: int, by: int) -> None:
    """Invite `user_id`; run in the transaction whose `standing(lock=True)` holds the
    channel's row (so the channel's count cannot race). The invitee's row is
    locked too, so two channels inviting one user at once count each other.

    Raises AlreadyInvitedError, TooManyInvitationsError.
    """
    await db.execute("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE", user_id)
    counts = await db.fetchrow(
        """SELECT (SELECT count(*) FROM channel_invitations WHERE channel_id = $1) AS channel,
                  (SELECT count(*) FROM channel_invitations WHERE user_id = $2) AS invitee""",
        channel_id,
        user_id,
    )
    assert counts is not None  # a SELECT without FROM yields one row
    if counts["channel"] >= MAX_PENDING_PER_CHANNEL or counts["invitee"] >= MAX_PENDING_PER_USER:
        raise TooManyInvitationsError()
    try:
        await db.execute(
            """INSERT INTO channel_invitations (channel_id, user_id, invited_by)
               VALUES ($1, $2, $3)""",
            channel_id,
            user_id,
            by,
        )
    except asyncpg.UniqueViolationError:
        raise AlreadyInvitedError() from None


async def inviter_of(db: Executor, channel_id: int, user_id: int) -> int | None:
    """Who invited `user_id` (0 when the inviter's account is gone); None: no invitation."""
    row = await db.fetchrow(
        "SELECT invited_by FROM channel_invitations WHERE channel_id = $1 AND user_id = $2",
        channel_id,
        user_id,
    )
    return None if row is None else row["invited_by"] or 0


async def revoke(db: Executor, channel_id: int, user_id: int) -> bool:
    """Delete the pending invitation; returns whether there was one."""
    status = await db.execute(
        "DELETE FROM channel_invitations WHERE channel_id = $1 AND user_id = $2",
        channel_id,
        user_id,
    )
    return status.endswith(" 1")


async def list_invitations(
    db: Executor,
    *,
    channel_id: int | None = None,
    user_id: int | None = None,
    limit: int,
    offset: int,
) -> list[Invitation]:
    """Pending invitations of one channel, or of one invited user, newest first."""
    rows = await db.fetch(
        """SELECT c.id, c.name, c.description, c.image_url, c.created_at, c.kind,
                  i.user_id, u.username, i.invited_by, i.created_at AS invited_at
            FROM channel_invitations i
            JOIN channels c ON c.id = i.channel_id
            JOIN users u ON u.id = i.user_id
            WHERE ($1::bigint IS NULL OR i.channel_id = $1)
              AND ($2::bigint IS NULL OR i.user_id = $2)
            ORDER BY i.created_at DESC, i.channel_id, i.user_id
            LIMIT $3 OFFSET $4""",
        channel_id,
        user_id,
        limit,
        offset,
    )
    return [
        Invitation(
            channel=Channel.from_record(row),
            user_id=row["user_id"],
            username=row["username"],
            invited_by=row["invited_by"],
            created_at=row["invited_at"],
        )
        for row in rows
    ]
