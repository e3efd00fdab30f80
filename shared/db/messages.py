"""SQL for messages: the persistence worker's batch insert and the history reads.

Data path: the persistence worker (`persistence/worker.py`) writes batches read
from the ingest streams with `insert_messages`, which applies the events among
them (edits, deletes, reactions: `shared.db.message_changes`) in the same
transaction; the gateway reads resume catch-ups with `list_messages_after`
(every seq: messages and events), history pages with `list_messages_before`
(messages only, in their latest version), and searches them with
`search_messages` (migration 006).

Every statement is parameterized. Functions take a connection (or a pool, for
single-statement reads) and return frozen dataclasses, never `asyncpg.Record`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import asyncpg
import orjson

from shared.db.message_changes import apply_changes, inserted_row, lock_channels

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    from shared.db.records import Executor

    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

# The kind of a chat message's row; events have their own (see migration 007).
MESSAGE = "message"

# bigint's upper bound: "no cursor" maps onto it so one index range scan serves both cases.
_MAX_BIGINT = 2**63 - 1


@dataclass(frozen=True, slots=True)
class MessageRow:
    """One message as the ingest stream carries it, ready to insert.

    `body` is the message body as JSON text (it is cast to jsonb in SQL), and
    `created_at_ms` is milliseconds since the Unix epoch, UTC. `kind` is
    `message` or an event's (`message_edited`, `message_deleted`, `reaction`,
    whose `body` is the event's payload); `target_id` is a reply's parent or
    the message an event changes.
    """

    id: int
    channel_id: int
    seq: int
    user_id: int
    body: str
    client_id: str | None
    created_at_ms: int
    kind: str = MESSAGE
    target_id: int | None = None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A persisted row (a message or an event) joined with its author's public profile.

    For an event, `user_id` is who made the change and `body` its payload.
    """

    id: int
    seq: int
    channel_id: int
    user_id: int
    body: dict[str, object]
    client_id: str | None
    created_at: dt.datetime
    user_name: str
    user_username: str
    user_avatar_url: str | None
    kind: str = MESSAGE
    target_id: int | None = None
    edited_at: dt.datetime | None = None
    deleted_at: dt.datetime | None = None


# One statement for the whole batch: arrays in, unnest to rows, so a batch of
# any size is one round trip. `to_timestamp(0) + ms * 1 ms` is exact, where a
# float division (`to_timestamp(ms / 1000.0)`) could round the last digit.
# ON CONFLICT (id) skips a re-delivered entry, which makes the write idempotent.
# Another message at a stored (channel_id, seq) is no repeat but a seq handed
# out twice (Redis lost writes): it fails the statement, to be isolated and
# dead-lettered, instead of vanishing as DO NOTHING would make it.
# RETURNING gives the rows that were new, whose events are then applied (only a
# reaction's payload comes back: the rest is applied in SQL).
_INSERT_MESSAGES = """
INSERT INTO messages (id, channel_id, seq, user_id, body, client_id, created_at, kind, target_id)
SELECT r.id, r.channel_id, r.seq, r.user_id, r.body::jsonb, r.client_id,
       to_timestamp(0) + r.created_at_ms * interval '1 millisecond', r.kind, r.target_id
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[],
            $5::text[], $6::text[], $7::bigint[], $8::text[], $9::bigint[])
     AS r(id, channel_id, seq, user_id, body, client_id, created_at_ms, kind, target_id)
ON CONFLICT (id) DO NOTHING
RETURNING id, channel_id, seq, user_id, kind, target_id,
          CASE WHEN kind = 'reaction' THEN body END AS body
"""
_SEQ_CONSTRAINT = "messages_channel_seq_key"

_SELECT_STORED = """
SELECT m.id, m.seq, m.channel_id, m.user_id, m.body, m.client_id, m.created_at,
       m.kind, m.target_id, m.edited_at, m.deleted_at,
       u.name AS user_name, u.username AS user_username, u.avatar_url AS user_avatar_url
FROM messages m
JOIN users u ON u.id = m.user_id
"""

