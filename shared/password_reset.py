"""`chat-group reset-password`: an operator gives a user a new password.

There is no self-service reset (no e-mail is sent from this service), so this
is how an account that cannot log in gets a password again: accounts imported
from the Go server without a usable one, or a user who forgot theirs. The
operator hands the new password over and the user changes it after logging in
(`PUT /api/v1/auth/change-password`).

The hash is argon2id with argon2-cffi's parameters (RFC 9106, low memory);
the gateway re-hashes it to its own at the user's next log-in, as it does
bcrypt hashes from the Go server.
"""

from __future__ import annotations

import asyncpg
from argon2 import PasswordHasher
from pydantic import TypeAdapter

from shared.db import users
from shared.wire import Password

_HASHER = PasswordHasher()
_PASSWORD: TypeAdapter[str] = TypeAdapter(Password)
_CONNECT_TIMEOUT_SECONDS = 10.0


class UnknownUserError(Exception):
    """No user has that username or e-mail."""


def check_new_password(password: str) -> str:
    """The password if sign-up would accept it; raises pydantic's ValidationError."""
    return _PASSWORD.validate_python(password)


def hash_new_password(password: str) -> str:
    """An argon2id hash of `password` (slow on purpose: call it off the event loop)."""
    hashed: str = _HASHER.hash(password)
    return hashed


async def reset_password(dsn: str, identity: str, password_hash: str) -> int:
    """Store `password_hash` for the user whose username or e-mail is `identity` (any case).

    Returns the user's id. Raises UnknownUserError.
    """
    conn = await asyncpg.connect(dsn, timeout=_CONNECT_TIMEOUT_SECONDS)
    try:
        credentials = await users.find_credentials(conn, identity)
        if credentials is None:
            raise UnknownUserError(identity)
        await users.set_password_hash(conn, credentials.user_id, password_hash)
        return credentials.user_id
    finally:
        await conn.close()
