"""SQL for channel governance: who stands where, roles, ownership, kicks, bans, mutes.

Every change runs in the caller's transaction after `standing(..., lock=True)`,
which takes the channel's row `FOR NO KEY UPDATE`: two moderations of one
channel are serialized, and a join (`channels.add_member` takes the row
`FOR SHARE`) cannot slip a banned user back in between a ban's check and its
write. `NO KEY` leaves the foreign-key checks of message inserts unblocked.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.db.records import Executor


@dataclass(frozen=True, slots=True)
class Standing:
    """A channel's kind and where an actor, and optionally a target user, stand in it."""

    kind: str  # public, private or dm
    actor_role: str | None  # owner, moderator, member; None: not a member
    actor_admin: bool  # the global `admin` role
    target_exists: bool
    target_role: str | None
    target_admin: bool


_STANDING = """
SELECT c.kind,
       (SELECT role FROM memberships WHERE channel_id = c.id AND user_id = $2) AS actor_role,
       (SELECT role FROM users WHERE id = $2) AS actor_user_role,
       (SELECT role FROM memberships WHERE channel_id = c.id AND user_id = $3) AS target_role,
       (SELECT role FROM users WHERE id = $3) AS target_user_role
FROM channels c WHERE c.id = $1
"""


async def standing(
    db: Executor, channel_id: int, actor_id: int, target_id: int = 0, *, lock: bool = False
) -> Standing | None:
    """None when the channel does not exist. `lock` (in a transaction) serializes this
    channel's governance until the transaction ends.

    The lock is taken by a statement of its own, before the read: a statement that
    waited for a row lock re-checks the locked row, but its subqueries keep the
    snapshot from before the wait, so a read in the same statement would see the
    roles as they were before the transaction it waited for (eight concurrent
    transfers by one owner then all found them still the owner).
    """
    if lock:
        await db.execute("SELECT 1 FROM channels WHERE id = $1 FOR NO KEY UPDATE", channel_id)
    row = await db.fetchrow(_STANDING, channel_id, actor_id, target_id)
    if row is None:
        return None
    return Standing(
        kind=row["kind"],
        actor_role=row["actor_role"],
        actor_admin=row["actor_user_role"] == "admin",
        target_exists=row["target_user_role"] is not None,
        target_role=row["target_role"],
        target_admin=row["target_user_role"] == "admin",
    )


async def set_role(db: Executor, channel_id: int, user_id: int, role: str) -> None:
    await db.execute(
        "UPDATE memberships SET role = $3 WHERE channel_id = $1 AND user_id = $2",
        channel_id,
        user_id,
        role,
    )


async def transfer_ownership(db: Executor, channel_id: int, user_id: int) -> None:
    """The owner (if any) becomes a moderator, then `user_id` the owner: in this order,
    so the one-owner index never sees two. Run in a transaction."""
    await db.execute(
        "UPDATE memberships SET role = 'moderator' WHERE channel_id = $1 AND role = 'owner'",
        channel_id,
    )
    await set_role(db, channel_id, user_id, "owner")


async def ban(
    db: Executor, channel_id: int, user_id: int, by: int, seconds: int | None
) -> tuple[bool, dt.datetime | None]:
    """Ban for `seconds` from now (None: until lifted), replacing an earlier ban; end the
    membership and any pending invitation. Returns whether the user was a member,
    and when the ban ends. Run in a transaction."""
    until: dt.datetime | None = await db.fetchval(
        """INSERT INTO channel_bans (channel_id, user_id, banned_by, until)
           VALUES ($1, $2, $3, date_trunc('milliseconds', now() + make_interval(secs => $4)))
           ON CONFLICT (channel_id, user_id)
           DO UPDATE SET banned_by = $3, until = EXCLUDED.until, created_at = now()
           RETURNING until""",
        channel_id,
        user_id,
        by,
        seconds,
    )
    await db.execute(
        "DELETE FROM channel_invitations WHERE channel_id = $1 AND user_id = $2",
        channel_id,
        user_id,
    )
    status = await db.execute(
        "DELETE FROM memberships WHERE channel_id = $1 AND user_id = $2", channel_id, user_id
    )
    return status.endswith(" 1"), until


