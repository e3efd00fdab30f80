"""SQL of `chat-group import-go` in this service's database (migration 003).

Two kinds of write: the plan (users, channels, memberships, their Go id
mappings and the changes), in one transaction that also holds the tables
against concurrent sign-ups; and message batches, each one transaction with
the import's position, so an interrupted import resumes after its last
commit and never writes a message twice.

A batch is copied (COPY) with the foreign keys of `messages` lifted inside
its transaction and put back `NOT VALID` before it commits, which roughly
halves the cost of a row; the import validates them once at its end. The
transaction is atomic, so a kill at any point leaves the keys in place.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson

from shared.go_import.report import Change
from shared.go_import.rows import Plan, TargetState

if TYPE_CHECKING:
    Connection = asyncpg.Connection[asyncpg.Record]

_NOT_VALID = " NOT VALID"
# Long enough to queue behind a worker's batch or a history page, short enough
# that a stuck lock ends the run with an error instead of stalling a live target.
LOCK_TIMEOUT_MS = 10_000
# Held by a writing run for its whole life, so two imports never run at once.
# (The bytes of "goimport" read as a big-endian integer.)
RUN_LOCK_KEY = 0x676F696D706F7274


@dataclass(frozen=True, slots=True)
class ImportState:
    """The `go_import` row: what a resumed run continues."""

    fingerprint: str
    source: str
    schema_version: int
    started_at: dt.datetime
    frontier: dict[str, int]
    phase: str
    position: dict[str, Any]
    messages_done: int
    finished_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class ImportedChannel:
    go_id: int
    channel_id: int
    message_count: int
    written: int  # the highest imported seq written so far


@dataclass(frozen=True, slots=True)
class ForeignKey:
    name: str
    definition: str


@dataclass(frozen=True, slots=True)
class MessageBatch:
    """One transaction's worth of messages, ready to copy."""

    # id, channel_id, seq, user_id, body (JSON text), client_id (None), created_at
    messages: Sequence[Sequence[object]]
    mappings: Sequence[Sequence[int]]  # (go id, message id)
    changes: Sequence[Change]


async def lock_run(conn: Connection) -> bool:
    """Take the import's session lock; False when another run holds it."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", RUN_LOCK_KEY))


async def read_state(conn: Connection) -> ImportState | None:
    row = await conn.fetchrow(
        """SELECT fingerprint, source, schema_version, started_at, frontier, phase, position,
                  messages_done, finished_at
           FROM go_import"""
    )
    if row is None:
        return None
    return ImportState(
        row["fingerprint"],
        row["source"],
        row["schema_version"],
        row["started_at"],
        orjson.loads(row["frontier"]),
        row["phase"],
        orjson.loads(row["position"]),
        row["messages_done"],
        row["finished_at"],
    )


async def lock_for_plan(conn: Connection) -> None:
    """Hold users, channels and memberships against writes until the transaction ends,
    so what the plan read of the target's own rows is still true when it writes."""
    await conn.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
    await conn.execute("LOCK TABLE users, channels, memberships IN SHARE ROW EXCLUSIVE MODE")


async def read_target_state(conn: Connection) -> TargetState:
    """The target's own users and channels (those not from an import)."""
    users = await conn.fetch(
        """SELECT u.id, lower(u.username) AS username, lower(u.email) AS email FROM users u
           WHERE NOT EXISTS (SELECT 1 FROM go_import_users g WHERE g.user_id = u.id)"""
    )
    channels = await conn.fetch(
        """SELECT c.id, lower(c.name) AS name FROM channels c
           WHERE NOT EXISTS (SELECT 1 FROM go_import_channels g WHERE g.channel_id = c.id)"""
    )
    next_ids = await conn.fetchrow(
        """SELECT COALESCE(pg_sequence_last_value(pg_get_serial_sequence('users', 'id')), 0) + 1
                    AS users,
                  COALESCE(pg_sequence_last_value(pg_get_serial_sequence('channels', 'id')), 0) + 1
                    AS channels"""
    )
    assert next_ids is not None  # a SELECT without FROM always yields its row
    return TargetState(
        user_ids=frozenset(row["id"] for row in users),
        usernames=frozenset(row["username"] for row in users),
        emails=frozenset(row["email"] for row in users),
        channel_ids=frozenset(row["id"] for row in channels),
        channel_names=frozenset(row["name"] for row in channels),
        next_user_id=next_ids["users"],
        next_channel_id=next_ids["channels"],
    )