# History shows messages only (events changed them already); a channel with many
# events costs that many more index entries read per page.
_LIST_BEFORE = (
    _SELECT_STORED + "WHERE m.channel_id = $1 AND m.seq < $2 AND m.kind = 'message'"
    " ORDER BY m.seq DESC LIMIT $3"
)
_LIST_AFTER_HISTORY = (
    _SELECT_STORED + "WHERE m.channel_id = $1 AND m.seq > $2 AND m.kind = 'message'"
    " ORDER BY m.seq ASC LIMIT $3"
)
# A resume replays every seq, events included.
_LIST_AFTER = _SELECT_STORED + "WHERE m.channel_id = $1 AND m.seq > $2 ORDER BY m.seq ASC LIMIT $3"
# A message's replies, by the partial index on (target_id, seq).
_LIST_REPLIES = (
    _SELECT_STORED + "WHERE m.target_id = $1 AND m.channel_id = $2 AND m.kind = 'message'"
    " AND m.seq > $3 ORDER BY m.seq ASC LIMIT $4"
)
_MAX_SEQ = "SELECT COALESCE(max(seq), 0) FROM messages WHERE channel_id = $1"
# One index descent per channel, for any number of channels in one round trip.
_MAX_SEQS = """
SELECT c.id, COALESCE((SELECT max(m.seq) FROM messages m WHERE m.channel_id = c.id), 0) AS seq
FROM unnest($1::bigint[]) AS c(id)
"""

# Newest first across the caller's channels. The channel ids come as an array of
# values, not a subquery, so the planner weighs each channel's share of the table
# (a member of one huge channel is planned differently from one of twenty small
# ones): a rare word reads the GIN index, a common one walks the primary key
# backwards testing each row's stored vector until the page is full. Public with
# SEARCH_PLANNING for the benchmark's plans (loadtests/search.py).
SEARCH_SQL = (
    _SELECT_STORED
    + """WHERE m.channel_id = ANY($1::bigint[])
  AND m.search_vector @@ websearch_to_tsquery('simple'::regconfig, lower($2 COLLATE pg_c_utf8))
  AND m.id < $3
ORDER BY m.id DESC
LIMIT $4"""
)
_MEMBER_CHANNELS = """
SELECT channel_id FROM memberships
WHERE user_id = $1 AND ($2::bigint IS NULL OR channel_id = $2)
"""
# Each search's plan must see its own words and channels: a cached generic plan
# cannot tell "the" from a rare word. And parallel workers of a backward walk
# scan far past the LIMIT before the leader stops them.
SEARCH_PLANNING = (
    "SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL max_parallel_workers_per_gather = 0"
)


async def insert_messages(conn: Connection, rows: Sequence[MessageRow]) -> int:
    """Insert a batch and apply its events; return how many rows were new.

    Call inside a transaction. Rows whose id already exists are skipped, so
    writing the same batch twice is harmless; the events among the new rows
    are applied to their targets (`message_changes.apply_changes`), after the
    batch's channels are locked so that an event and its target committed by
    two workers at once still meet. Raises `asyncpg.PostgresError` on a data
    error (an unknown user or channel; a `(channel_id, seq)` stored under
    another id, see `is_seq_conflict`), which aborts the whole statement:
    callers isolate the bad row themselves.
    """
    if not rows:
        return 0
    await lock_channels(conn, {row.channel_id for row in rows})
    inserted = await conn.fetch(
        _INSERT_MESSAGES,
        [row.id for row in rows],
        [row.channel_id for row in rows],
        [row.seq for row in rows],
        [row.user_id for row in rows],
        [row.body for row in rows],
        [row.client_id for row in rows],
        [row.created_at_ms for row in rows],
        [row.kind for row in rows],
        [row.target_id for row in rows],
    )
    await apply_changes(conn, [inserted_row(record) for record in inserted])
    return len(inserted)


def is_seq_conflict(error: BaseException) -> bool:
    """Whether an insert failed because its `(channel_id, seq)` is stored under another id."""
    return (
        isinstance(error, asyncpg.UniqueViolationError) and error.constraint_name == _SEQ_CONSTRAINT
    )


