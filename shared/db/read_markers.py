"""SQL for read markers: moving a member's marker forward, and the caller's channel list
with unread counts and each channel's last message.

The marker is `memberships.last_read_seq` (migration 004): it exists while the
membership does, and only moves forward.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.db.records import Channel

if TYPE_CHECKING:
    from shared.db.records import Executor

# Characters of a message's text in a channel list's preview: enough for one
# line, and the list never carries whole 10 KB bodies.
PREVIEW_CHARS = 100
# Unread messages are counted in the table up to this many per channel, so a
# channel list costs at most this many index entries per channel; clients show
# more as "999+".
UNREAD_COUNT_MAX = 1000

# Moves the marker to min(seq, the channel's last seq), never back. The last
# seq is the higher of the Redis counter the caller read ($4; 0 when it has
# none) and the highest stored seq (an index-only probe of (channel_id, seq)):
# a marker never points past what exists. No row: not moved, or not a member.
_MOVE = """
UPDATE memberships m
   SET last_read_seq = t.target, read_at = now()
  FROM (SELECT LEAST($3::bigint, GREATEST($4::bigint,
               (SELECT COALESCE(max(seq), 0) FROM messages WHERE channel_id = $1))) AS target) t
 WHERE m.channel_id = $1 AND m.user_id = $2 AND m.last_read_seq < t.target
RETURNING m.last_read_seq
"""
_CURRENT = "SELECT last_read_seq FROM memberships WHERE channel_id = $1 AND user_id = $2"


@dataclass(frozen=True, slots=True)
class MarkResult:
    last_read_seq: int  # the stored marker after the call
    moved: bool  # whether this call moved it


async def mark_read(
    db: Executor, channel_id: int, user_id: int, seq: int, *, counter: int
) -> MarkResult | None:
    """Move the user's marker in the channel up to `seq`, clamped to the channel's last
    seq (the higher of `counter`, the Redis counter or 0, and the highest stored seq).

    A lower `seq` leaves the marker where it is. Returns None when the user is
    not a member (or the channel does not exist). One statement when the marker
    moves; a second, a primary-key read, when it does not, so the answer is the
    committed marker even when a concurrent call moved it further.
    """
    moved = await db.fetchval(_MOVE, channel_id, user_id, seq, counter)
    if moved is not None:
        return MarkResult(last_read_seq=int(moved), moved=True)
    current = await db.fetchval(_CURRENT, channel_id, user_id)
    return None if current is None else MarkResult(last_read_seq=int(current), moved=False)


@dataclass(frozen=True, slots=True)
class LastMessage:
    """A channel's newest stored message, as a list shows it."""

    id: int
    seq: int
    user_id: int
    user_name: str
    user_username: str
    user_avatar_url: str | None
    type: str  # the body's type: text or file
    preview: str  # the first PREVIEW_CHARS of the text, or the file's name
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class MyChannel:
    """One of the caller's channels, with their marker and its newest stored message."""

    channel: Channel
    role: str
    last_read_seq: int
    stored_seq: int  # the highest persisted seq, events included: 0 without any
    # Persisted messages after the marker (events, which take seqs too, not
    # counted), up to UNREAD_COUNT_MAX.
    stored_unread: int
    last_message: LastMessage | None
    other_user: OtherUser | None = None  # a direct message's other user


@dataclass(frozen=True, slots=True)
class OtherUser:
    id: int
    name: str
    username: str
    avatar_url: str | None


# One statement for the whole page. Each membership's newest message is one
# backward probe of the (channel_id, seq) unique index (LATERAL ... ORDER BY seq
# DESC LIMIT 1; it steps over the change events, edits, deletes and reactions,
# newer than that message), and its author one primary-key probe, so the cost grows with
# the caller's channel count, never with message counts. Activity is the last
# stored message's time, else when the caller joined. Only the preview's first
# characters leave the database, not the body.
_MY_CHANNELS = """
SELECT c.id, c.name, c.description, c.image_url, c.created_at, c.kind,
       m.role, m.last_read_seq,
       o.id AS other_id, o.name AS other_name, o.username AS other_username,
       o.avatar_url AS other_avatar_url,
       lm.id AS message_id, lm.seq AS message_seq, lm.user_id AS message_user_id,
       lm.type AS message_type, lm.preview AS message_preview,
       lm.created_at AS message_created_at,
       u.name AS user_name, u.username AS user_username, u.avatar_url AS user_avatar_url,
       COALESCE(top.seq, 0) AS stored_seq, unread.n AS stored_unread
FROM memberships m
JOIN channels c ON c.id = m.channel_id
-- The highest stored seq, whatever its kind: one backward index probe.
LEFT JOIN LATERAL (
    SELECT t.seq FROM messages t WHERE t.channel_id = m.channel_id ORDER BY t.seq DESC LIMIT 1
) top ON true
-- Messages after the marker, capped: a range of the (channel_id, seq) index.
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM (
        SELECT 1 FROM messages r
        WHERE r.channel_id = m.channel_id AND r.seq > m.last_read_seq AND r.kind = 'message'
        LIMIT $5
    ) capped
) unread
LEFT JOIN LATERAL (
    SELECT x.id, x.seq, x.user_id, x.created_at, x.body->>'type' AS type,
           left(COALESCE(x.body->>'content', x.body->>'filename', ''), $4) AS preview
    FROM messages x
    WHERE x.channel_id = m.channel_id AND x.kind = 'message'
    ORDER BY x.seq DESC
    LIMIT 1
) lm ON true
LEFT JOIN users u ON u.id = lm.user_id
-- A direct message's other user: one unique-index probe, one primary-key probe.
LEFT JOIN direct_channels d ON c.kind = 'dm' AND d.channel_id = c.id
LEFT JOIN users o ON o.id = CASE WHEN d.user_low = $1 THEN d.user_high ELSE d.user_low END
WHERE m.user_id = $1
ORDER BY COALESCE(lm.created_at, m.joined_at) DESC, c.id DESC
LIMIT $2 OFFSET $3
"""


async def list_my_channels(
    db: Executor, user_id: int, *, limit: int, offset: int
) -> list[MyChannel]:
    """The user's channels, most recently active first, with the marker and the newest
    stored message of each: one statement, whatever the number of channels."""
    rows = await db.fetch(_MY_CHANNELS, user_id, limit, offset, PREVIEW_CHARS, UNREAD_COUNT_MAX)
    found = []
    for row in rows:
        last = None
        if row["message_id"] is not None:
            last = LastMessage(
                id=row["message_id"],
                seq=row["message_seq"],
                user_id=row["message_user_id"],
                user_name=row["user_name"],
                user_username=row["user_username"],
                user_avatar_url=row["user_avatar_url"],
                type=row["message_type"] or "",
                preview=row["message_preview"],
                created_at=row["message_created_at"],
            )
        found.append(
            MyChannel(
                channel=Channel.from_record(row),
                role=row["role"],
                last_read_seq=row["last_read_seq"],
                stored_seq=row["stored_seq"],
                stored_unread=row["stored_unread"],
                last_message=last,
                other_user=None
                if row["other_id"] is None
                else OtherUser(
                    id=row["other_id"],
                    name=row["other_name"],
                    username=row["other_username"],
                    avatar_url=row["other_avatar_url"],
                ),
            )
        )
    return found
