"""SQL for what changes messages: edits, deletes, reactions, and the reads they need.

Data path: `shared.db.messages.insert_messages` (the persistence worker's
batch write) locks the batch's channels, inserts the rows, then calls
`apply_changes` in the same transaction. Events are applied so that the order
in which batches commit does not matter: several workers share a partition's
stream, and a peer's reclaim can write an old entry late, so an edit may be
committed before the message it edits.

- An edit or delete is applied by recomputing its target from all the stored
  events of that target (the latest edit by seq; a delete wins), and so is
  every message as it is inserted (events committed before it). Recomputing
  is idempotent and independent of arrival order; the channel lock taken
  first makes an event and its target written by two transactions at once
  meet (the second to lock sees the first's rows).
- A reaction sets its (message, user, emoji) row last-writer-wins by seq, so
  an add and a remove end right in any order; it needs no target row.

The gateway reads here what authorizing a change needs (`find_target`), what
the Redis reaction state is seeded from (`reaction_state`), and the per-message
summaries history shows (`reaction_counts`, `reply_counts`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import asyncpg
import orjson

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    from shared.db.records import Executor

    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

EDITED = "message_edited"
DELETED = "message_deleted"
REACTION = "reaction"
EVENT_KINDS = frozenset({EDITED, DELETED, REACTION})

# One lock per channel, held to the commit: the insert of an event and of its
# target in two transactions cannot interleave. Channel ids stay below 2**53,
# far from the project's fixed advisory keys (above 2**62). Locked in id order,
# so two batches never wait on each other crosswise.
_LOCK_CHANNELS = "SELECT pg_advisory_xact_lock(c) FROM unnest($1::bigint[]) AS c"

# Keep at most one change per (message, user, emoji): one INSERT .. ON CONFLICT
# may not touch a row twice, so the caller keeps the highest seq of each.
_SET_REACTIONS = """
INSERT INTO message_reactions (message_id, channel_id, user_id, emoji, seq, present)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[],
                     $6::boolean[])
ON CONFLICT (message_id, user_id, emoji) DO UPDATE
SET seq = excluded.seq, present = excluded.present
WHERE message_reactions.seq < excluded.seq
"""

# Recompute each target from its stored events: the latest edit's body and
# time, a delete's tombstone (body '{}', no original, every edit version's body
# cleared too, so no copy of the content is left). Rows already right are not
# written again.
_REFRESH_TARGETS = """
WITH targets AS (SELECT DISTINCT t AS id FROM unnest($1::bigint[]) AS t),
last_edit AS (
    SELECT DISTINCT ON (e.target_id) e.target_id, e.body -> 'body' AS body, e.created_at
    FROM messages e JOIN targets t ON e.target_id = t.id
    WHERE e.kind = 'message_edited'
    ORDER BY e.target_id, e.seq DESC
),
first_delete AS (
    SELECT DISTINCT ON (e.target_id) e.target_id, e.created_at
    FROM messages e JOIN targets t ON e.target_id = t.id
    WHERE e.kind = 'message_deleted'
    ORDER BY e.target_id, e.seq
),
cleared_versions AS (
    UPDATE messages e SET body = '{}'::jsonb
    FROM first_delete d
    WHERE e.target_id = d.target_id AND e.kind = 'message_edited' AND e.body <> '{}'::jsonb
)
UPDATE messages m
SET body = CASE WHEN d.target_id IS NOT NULL THEN '{}'::jsonb ELSE le.body END,
    original_body = CASE WHEN d.target_id IS NOT NULL THEN NULL
                         ELSE COALESCE(m.original_body, m.body) END,
    edited_at = le.created_at,
    deleted_at = d.created_at
FROM targets t
LEFT JOIN last_edit le ON le.target_id = t.id
LEFT JOIN first_delete d ON d.target_id = t.id
WHERE m.id = t.id AND m.id = ANY($1::bigint[]) AND m.kind = 'message'
  AND (le.target_id IS NOT NULL OR d.target_id IS NOT NULL)
  AND (m.edited_at IS DISTINCT FROM le.created_at OR m.deleted_at IS DISTINCT FROM d.created_at)
