"""SQL for users: sign-up, log-in look-ups, profiles, password changes, token revocation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

from shared.db.records import Credentials, User

if TYPE_CHECKING:
    from shared.db.records import Executor

from shared.errors import AppError, EmailTakenError, UsernameTakenError


def unique_violation_error(exc: asyncpg.UniqueViolationError) -> AppError:
    """Map a unique index on users to the field the client got wrong."""
    if exc.constraint_name == "users_username_key":
        return UsernameTakenError()
    return EmailTakenError()


async def create_user(
    db: Executor,
    *,
    name: str,
    username: str,
    email: str,
    password_hash: str,
    avatar_url: str | None,
) -> User:
    """Insert a user. Raises UsernameTakenError / EmailTakenError (case-insensitive)."""
    try:
        row = await db.fetchrow(
            """INSERT INTO users (name, username, email, password, avatar_url)
                VALUES ($1, $2, $3, $4, $5)
                RETURNING id, name, username, email, avatar_url, role, created_at""",
            name,
            username,
            email,
            password_hash,
            avatar_url,
        )
    except asyncpg.UniqueViolationError as exc:
        raise unique_violation_error(exc) from None
    assert row is not None  # INSERT ... RETURNING always yields the row
    return User.from_record(row)


async def get_user(db: Executor, user_id: int) -> User | None:
    row = await db.fetchrow(
        "SELECT id, name, username, email, avatar_url, role, created_at FROM users WHERE id = $1",
        user_id,
    )
    return None if row is None else User.from_record(row)


async def get_users(db: Executor, user_ids: list[int]) -> list[User]:
    """The users among `user_ids` that exist, by username; one query for any number."""
    rows = await db.fetch(
        """SELECT id, name, username, email, avatar_url, role, created_at FROM users
           WHERE id = ANY($1::bigint[]) ORDER BY lower(username), id""",
        user_ids,
    )
    return [User.from_record(row) for row in rows]


async def list_users(db: Executor, *, limit: int, offset: int) -> list[User]:
    rows = await db.fetch(
        """SELECT id, name, username, email, avatar_url, role, created_at FROM users
           ORDER BY id LIMIT $1 OFFSET $2""",
        limit,
        offset,
    )
    return [User.from_record(row) for row in rows]


async def find_credentials(db: Executor, identity: str) -> Credentials | None:
    """Look a user up by e-mail or username, in any case."""
    row = await db.fetchrow(
        """SELECT id, password, token_generation FROM users
           WHERE lower(email) = lower($1) OR lower(username) = lower($1)
           LIMIT 1""",
        identity,
    )
    return None if row is None else Credentials.from_record(row)


async def get_credentials(db: Executor, user_id: int) -> Credentials | None:
    row = await db.fetchrow(
        "SELECT id, password, token_generation FROM users WHERE id = $1", user_id
    )
    return None if row is None else Credentials.from_record(row)


async def set_password_hash(db: Executor, user_id: int, password_hash: str) -> None:
    """Replace the hash of the same password (an upgrade); tokens stay valid."""
    await db.execute("UPDATE users SET password = $2 WHERE id = $1", user_id, password_hash)


async def token_generation(db: Executor, user_id: int) -> int | None:
    """The generation a token must carry to be accepted; None for an unknown user."""
    generation: int | None = await db.fetchval(
        "SELECT token_generation FROM users WHERE id = $1", user_id
    )
    return generation


# Each bumps the generation, so every token issued so far is refused, and lists
# the channels where the user may hold sockets, to close them: one round trip.
_REVOKE_TOKENS = """
WITH revoked AS (
    UPDATE users SET token_generation = token_generation + 1 WHERE id = $1 RETURNING id
)
SELECT m.channel_id FROM memberships m JOIN revoked r ON m.user_id = r.id
"""
_REPLACE_HASH_AND_REVOKE = """
WITH revoked AS (
    UPDATE users SET token_generation = token_generation + 1, password = $2
     WHERE id = $1 RETURNING id
)
SELECT m.channel_id FROM memberships m JOIN revoked r ON m.user_id = r.id
"""


async def revoke_tokens(db: Executor, user_id: int) -> list[int]:
    """Revoke every token of the user issued so far; returns the user's channel ids."""
    rows = await db.fetch(_REVOKE_TOKENS, user_id)
    return [row["channel_id"] for row in rows]


async def change_password(db: Executor, user_id: int, password_hash: str) -> list[int]:
    """Set a new password and revoke every token issued so far, in one statement;
    returns the user's channel ids."""
    rows = await db.fetch(_REPLACE_HASH_AND_REVOKE, user_id, password_hash)
    return [row["channel_id"] for row in rows]


async def update_profile(
    db: Executor,
    user_id: int,
    *,
    name: str,
    username: str,
    email: str,
    avatar_url: str | None,
) -> User | None:
    """Replace the caller's profile fields. Raises UsernameTakenError / EmailTakenError."""
    try:
        row = await db.fetchrow(
            """UPDATE users SET name = $2, username = $3, email = $4,
                   avatar_url = COALESCE($5, avatar_url)
                WHERE id = $1 RETURNING id, name, username, email, avatar_url, role, created_at""",
            user_id,
            name,
            username,
            email,
            avatar_url,
        )
    except asyncpg.UniqueViolationError as exc:
        raise unique_violation_error(exc) from None
    return None if row is None else User.from_record(row)
