"""SQL against the Go server's database, which `chat-group import-go` only reads.

The Go schema (its public repository): `users`, `channels`, `memberships` and
`messages`, with SERIAL ids and nullable `created_at DEFAULT now()`. Version 1
stores a message as `content TEXT`; version 2 as `body JSONB` (the send body as
received). Nothing in it is unique but the ids, and older databases have no
foreign keys, so every read here expects duplicates and orphans.

Every read runs inside one read-only REPEATABLE READ transaction that the
caller opens (`snapshot`), so the whole run sees one state of the database.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    Connection = asyncpg.Connection[asyncpg.Record]

_REQUIRED_COLUMNS = {
    "users": {"id", "name", "avatar_url", "created_at", "username", "email", "password"},
    "channels": {"id", "name", "description", "image_url", "created_at"},
    "memberships": {"id", "user_id", "channel_id", "created_at", "role"},
    "messages": {"id", "user_id", "channel_id", "created_at"},
}
# Sorting a million messages by (created_at, id) in memory instead of on disk.
_SORT_WORK_MEM = "256MB"


class GoSchemaError(Exception):
    """The source is not a Go server database this importer can read."""


@dataclass(frozen=True, slots=True)
class GoSchema:
    version: int  # 1: messages.content TEXT; 2: messages.body JSONB
    has_content: bool  # a v2 database that kept the v1 column too
    body_type: str | None  # 'jsonb' or 'json'; None in version 1


@dataclass(frozen=True, slots=True)
class Frontier:
    """The highest id of each Go table when the import began: it imports these rows only."""

    users: int
    channels: int
    memberships: int
    messages: int

    def as_json(self) -> dict[str, int]:
        return {
            "users": self.users,
            "channels": self.channels,
            "memberships": self.memberships,
            "messages": self.messages,
        }

    @classmethod
    def from_json(cls, value: dict[str, int]) -> Frontier:
        return cls(value["users"], value["channels"], value["memberships"], value["messages"])


@dataclass(frozen=True, slots=True)
class GoUser:
    id: int
    name: str
    username: str
    email: str
    password: str
    avatar_url: str | None
    created_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class GoChannel:
    id: int
    name: str
    description: str | None
    image_url: str | None
    created_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class GoMembership:
    id: int
    user_id: int
    channel_id: int
    role: str
    created_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Authorship:
    """Messages one Go user wrote in one Go channel."""

    channel_id: int
    user_id: int
    count: int


@asynccontextmanager
async def snapshot(conn: Connection) -> AsyncIterator[None]:
    """One consistent, read-only view of the Go database for the whole run."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(f"SET LOCAL work_mem = '{_SORT_WORK_MEM}'")
        yield


async def detect_schema(conn: Connection) -> GoSchema:
    """Which Go schema version the database holds. Raises GoSchemaError otherwise."""
    encoding = await conn.fetchval("SHOW server_encoding")
    if encoding != "UTF8":
        # SQL_ASCII and friends store bytes that are not necessarily text.
        raise GoSchemaError(f"the Go database's encoding is {encoding}; only UTF8 is supported")
    rows = await conn.fetch(
        """SELECT table_name::text AS table_name, column_name::text AS column_name,
                  data_type::text AS data_type
           FROM information_schema.columns
           WHERE table_schema = current_schema() AND table_name = ANY($1::text[])""",
        list(_REQUIRED_COLUMNS),
    )
    columns: dict[str, dict[str, str]] = {}
    for row in rows:
        columns.setdefault(row["table_name"], {})[row["column_name"]] = row["data_type"]
    missing = [
        f"{table}.{column}"
        for table, required in _REQUIRED_COLUMNS.items()
        for column in sorted(required - set(columns.get(table, {})))
    ]
    if missing:
        raise GoSchemaError("not a Go server database: missing " + ", ".join(missing))
    messages = columns["messages"]
    if "seq" in messages or "joined_at" in columns["memberships"]:
        raise GoSchemaError("this is a Chat Group Server (Python) database, not the Go server's")
    body_type = messages.get("body")
    if body_type in ("jsonb", "json"):
        return GoSchema(version=2, has_content="content" in messages, body_type=body_type)
    if "content" in messages:
        return GoSchema(version=1, has_content=True, body_type=None)
    raise GoSchemaError("not a Go server database: messages has neither content nor body")


async def read_frontier(conn: Connection) -> Frontier:
    row = await conn.fetchrow(
        """SELECT (SELECT COALESCE(max(id), 0) FROM users) AS users,
                  (SELECT COALESCE(max(id), 0) FROM channels) AS channels,
                  (SELECT COALESCE(max(id), 0) FROM memberships) AS memberships,
                  (SELECT COALESCE(max(id), 0) FROM messages) AS messages"""
    )
    assert row is not None  # a SELECT without FROM always yields its row
    return Frontier(row["users"], row["channels"], row["memberships"], row["messages"])


