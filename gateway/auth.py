"""Passwords and tokens.

Passwords: argon2id for new hashes; bcrypt (`$2a$`, as the Go server wrote them)
is still verified so migrated accounts log in, and is replaced by argon2id on
their next log-in. Hashing runs in a thread: it is deliberately slow.

Tokens: HS256 only, signed with JWT_SECRET, with the Go server's claims
(`user_id`, `username`, `exp`) plus `sub` and `iat`. The algorithm list is fixed
on decode, so `alg: none` and algorithm-confusion tokens are refused.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import secrets
from dataclasses import dataclass

import jwt
from aiohttp import web
from passlib.context import CryptContext

from shared.errors import InvalidTokenError, MissingTokenError
from shared.settings import Settings

_ALGORITHM = "HS256"

# OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
_PASSWORDS = CryptContext(
    schemes=["argon2", "bcrypt"],
    deprecated=["bcrypt"],
    argon2__type="ID",
    argon2__memory_cost=19 * 1024,
    argon2__rounds=2,
    argon2__parallelism=1,
)


async def hash_password(password: str) -> str:
    hashed: str = await asyncio.to_thread(_PASSWORDS.hash, password)
    return hashed


async def verify_password(password: str, password_hash: str) -> tuple[bool, str | None]:
    """Check a password; returns (ok, new_hash) where new_hash replaces an outdated hash."""
    ok, new_hash = await asyncio.to_thread(_PASSWORDS.verify_and_update, password, password_hash)
    return bool(ok), new_hash


@functools.cache
def _dummy_hash() -> str:
    hashed: str = _PASSWORDS.hash(secrets.token_hex(16))
    return hashed


async def burn_password_check(password: str) -> None:
    """Spend a real verification on an unknown identity, so a miss costs as much
    as a wrong password and response times do not reveal which accounts exist."""
    await asyncio.to_thread(_PASSWORDS.verify, password, _dummy_hash())


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    username: str


def issue_token(settings: Settings, user_id: int, username: str) -> str:
    now = dt.datetime.now(dt.UTC)
    claims = {
        "user_id": user_id,
        "username": username,
        "sub": str(user_id),
        "iat": now,
        "exp": now + dt.timedelta(hours=settings.jwt_expires_hours),
    }
    return jwt.encode(claims, settings.signing_key(), algorithm=_ALGORITHM)


def verify_token(settings: Settings, token: str) -> TokenClaims:
    """Raises InvalidTokenError for a forged, expired, malformed or alg-mismatched token."""
    try:
        claims = jwt.decode(
            token,
            settings.signing_key(),
            algorithms=[_ALGORITHM],
            options={"require": ["exp", "user_id"]},
        )
    except jwt.PyJWTError:
        raise InvalidTokenError() from None
    user_id = claims.get("user_id")
    # bool is an int subclass; a token claiming `true` is not user 1.
    if not isinstance(user_id, int) or isinstance(user_id, bool) or user_id <= 0:
        raise InvalidTokenError()
    return TokenClaims(user_id=user_id, username=str(claims.get("username", "")))


def bearer_token(request: web.Request) -> str:
    """The token from `Authorization: Bearer`, or MissingTokenError."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise MissingTokenError()
    return token.strip()