async def unban(db: Executor, channel_id: int, user_id: int) -> bool:
    """Returns whether a ban in force was lifted."""
    status = await db.execute(
        """DELETE FROM channel_bans WHERE channel_id = $1 AND user_id = $2
           AND (until IS NULL OR until > now())""",
        channel_id,
        user_id,
    )
    return status.endswith(" 1")


async def is_banned(db: Executor, channel_id: int, user_id: int) -> bool:
    found: bool = await db.fetchval(
        """SELECT EXISTS (SELECT 1 FROM channel_bans WHERE channel_id = $1 AND user_id = $2
                          AND (until IS NULL OR until > now()))""",
        channel_id,
        user_id,
    )
    return found


async def mute(db: Executor, channel_id: int, user_id: int, by: int, seconds: int) -> dt.datetime:
    """Mute for `seconds` from now (replacing an earlier mute); returns when it ends.

    Ends (of bans too) are whole milliseconds: what the wire carries, so the end a
    socket reports and the one the REST answer gave are the same."""
    until: dt.datetime = await db.fetchval(
        """INSERT INTO channel_mutes (channel_id, user_id, muted_by, until)
           VALUES ($1, $2, $3, date_trunc('milliseconds', now() + make_interval(secs => $4)))
           ON CONFLICT (channel_id, user_id)
           DO UPDATE SET muted_by = $3, until = EXCLUDED.until, created_at = now()
           RETURNING until""",
        channel_id,
        user_id,
        by,
        seconds,
    )
    return until


async def unmute(db: Executor, channel_id: int, user_id: int) -> bool:
    """Returns whether a mute in force was lifted."""
    status = await db.execute(
        """DELETE FROM channel_mutes WHERE channel_id = $1 AND user_id = $2 AND until > now()""",
        channel_id,
        user_id,
    )
    return status.endswith(" 1")


async def muted_until(db: Executor, channel_id: int, user_id: int) -> dt.datetime | None:
    """When the user's mute in the channel ends, or None when they are not muted."""
    until: dt.datetime | None = await db.fetchval(
        "SELECT until FROM channel_mutes WHERE channel_id = $1 AND user_id = $2 AND until > now()",
        channel_id,
        user_id,
    )
    return until


@dataclass(frozen=True, slots=True)
class Restriction:
    """A ban or a mute in force, as moderators list them."""

    user_id: int
    username: str
    by: int | None
    until: dt.datetime | None
    created_at: dt.datetime


_BANS = """
SELECT r.user_id, u.username, r.banned_by AS by, r.until, r.created_at
FROM channel_bans r JOIN users u ON u.id = r.user_id
WHERE r.channel_id = $1 AND (r.until IS NULL OR r.until > now())
ORDER BY r.created_at DESC, r.user_id
LIMIT $2 OFFSET $3
"""
_MUTES = """
SELECT r.user_id, u.username, r.muted_by AS by, r.until, r.created_at
FROM channel_mutes r JOIN users u ON u.id = r.user_id
WHERE r.channel_id = $1 AND r.until > now()
ORDER BY r.created_at DESC, r.user_id
LIMIT $2 OFFSET $3
"""


async def list_restrictions(
    db: Executor, channel_id: int, table: str, *, limit: int, offset: int
) -> list[Restriction]:
    """The bans (`table` "bans") or mutes ("mutes") in force, newest first."""
    rows = await db.fetch(_BANS if table == "bans" else _MUTES, channel_id, limit, offset)
    return [
        Restriction(
            user_id=row["user_id"],
            username=row["username"],
            by=row["by"],
            until=row["until"],
            created_at=row["created_at"],
        )
        for row in rows
    ]


async def mutes_of(
    db: Executor, channel_ids: list[int], user_ids: list[int]
) -> dict[tuple[int, int], dt.datetime]:
    """The mutes in force among these (channel, user) pairs: one statement for any
    number (what the membership audit refreshes its sockets from)."""
    rows = await db.fetch(
        """SELECT x.channel_id, x.user_id, x.until
           FROM unnest($1::bigint[], $2::bigint[]) AS s(channel_id, user_id)
           JOIN channel_mutes x ON x.channel_id = s.channel_id AND x.user_id = s.user_id
           WHERE x.until > now()""",
        channel_ids,
        user_ids,
    )
    return {(row["channel_id"], row["user_id"]): row["until"] for row in rows}