async def fingerprint(conn: Connection, schema: GoSchema) -> str:
    """What tells this Go database's data from another's, wherever it is served from.

    The first row of every table (id and created_at) does not change while a
    team moves: new rows only add higher ids.
    """
    parts = [f"v{schema.version}"]
    for table in ("users", "channels", "memberships", "messages"):
        # The table names are the fixed literals above, not input.
        row = await conn.fetchrow(f"SELECT id, created_at FROM {table} ORDER BY id LIMIT 1")  # noqa: S608
        parts.append("-" if row is None else f"{row['id']}@{row['created_at']}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


async def read_users(conn: Connection, frontier: Frontier) -> list[GoUser]:
    rows = await conn.fetch(
        """SELECT id, name, username, email, password, avatar_url, created_at
           FROM users WHERE id <= $1 ORDER BY id""",
        frontier.users,
    )
    return [
        GoUser(
            r["id"],
            r["name"],
            r["username"],
            r["email"],
            r["password"],
            r["avatar_url"],
            r["created_at"],
        )
        for r in rows
    ]


async def read_channels(conn: Connection, frontier: Frontier) -> list[GoChannel]:
    rows = await conn.fetch(
        """SELECT id, name, description, image_url, created_at
           FROM channels WHERE id <= $1 ORDER BY id""",
        frontier.channels,
    )
    return [
        GoChannel(r["id"], r["name"], r["description"], r["image_url"], r["created_at"])
        for r in rows
    ]


async def read_memberships(conn: Connection, frontier: Frontier) -> list[GoMembership]:
    rows = await conn.fetch(
        """SELECT id, user_id, channel_id, role, created_at
           FROM memberships WHERE id <= $1 ORDER BY id""",
        frontier.memberships,
    )
    return [
        GoMembership(r["id"], r["user_id"], r["channel_id"], r["role"], r["created_at"])
        for r in rows
    ]


async def count_messages_per_channel(conn: Connection, frontier: Frontier) -> dict[int, int]:
    """Messages per Go channel id, including ids no channel row has."""
    rows = await conn.fetch(
        "SELECT channel_id, count(*) AS n FROM messages WHERE id <= $1 GROUP BY channel_id",
        frontier.messages,
    )
    return {row["channel_id"]: row["n"] for row in rows}


async def read_authorship(conn: Connection, frontier: Frontier) -> list[Authorship]:
    """Every (channel, author) pair with its message count, for the membership policy."""
    rows = await conn.fetch(
        """SELECT channel_id, user_id, count(*) AS n FROM messages WHERE id <= $1
           GROUP BY channel_id, user_id""",
        frontier.messages,
    )
    return [Authorship(row["channel_id"], row["user_id"], row["n"]) for row in rows]


async def has_missing_timestamps(conn: Connection, frontier: Frontier) -> bool:
    value = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE id <= $1 AND created_at IS NULL)",
        frontier.messages,
    )
    return bool(value)


def message_query(schema: GoSchema, *, fill_missing_timestamps: bool) -> str:
    """The messages to copy, in import order: by effective created_at, then Go id.

    Parameters: $1 the cut-off (later timestamps are clamped to it), $2 the
    frontier's message id, $3/$4 the (created_at, id) already written (NULL:
    from the start).
    Columns: id, user_id, channel_id, created_at (effective), was_missing,
    was_future, body (JSON text or NULL), content (text or NULL).
    """
    body = "m.body::text" if schema.body_type else "NULL::text"
    content = "m.content" if schema.has_content else "NULL::text"
    if fill_missing_timestamps:
        # A missing created_at takes the latest one before it in its channel in
        # Go id order (ids are insertion order), else the channel's earliest.
        stamped = """COALESCE(m.created_at,
                         max(m.created_at) OVER (PARTITION BY m.channel_id ORDER BY m.id
                                                 ROWS UNBOUNDED PRECEDING),
                         min(m.created_at) OVER (PARTITION BY m.channel_id),
                         $1)"""
    else:
        stamped = "m.created_at"
    # The body and content expressions are fixed fragments chosen above, not input.
    return f"""
        SELECT * FROM (
            SELECT m.id, m.user_id, m.channel_id,
                   LEAST({stamped}, $1::timestamptz) AS created_at,
                   m.created_at IS NULL AS was_missing,
                   COALESCE(m.created_at > $1::timestamptz, false) AS was_future,
                   {body} AS body, {content} AS content
            FROM messages m WHERE m.id <= $2
        ) AS s
        WHERE $3::timestamptz IS NULL OR (s.created_at, s.id) > ($3::timestamptz, $4::bigint)
        ORDER BY s.created_at, s.id
    """  # noqa: S608


async def count_rows(conn: Connection, frontier: Frontier) -> dict[str, int]:
    """Rows per table up to the frontier (what the import takes) and after it."""
    row = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM users WHERE id <= $1) AS users,
                  (SELECT count(*) FROM channels WHERE id <= $2) AS channels,
                  (SELECT count(*) FROM memberships WHERE id <= $3) AS memberships,
                  (SELECT count(*) FROM messages WHERE id <= $4) AS messages,
                  (SELECT count(*) FROM users WHERE id > $1)
                  + (SELECT count(*) FROM channels WHERE id > $2)
                  + (SELECT count(*) FROM memberships WHERE id > $3)
                  + (SELECT count(*) FROM messages WHERE id > $4) AS late""",
        frontier.users,
        frontier.channels,
        frontier.memberships,
        frontier.messages,
    )
    assert row is not None  # a SELECT without FROM always yields its row
    return dict(row)