async def write_plan(conn: Connection, plan: Plan, state: ImportState) -> None:
    """Write the plan and the import's state row; the caller's transaction commits it."""
    await conn.copy_records_to_table(
        "users",
        records=[
            (u.id, u.name, u.username, u.email, u.password, u.avatar_url, u.created_at)
            for u in plan.users
        ],
        columns=["id", "name", "username", "email", "password", "avatar_url", "created_at"],
    )
    await conn.copy_records_to_table(
        "channels",
        records=[
            (c.id, c.name, c.description, c.image_url, c.created_by, c.created_at)
            for c in plan.channels
        ],
        columns=["id", "name", "description", "image_url", "created_by", "created_at"],
    )
    await conn.copy_records_to_table(
        "memberships",
        records=[(m.channel_id, m.user_id, m.role, m.joined_at) for m in plan.memberships],
        columns=["channel_id", "user_id", "role", "joined_at"],
    )
    await conn.copy_records_to_table(
        "go_import_users", records=[(u.go_id, u.id) for u in plan.users]
    )
    await conn.copy_records_to_table(
        "go_import_channels",
        records=[(c.go_id, c.id, c.message_count) for c in plan.channels],
    )
    await conn.copy_records_to_table(
        "go_import_memberships",
        records=[(go_id, m.channel_id, m.user_id) for m in plan.memberships for go_id in m.go_ids],
    )
    await _copy_changes(conn, plan.changes)
    # Kept Go ids may lie above what the sequences hand out next: move them past.
    for table in ("users", "channels"):
        await conn.execute(
            """SELECT setval(pg_get_serial_sequence($1, 'id'), $2)
               WHERE $2 > COALESCE(pg_sequence_last_value(pg_get_serial_sequence($1, 'id')), 0)""",
            table,
            max((row.id for row in (plan.users if table == "users" else plan.channels)), default=0),
        )
    await conn.execute(
        """INSERT INTO go_import (fingerprint, source, schema_version, started_at, frontier,
                                  phase, position)
           VALUES ($1, $2, $3, $4, $5, 'messages', $6)""",
        state.fingerprint,
        state.source,
        state.schema_version,
        state.started_at,
        _json(state.frontier),
        _json(state.position),
    )


async def imported_channels(conn: Connection) -> list[ImportedChannel]:
    """Every imported channel with how far its messages are written (seq <= its count:
    live messages sent into it since come after)."""
    rows = await conn.fetch(
        """SELECT g.go_id, g.channel_id, g.message_count,
                  (SELECT COALESCE(max(m.seq), 0) FROM messages m
                   WHERE m.channel_id = g.channel_id AND m.seq <= g.message_count) AS written
           FROM go_import_channels g ORDER BY g.go_id"""
    )
    return [
        ImportedChannel(row["go_id"], row["channel_id"], row["message_count"], row["written"])
        for row in rows
    ]


async def imported_users(conn: Connection) -> dict[int, int]:
    rows = await conn.fetch("SELECT go_id, user_id FROM go_import_users")
    return {row["go_id"]: row["user_id"] for row in rows}


async def lowest_foreign_message_id(conn: Connection) -> int | None:
    """The lowest id of a message not from the import: the target's own, or sent live
    into an imported channel. Ids below it cannot meet one."""
    value: int | None = await conn.fetchval(
        """SELECT min(m.id) FROM messages m
           LEFT JOIN go_import_channels g ON g.channel_id = m.channel_id
           WHERE g.channel_id IS NULL OR m.seq > g.message_count"""
    )
    return value


async def foreign_message_ids(conn: Connection, low: int, high: int) -> set[int]:
    """Ids of messages not from the import between `low` and `high`, both included."""
    rows = await conn.fetch(
        """SELECT m.id FROM messages m
           LEFT JOIN go_import_channels g ON g.channel_id = m.channel_id
           WHERE m.id BETWEEN $1 AND $2 AND (g.channel_id IS NULL OR m.seq > g.message_count)""",
        low,
        high,
    )
    return {row["id"] for row in rows}


async def message_foreign_keys(conn: Connection) -> list[ForeignKey]:
    rows = await conn.fetch(
        """SELECT conname::text AS name, pg_get_constraintdef(oid) AS definition
           FROM pg_constraint
           WHERE conrelid = 'messages'::regclass AND contype = 'f' ORDER BY conname"""
    )
    return [ForeignKey(row["name"], row["definition"].removesuffix(_NOT_VALID)) for row in rows]