"""

# Which of these messages have edits or deletes stored: a probe of the partial
# index per id, so a batch of plain messages costs one cheap statement and no
# UPDATE (an UPDATE .. FROM over them may be planned as a scan of the table).
_CHANGED_TARGETS = """
SELECT DISTINCT target_id FROM messages
WHERE target_id = ANY($1::bigint[]) AND kind IN ('message_edited', 'message_deleted')
"""

_FIND_TARGET = """
SELECT channel_id, user_id, kind, body ->> 'type' AS body_type, deleted_at IS NOT NULL AS deleted
FROM messages WHERE id = $1
"""

_REACTION_STATE = """
SELECT user_id, emoji FROM message_reactions WHERE message_id = $1 AND present
ORDER BY seq
"""

# Per emoji: how many, whether the caller is among them, in order of first use.
_REACTION_COUNTS = """
SELECT message_id, emoji, count(*) AS count, bool_or(user_id = $2) AS me
FROM message_reactions
WHERE message_id = ANY($1::bigint[]) AND present
GROUP BY message_id, emoji
ORDER BY message_id, min(seq)
"""

# Tombstoned replies are not counted: the thread shows what can be read.
_REPLY_COUNTS = """
SELECT target_id, count(*) AS count FROM messages
WHERE target_id = ANY($1::bigint[]) AND kind = 'message' AND deleted_at IS NULL
GROUP BY target_id
"""


@dataclass(frozen=True, slots=True)
class InsertedRow:
    """A row the batch insert found new (the RETURNING of `insert_messages`)."""

    id: int
    channel_id: int
    seq: int
    user_id: int
    kind: str
    target_id: int | None
    body: dict[str, object]  # a reaction's payload; {} for the other kinds


@dataclass(frozen=True, slots=True)
class Target:
    """What authorizing a change of a stored message needs."""

    channel_id: int
    user_id: int
    kind: str
    body_type: str | None
    deleted: bool


@dataclass(frozen=True, slots=True)
class ReactionCount:
    emoji: str
    count: int
    me: bool


def inserted_row(record: asyncpg.Record) -> InsertedRow:
    body = record["body"] or {}
    if isinstance(body, str | bytes):  # the pool may or may not decode jsonb
        body = orjson.loads(body)
    return InsertedRow(
        id=record["id"],
        channel_id=record["channel_id"],
        seq=record["seq"],
        user_id=record["user_id"],
        kind=record["kind"],
        target_id=record["target_id"],
        body=body if isinstance(body, dict) else {},
    )


async def lock_channels(conn: Connection, channel_ids: Iterable[int]) -> None:
    """Take the batch's channel locks (to the end of the transaction), in id order."""
    await conn.execute(_LOCK_CHANNELS, sorted(channel_ids))


async def apply_changes(conn: Connection, inserted: Sequence[InsertedRow]) -> None:
    """Apply what the new rows change: reactions, then the targets of edits and
    deletes and the new messages themselves (their events may be stored already).

    Idempotent; call inside the transaction that inserted them, after
    `lock_channels`.
    """
    reactions: dict[tuple[int, int, str], tuple[int, int, bool]] = {}
    targets: set[int] = set()  # changed by an edit or delete among the new rows
    new_messages: list[int] = []  # their events may have been committed first
    for row in inserted:
        if row.kind == REACTION and row.target_id is not None:
            emoji = row.body.get("emoji")
            if not isinstance(emoji, str):
                continue  # the send script never writes one without: nothing to apply
            key = (row.target_id, row.user_id, emoji)
            if key not in reactions or reactions[key][0] < row.seq:
                reactions[key] = (row.seq, row.channel_id, row.body.get("op") == "add")
        elif row.kind in (EDITED, DELETED) and row.target_id is not None:
            targets.add(row.target_id)
        elif row.kind == "message":
            new_messages.append(row.id)
    if reactions:
        keys = list(reactions)
        await conn.execute(
            _SET_REACTIONS,
            [k[0] for k in keys],
            [reactions[k][1] for k in keys],
            [k[1] for k in keys],
            [k[2] for k in keys],
            [reactions[k][0] for k in keys],
            [reactions[k][2] for k in keys],
        )
    if new_messages:
        records = await conn.fetch(_CHANGED_TARGETS, new_messages)
        targets.update(record["target_id"] for record in records)
    if targets:
        await conn.execute(_REFRESH_TARGETS, sorted(targets))


async def find_target(db: Executor, message_id: int) -> Target | None:
    """The stored row `message_id`, as a change's authorization reads it; None if absent
    (never sent, or not persisted yet: the caller looks in the recent stream next)."""
    record = await db.fetchrow(_FIND_TARGET, message_id)
    if record is None:
        return None
    return Target(
        channel_id=record["channel_id"],
        user_id=record["user_id"],
        kind=record["kind"],
        body_type=record["body_type"],
        deleted=record["deleted"],
    )


async def reaction_state(db: Executor, message_id: int) -> list[tuple[int, str]]:
    """Every stored (user_id, emoji) reaction on a message, oldest first."""
    records = await db.fetch(_REACTION_STATE, message_id)
    return [(record["user_id"], record["emoji"]) for record in records]


async def reaction_counts(
    db: Executor, message_ids: Sequence[int], caller_id: int
) -> dict[int, list[ReactionCount]]:
    """Each message's reactions per emoji, with whether `caller_id` is among them."""
    if not message_ids:
        return {}
    found: dict[int, list[ReactionCount]] = {}
    for record in await db.fetch(_REACTION_COUNTS, list(message_ids), caller_id):
        found.setdefault(record["message_id"], []).append(
            ReactionCount(record["emoji"], int(record["count"]), bool(record["me"]))
        )
    return found


async def reply_counts(db: Executor, message_ids: Sequence[int]) -> dict[int, int]:
    """How many readable replies each message has (absent: none)."""
    if not message_ids:
        return {}
    records = await db.fetch(_REPLY_COUNTS, list(message_ids))
    return {record["target_id"]: int(record["count"]) for record in records}