async def list_messages_before(
    db: Executor, channel_id: int, before_seq: int | None, limit: int
) -> list[StoredMessage]:
    """A history page: up to `limit` messages (no events) with seq < `before_seq`,
    newest first, each in its latest version or a tombstone.

    `before_seq=None` starts at the newest message.
    """
    cursor = _MAX_BIGINT if before_seq is None else before_seq
    records = await db.fetch(_LIST_BEFORE, channel_id, cursor, limit)
    return [_stored_message(record) for record in records]


async def list_messages_after(
    db: Executor, channel_id: int, after_seq: int, limit: int, *, events: bool = True
) -> list[StoredMessage]:
    """A catch-up page: up to `limit` rows with seq > `after_seq`, oldest first:
    every seq (messages and events) for a resume, messages only without `events`."""
    records = await db.fetch(
        _LIST_AFTER if events else _LIST_AFTER_HISTORY, channel_id, after_seq, limit
    )
    return [_stored_message(record) for record in records]


async def list_replies(
    db: Executor, channel_id: int, parent_id: int, after_seq: int, limit: int
) -> list[StoredMessage]:
    """Up to `limit` replies to `parent_id` in the channel with seq > `after_seq`, oldest first."""
    records = await db.fetch(_LIST_REPLIES, parent_id, channel_id, after_seq, limit)
    return [_stored_message(record) for record in records]


async def search_messages(
    pool: asyncpg.Pool[asyncpg.Record],
    user_id: int,
    query: str,
    *,
    channel_id: int | None,
    before_id: int | None,
    limit: int,
) -> list[StoredMessage]:
    """Up to `limit` messages whose text matches `query` (web search syntax, `simple`
    configuration), newest first, with id < `before_id`, in the channels `user_id` is
    a member of now (only `channel_id`, when given).

    Membership is read in the search's own transaction, so a channel the user is
    not in is never searched. Any `query` is accepted (`websearch_to_tsquery`
    never raises); one without a word matches nothing. It must be storable text
    (no U+0000): the caller bounds and checks it.
    """
    cursor = _MAX_BIGINT if before_id is None else before_id
    async with pool.acquire() as conn, conn.transaction():
        channel_ids = [
            row["channel_id"] for row in await conn.fetch(_MEMBER_CHANNELS, user_id, channel_id)
        ]
        if not channel_ids:
            return []
        await conn.execute(SEARCH_PLANNING)
        records = await conn.fetch(SEARCH_SQL, channel_ids, query, cursor, limit)
    return [_stored_message(record) for record in records]


async def max_seq(db: Executor, channel_id: int) -> int:
    """The highest persisted seq of a channel; 0 when it has no message yet."""
    value = await db.fetchval(_MAX_SEQ, channel_id)
    return int(value)


async def max_seqs(db: Executor, channel_ids: Sequence[int]) -> dict[int, int]:
    """`max_seq` of each channel, in one statement."""
    records = await db.fetch(_MAX_SEQS, list(channel_ids))
    return {record["id"]: int(record["seq"]) for record in records}


async def count_messages(db: Executor, channel_id: int | None = None) -> int:
    """How many messages are stored, in one channel or (None) in all."""
    if channel_id is None:
        value = await db.fetchval("SELECT count(*) FROM messages")
    else:
        value = await db.fetchval("SELECT count(*) FROM messages WHERE channel_id = $1", channel_id)
    return int(value)


def _json_object(value: object) -> dict[str, object]:
    # The pool may or may not have a jsonb codec registered: accept both shapes.
    if isinstance(value, str | bytes):
        value = orjson.loads(value)
    if not isinstance(value, dict):
        raise TypeError(f"message body is not a JSON object: {type(value).__name__}")
    return value


def _stored_message(record: asyncpg.Record) -> StoredMessage:
    return StoredMessage(
        id=record["id"],
        seq=record["seq"],
        channel_id=record["channel_id"],
        user_id=record["user_id"],
        body=_json_object(record["body"]),
        client_id=record["client_id"],
        created_at=record["created_at"],
        user_name=record["user_name"],
        user_username=record["user_username"],
        user_avatar_url=record["user_avatar_url"],
        kind=record["kind"],
        target_id=record["target_id"],
        edited_at=record["edited_at"],
        deleted_at=record["deleted_at"],
    )