async def write_batch(
    conn: Connection,
    batch: MessageBatch,
    position: dict[str, Any],
    foreign_keys: Sequence[ForeignKey],
) -> None:
    """Copy one batch and move the import's position past it, atomically.

    Seven round trips whatever the batch's size; the foreign keys are lifted
    for the COPY only (see the module docstring).
    """
    lift = "".join(
        f"; ALTER TABLE messages DROP CONSTRAINT {_quote_ident(fk.name)}" for fk in foreign_keys
    )
    async with conn.transaction():
        # A live target's reads wait behind the table lock: bound how long it is asked for.
        # No wait for the WAL flush at commit: a batch a crash loses takes the position
        # with it (same transaction), so the next run copies it again.
        await conn.execute(
            f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}; SET LOCAL synchronous_commit = off" + lift
        )
        await conn.copy_records_to_table(
            "messages",
            records=batch.messages,
            columns=["id", "channel_id", "seq", "user_id", "body", "client_id", "created_at"],
        )
        await _copy_changes(conn, batch.changes)
        await conn.execute(
            """WITH moved AS (
                   UPDATE go_import SET position = $1, messages_done = messages_done + $2
               )
               INSERT INTO go_import_message_batches (go_ids, message_ids)
               VALUES ($3::text::bigint[], $4::text::bigint[])""",
            _json(position),
            len(batch.messages),
            # Array literals: asyncpg's array encoder costs more per element than str().
            "{" + ",".join([str(mapping[0]) for mapping in batch.mappings]) + "}",
            "{" + ",".join([str(mapping[1]) for mapping in batch.mappings]) + "}",
        )
        if foreign_keys:
            # The definitions come from the catalog (pg_get_constraintdef), not from input.
            await conn.execute(
                "ALTER TABLE messages "
                + ", ".join(
                    f"ADD CONSTRAINT {_quote_ident(fk.name)} {fk.definition}{_NOT_VALID}"
                    for fk in foreign_keys
                )
            )


async def validate_foreign_keys(conn: Connection) -> None:
    """Check every row of `messages` against the keys batches put back NOT VALID."""
    names = await conn.fetch(
        """SELECT conname::text AS name FROM pg_constraint
           WHERE conrelid = 'messages'::regclass AND contype = 'f' AND NOT convalidated"""
    )
    for row in names:
        await conn.execute(f"ALTER TABLE messages VALIDATE CONSTRAINT {_quote_ident(row['name'])}")


async def set_phase(conn: Connection, phase: str) -> None:
    await conn.execute(
        """UPDATE go_import SET phase = $1,
                  finished_at = CASE WHEN $1 = 'done' THEN now() ELSE finished_at END""",
        phase,
    )


async def stored_changes(conn: Connection) -> list[Change]:
    rows = await conn.fetch(
        "SELECT go_table, go_id, kind, detail FROM go_import_changes ORDER BY id"
    )
    return [Change(row["go_table"], row["go_id"], row["kind"], row["detail"]) for row in rows]


async def imported_counts(conn: Connection) -> dict[str, int]:
    row = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM go_import_users) AS users,
                  (SELECT count(*) FROM go_import_channels) AS channels,
                  (SELECT count(*) FROM go_import_memberships) AS memberships,
                  (SELECT COALESCE(max(messages_done), 0) FROM go_import) AS messages"""
    )
    assert row is not None  # a SELECT without FROM always yields its row
    return dict(row)


async def record_run(
    conn: Connection, *, started_at: dt.datetime, outcome: str, report: str
) -> None:
    await conn.execute(
        "INSERT INTO go_import_runs (started_at, outcome, report) VALUES ($1, $2, $3)",
        started_at,
        outcome,
        report,
    )


async def _copy_changes(conn: Connection, changes: Sequence[Change]) -> None:
    if changes:
        await conn.copy_records_to_table(
            "go_import_changes",
            records=[(c.go_table, c.go_id, c.kind, c.detail) for c in changes],
            columns=["go_table", "go_id", "kind", "detail"],
        )


def _json(value: object) -> str:
    # jsonb goes as text with asyncpg's own codec (in C): message bodies, a million
    # a run, are JSON text already.
    return orjson.dumps(value).decode()


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
