"""Typed rows returned by the SQL modules, and the connection type they take."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    # A pool or a single connection: both offer fetch/fetchrow/fetchval/execute.
    Executor: TypeAlias = (
        asyncpg.Pool[asyncpg.Record]
        | asyncpg.Connection[asyncpg.Record]
        | PoolConnectionProxy[asyncpg.Record]
    )

Record = asyncpg.Record


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    username: str
    email: str
    avatar_url: str | None
    role: str
    created_at: dt.datetime

    @classmethod
    def from_record(cls, row: Record) -> User:
        return cls(
            id=row["id"],
            name=row["name"],
            username=row["username"],
            email=row["email"],
            avatar_url=row["avatar_url"],
            role=row["role"],
            created_at=row["created_at"],
        )


@dataclass(frozen=True, slots=True)
class Credentials:
    user_id: int
    password_hash: str
    token_generation: int  # read with the hash: a token issued after checking it carries this

    @classmethod
    def from_record(cls, row: Record) -> Credentials:
        return cls(
            user_id=row["id"],
            password_hash=row["password"],
            token_generation=row["token_generation"],
        )


@dataclass(frozen=True, slots=True)
class Channel:
    id: int
    name: str
    description: str
    image_url: str | None
    created_at: dt.datetime
    kind: str  # public, private or dm (migration 005)

    @classmethod
    def from_record(cls, row: Record) -> Channel:
        return cls(
            id=row["id"],
            name=row["name"],
            description=row["description"],
            image_url=row["image_url"],
            created_at=row["created_at"],
            kind=row["kind"],
        )

    @property
    def private(self) -> bool:
        """Hidden from non-members: a private channel or a direct message."""
        return self.kind != "public"


@dataclass(frozen=True, slots=True)
class Member:
    user_id: int
    name: str
    username: str
    avatar_url: str | None
    role: str
    joined_at: dt.datetime

    @classmethod
    def from_record(cls, row: Record) -> Member:
        return cls(
            user_id=row["id"],
            name=row["name"],
            username=row["username"],
            avatar_url=row["avatar_url"],
            role=row["role"],
            joined_at=row["joined_at"],
        )


@dataclass(frozen=True, slots=True)
class LostAccess:
    """Sockets that may no longer stay open: a user's in a channel, opened with tokens
    of one generation, and why (a control event's name: see the membership audit)."""

    channel_id: int
    user_id: int
    token_generation: int
    reason: Literal["member_removed", "tokens_revoked"]


@dataclass(frozen=True, slots=True)
class ChatAccess:
    """What the chat socket needs at connect time, read in one query."""

    channel_exists: bool
    role: str | None
    user: User | None
    token_generation: int | None  # the user's, for the token check; None without a user
    channel_kind: str | None = None  # None when the channel does not exist
    muted_until: dt.datetime | None = None  # a mute in force, else None
