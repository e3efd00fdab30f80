"""Tokens, socket credentials and single-use socket tickets.

Tokens: HS256 only, signed with JWT_SECRET, with the Go server's claims
(`user_id`, `username`, `exp`) plus `sub`, `iat` and `gen`. The algorithm list
is fixed on decode, so `alg: none` and algorithm-confusion tokens are refused.
During a key rotation a token signed with JWT_SECRET_PREVIOUS is accepted
too; new tokens are always signed with JWT_SECRET.

Revocation: `gen` is the user's token generation when the token was issued
(`users.token_generation`, 0 for tokens without the claim). Log-out and a
password change bump it, and every authenticated request and socket upgrade
compares the two (`check_generation`) against PostgreSQL, which every gateway
reads, so a revoked token stops working on all of them at once.

A chat socket may carry its credential where no access log writes it: as a
WebSocket subprotocol (`Sec-WebSocket-Protocol: bearer, <jwt>`), or as a
ticket (`?ticket=`) that `POST /api/v1/auth/ws-ticket` hands out, valid once
and for `ws_ticket_seconds`. `?token=<jwt>` stays for the Go server's clients.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
from aiohttp import hdrs, web
from redis.asyncio import Redis

from gateway.outages import DEPENDENCY_ERRORS
from shared.errors import InvalidTokenError, MissingTokenError, UnavailableError
from shared.redis_keys import RedisKeys
from shared.settings import Settings

_ALGORITHM = "HS256"
# The subprotocol a client offers in front of its token, and the one the 101 selects.
SOCKET_PROTOCOL = "bearer"
# A new user's generation: the default of `users.token_generation` (migration 002).
FIRST_GENERATION = 0
# What `secrets.token_urlsafe(32)` returns: anything else is refused before Redis.
_TICKET_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    username: str
    generation: int


def issue_token(settings: Settings, user_id: int, username: str, generation: int) -> str:
    now = dt.datetime.now(dt.UTC)
    claims = {
        "user_id": user_id,
        "username": username,
        "sub": str(user_id),
        "gen": generation,
        "iat": now,
        "exp": now + dt.timedelta(hours=settings.jwt_expires_hours),
    }
    return jwt.encode(claims, settings.signing_key(), algorithm=_ALGORITHM)


def verify_token(settings: Settings, token: str) -> TokenClaims:
    """The token's claims if one of the verification keys signed it and it has not
    expired; InvalidTokenError for a forged, expired, malformed or alg-mismatched token.

    Does not check revocation: see `check_generation`.
    """
    for key in settings.verification_keys():
        try:
            claims = jwt.decode(
                token, key, algorithms=[_ALGORITHM], options={"require": ["exp", "user_id"]}
            )
        except jwt.InvalidSignatureError:
            continue  # perhaps signed with the previous key
        except jwt.PyJWTError:
            raise InvalidTokenError() from None
        return _claims(claims)
    raise InvalidTokenError()


def _claims(claims: dict[str, Any]) -> TokenClaims:
    user_id = _whole_number(claims.get("user_id"))
    generation = _whole_number(claims.get("gen", FIRST_GENERATION))
    if user_id == 0:
        raise InvalidTokenError()
    return TokenClaims(
        user_id=user_id, username=str(claims.get("username", "")), generation=generation
    )


def _whole_number(value: object) -> int:
    # bool is an int subclass; a token claiming `true` is not user 1.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidTokenError()
    return value


def check_generation(claims: TokenClaims, current: int | None) -> None:
    """Raise InvalidTokenError unless the token was issued under the user's current
    generation (`current`, None when the user no longer exists)."""
    if current is None or claims.generation != current:
        raise InvalidTokenError()


def bearer_token(request: web.Request) -> str:
    """The token from `Authorization: Bearer`, or MissingTokenError."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise MissingTokenError()
    return token.strip()


def socket_protocol(request: web.Request) -> str | None:
    """The subprotocol a socket's 101 answer selects: `bearer` if the client offered it.

    A browser that offered subprotocols fails a 101 that selects none, and then
    could not read the close code of a refusal either.
    """
    return SOCKET_PROTOCOL if SOCKET_PROTOCOL in _offered_protocols(request) else None


def _offered_protocols(request: web.Request) -> list[str]:
    values = request.headers.getall(hdrs.SEC_WEBSOCKET_PROTOCOL, [])
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


async def socket_claims(
    request: web.Request, settings: Settings, redis: Redis, keys: RedisKeys
) -> TokenClaims:
    """Who opens a chat socket, from the first credential it carries: the token after
    `bearer` among the offered subprotocols, a ticket (`?ticket=`), or `?token=`.

    Raises MissingTokenError (none, or `bearer` with nothing after it),
    InvalidTokenError, or UnavailableError (Redis down while redeeming a ticket).
    Revocation is checked by the caller, with the user's row.
    """
    offered = _offered_protocols(request)
    if SOCKET_PROTOCOL in offered:
        position = offered.index(SOCKET_PROTOCOL) + 1
        if position == len(offered):
            raise MissingTokenError()
        return verify_token(settings, offered[position])
    ticket = request.query.get("ticket")
    if ticket is not None:
        return await redeem_ticket(redis, keys, ticket)
    token = request.query.get("token", "").strip()
    if not token:
        raise MissingTokenError()
    return verify_token(settings, token)


def _ticket_key(keys: RedisKeys, ticket: str) -> str:
    # Redis holds only a digest: what a key listing or MONITOR shows cannot open a socket.
    return keys.ws_ticket(hashlib.sha256(ticket.encode()).hexdigest())


async def issue_ticket(redis: Redis, keys: RedisKeys, claims: TokenClaims, seconds: int) -> str:
    """A random ticket that opens one chat socket as `claims` within `seconds`.

    The ticket carries the token's generation, so a revocation in between
    refuses it as it refuses the token. Raises RedisError when Redis is down.
    """
    ticket = secrets.token_urlsafe(32)
    value = orjson.dumps(
        {"user_id": claims.user_id, "username": claims.username, "gen": claims.generation}
    )
    await redis.set(_ticket_key(keys, ticket), value, ex=seconds)
    return ticket


async def redeem_ticket(redis: Redis, keys: RedisKeys, ticket: str) -> TokenClaims:
    """The claims a ticket was issued for; it is consumed (GETDEL), so a second use,
    an expired or an unknown ticket is InvalidTokenError. UnavailableError if Redis is down."""
    if not _TICKET_PATTERN.match(ticket):
        raise InvalidTokenError()
    try:
        value = await redis.getdel(_ticket_key(keys, ticket))
    except DEPENDENCY_ERRORS as exc:
        raise UnavailableError() from exc
    if value is None:
        raise InvalidTokenError()
    return _claims(orjson.loads(value))
