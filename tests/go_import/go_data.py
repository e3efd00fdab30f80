"""A Go server database with every awkward row the Go server allowed, and what the
import must make of each (the README's policy table, row by row)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg
import orjson

from loadtests.go_database import bcrypt_hash, create_schema

T0 = dt.datetime(2025, 1, 1, 10, 0, tzinfo=dt.UTC)
ALICE_PASSWORD = "alice password"
BOB_PASSWORD = "bob password"
BURST = 40  # messages in one millisecond of one channel: more than the 32 ids it has


@dataclass(frozen=True)
class GoMessage:
    go_id: int
    user_id: int
    channel_id: int
    created_at: dt.datetime | None
    content: object  # v1: the text; v2: the JSON body (None: NULL)
    imported_as: dict[str, object]  # the body history must show


def _text(content: str) -> dict[str, object]:
    return {"type": "text", "content": content}


PLACEHOLDER = _text("[This message from the Go server could not be imported]")
_FILE = {
    "type": "file",
    "file_id": "f-1",
    "filename": "plan.pdf",
    "mime_type": "application/pdf",
    "url": "https://files.example/plan.pdf",
    "size_in_bytes": 1234,
}

# Every change the import must report: (Go table, Go id, kind).
USER_CHANGES = {
    ("users", 3, "username_duplicate"),
    ("users", 4, "email_duplicate"),
    ("users", 5, "username_empty"),
    ("users", 5, "email_empty"),
    ("users", 5, "password_empty"),
    ("users", 6, "username_invalid"),
    ("users", 6, "email_invalid"),
    ("users", 6, "password_not_bcrypt"),
    ("users", 7, "name_invalid"),
    ("users", 7, "avatar_invalid"),
    ("users", 7, "user_created_at_missing"),
    ("users", 99, "author_missing"),
}
CHANNEL_CHANGES = {
    ("channels", 3, "channel_name_duplicate"),
    ("channels", 3, "channel_no_owner"),
    ("channels", 4, "channel_name_duplicate"),
    ("channels", 4, "channel_no_owner"),
    ("channels", 5, "channel_name_empty"),
    ("channels", 5, "description_too_long"),
    ("channels", 5, "image_invalid"),
    ("channels", 5, "channel_created_at_missing"),
    ("channels", 5, "channel_no_owner"),
    ("channels", 6, "channel_name_invalid"),
    ("channels", 6, "channel_no_owner"),
    ("channels", 77, "channel_missing"),
}
MEMBERSHIP_CHANGES = {
    ("memberships", 3, "membership_duplicate"),
    ("memberships", 5, "membership_admin_extra"),
    ("memberships", 6, "membership_role_unknown"),
    ("memberships", 8, "membership_orphan"),
    ("memberships", 9, "membership_created_at_missing"),
}


def messages(version: int) -> list[GoMessage]:
    """The Go messages, in Go id order, with the body each must come back with."""
    rows: list[tuple[int, int, dt.datetime | None, object, dict[str, object]]] = [
        (1, 1, T0, "hello", _text("hello")),
        (2, 1, T0, "hi alice", _text("hi alice")),  # same time: Go id order decides
        (8, 1, T0 + dt.timedelta(minutes=1), "not a member", _text("not a member")),
        (99, 1, T0 + dt.timedelta(minutes=2), "ghost", _text("ghost")),  # no such user
        (1, 1, T0 + dt.timedelta(minutes=3), "   ", PLACEHOLDER),  # blank: refused
        (1, 1, None, "no time", _text("no time")),  # takes the time before it: minute 3
        (1, 1, dt.datetime(2099, 1, 1, tzinfo=dt.UTC), "future", _text("future")),
        (1, 1, dt.datetime(2023, 6, 1, tzinfo=dt.UTC), "old", _text("old")),  # before ids
        (1, 77, T0, "lost channel", _text("lost channel")),
        (1, 77, T0 + dt.timedelta(seconds=1), "lost again", _text("lost again")),
        (1, 3, T0, "in neu (2)", _text("in neu (2)")),
    ]
    burst_at = T0 + dt.timedelta(hours=1)
    rows += [(2, 2, burst_at, f"burst {n}", _text(f"burst {n}")) for n in range(BURST)]
    if version == 2:
        rows += [
            (1, 1, T0 + dt.timedelta(minutes=4), _FILE, _FILE),
            (1, 1, T0 + dt.timedelta(minutes=5), {**_text("extra"), "mood": 1}, _text("extra")),
            (1, 1, T0 + dt.timedelta(minutes=6), [1, 2], PLACEHOLDER),  # not an object
            (1, 1, T0 + dt.timedelta(minutes=7), None, PLACEHOLDER),  # NULL body
            (1, 1, T0 + dt.timedelta(minutes=8), {**_FILE, "size_in_bytes": "12"}, PLACEHOLDER),
            (2, 1, T0 + dt.timedelta(minutes=9), {"type": "sticker"}, PLACEHOLDER),
        ]
    return [
        GoMessage(go_id, user, channel, at, content, expected)
        for go_id, (user, channel, at, content, expected) in enumerate(rows, start=1)
    ]


def message_changes(version: int) -> set[tuple[str, int | None, str]]:
    found: set[tuple[str, int | None, str]] = {
        ("messages", 5, "body_invalid"),
        ("messages", 6, "message_created_at_missing"),
        ("messages", 7, "message_created_at_future"),
    }
    if version == 2:
        first = 12 + BURST
        found |= {
            ("messages", first + 1, "body_fields_dropped"),
            ("messages", first + 2, "body_invalid"),
            ("messages", first + 3, "body_invalid"),
            ("messages", first + 4, "body_invalid"),
            ("messages", first + 5, "body_invalid"),
        }
    return found


def expected_changes(version: int) -> set[tuple[str, int | None, str]]:
    return {*USER_CHANGES, *CHANNEL_CHANGES, *MEMBERSHIP_CHANGES, *message_changes(version)}


async def fill(conn: asyncpg.Connection[asyncpg.Record], version: int) -> None:
    """Create the Go tables of `version` and every awkward row. Version 2 keeps the
    Go server's foreign keys; orphans get in with triggers off, as a deleted user's
    rows would be after a manual clean-up."""
    await create_schema(conn, version, foreign_keys=version == 2)
    alice, bob = bcrypt_hash(ALICE_PASSWORD), bcrypt_hash(BOB_PASSWORD)
    other = bcrypt_hash("other password")
    users = [
        (1, "Alice", "https://img.example/alice.png", T0, "alice", "alice@example.com", alice),
        (2, "Bob", "", T0, "Bob_B", "bob@example.com", bob),
        (3, "Alice Two", None, T0, "ALICE", "alice2@example.com", other),
        (4, "Carol", None, T0, "carol", "Alice@Example.com", other),
        (5, "Axe Draper", None, T0, "", "", ""),
        (6, "John", None, T0, "john doe", "john@example", "plaintext"),
        (7, "   ", "ftp://img.example/x.png", None, "seven", "seven@example.com", other),
        (8, "Dave", None, T0, "dave", "dave@example.com", other),
    ]
    await conn.executemany(
        """INSERT INTO users (id, name, avatar_url, created_at, username, email, password)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        users,
    )
    channels = [
        (1, "General", None, None, T0),
        (2, "Neu", "Ein nue channel", "", T0),
        (3, "neu", "Anderes channel", "", T0),
        (4, "Neu", "Anderes channel", "", T0),
        (5, "   ", "x" * 600, "not a url", None),
        (6, "L" * 80, "long name", None, T0),
    ]
    await conn.executemany(
        "INSERT INTO channels (id, name, description, image_url, created_at)"
        " VALUES ($1, $2, $3, $4, $5)",
        channels,
    )
    memberships = [
        (1, 1, 1, T0, "admin"),
        (2, 2, 1, T0 + dt.timedelta(seconds=1), "user"),
        (3, 1, 1, T0 + dt.timedelta(seconds=2), "user"),  # alice again: merged
        (4, 2, 2, T0, "admin"),  # bob: owner of Neu
        (5, 4, 2, T0 + dt.timedelta(seconds=1), "admin"),  # carol: a second admin
        (6, 5, 2, T0 + dt.timedelta(seconds=2), "guest"),  # an unknown role
        (7, 1, 3, T0, "user"),
        (8, 55, 1, T0, "user"),  # no user 55
        (9, 6, 1, None, "user"),
    ]
    async with conn.transaction():
        # Superuser in the suite's server: lets the orphans past version 2's keys.
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.executemany(
            "INSERT INTO memberships (id, user_id, channel_id, created_at, role)"
            " VALUES ($1, $2, $3, $4, $5)",
            memberships,
        )
        column = "content" if version == 1 else "body"
        await conn.executemany(
            f"INSERT INTO messages (id, user_id, channel_id, created_at, {column})"  # noqa: S608
            f" VALUES ($1, $2, $3, $4, $5{'::jsonb' if version == 2 else ''})",
            [
                (
                    m.go_id,
                    m.user_id,
                    m.channel_id,
                    m.created_at,
                    _stored(m.content, version),
                )
                for m in messages(version)
            ],
        )
    for table in ("users", "channels", "memberships", "messages"):
        await conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"  # noqa: S608
        )


def _stored(content: object, version: int) -> object:
    """The Go column's value: v1 the text; v2 the JSON body (a text as a text body)."""
    if version == 1 or content is None:
        return content
    return orjson.dumps(_text(content) if isinstance(content, str) else content).decode()


def history(version: int, channel_id: int) -> list[dict[str, object]]:
    """Bodies of a Go channel's messages in the order the import must give them seqs."""
    rows = [m for m in messages(version) if m.channel_id == channel_id]
    times: dict[int, dt.datetime] = {}
    latest: dt.datetime | None = None
    cut_off = dt.datetime(2090, 1, 1, tzinfo=dt.UTC)  # stands for the import's start
    for m in rows:
        at = m.created_at if m.created_at is not None else latest
        assert at is not None
        times[m.go_id] = min(at, cut_off)
        if m.created_at is not None:
            latest = m.created_at if latest is None else max(latest, m.created_at)
    rows.sort(key=lambda m: (times[m.go_id], m.go_id))
    return [m.imported_as for m in rows]
