"""What every REST handler shares: body and parameter parsing, the success
envelope, the caller's identity, and the public JSON shapes of records."""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from gateway.app_keys import PG_POOL, SETTINGS
from gateway.auth import TokenClaims, bearer_token, check_generation, verify_token
from shared.db import users
from shared.db.records import Channel, Member, User
from shared.errors import InvalidBodyError, InvalidJsonError, InvalidParameterError
from shared.wire import iso_from_datetime, success, validation_details

Body = TypeVar("Body", bound=BaseModel)

_MAX_ID = 2**53


def ok(message: str, data: object, *, status: int = 200) -> web.Response:
    return web.Response(body=success(message, data), status=status, content_type="application/json")


async def read_body(request: web.Request, model: type[Body]) -> Body:
    """Parse and validate a JSON body: InvalidJsonError or InvalidBodyError listing fields."""
    raw = await request.read()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            raise InvalidJsonError() from None
        raise InvalidBodyError(details=validation_details(exc)) from None


def path_id(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    if not raw.isdigit() or not 0 < int(raw) <= _MAX_ID:
        raise InvalidParameterError(f"{name} must be a positive integer")
    return int(raw)


def query_int(
    request: web.Request, name: str, *, default: int | None, low: int, high: int
) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.lstrip("-").isdigit() or not low <= int(raw) <= high:
        raise InvalidParameterError(f"{name} must be an integer from {low} to {high}")
    return int(raw)


def page(request: web.Request) -> tuple[int, int]:
    """`limit` (1-500, default 100) and `offset` for list endpoints."""
    limit = query_int(request, "limit", default=100, low=1, high=500)
    offset = query_int(request, "offset", default=0, low=0, high=_MAX_ID)
    assert limit is not None  # both have defaults
    assert offset is not None
    return limit, offset


async def caller(request: web.Request) -> TokenClaims:
    """The authenticated caller: MissingTokenError (400), or InvalidTokenError (401)
    for a bad, expired or revoked token or a user who no longer exists.

    Revocation costs one primary-key read of PostgreSQL per authenticated request
    (see `gateway.auth`): PostgreSQL is what every gateway reads, so a log-out is
    seen everywhere at once, with no cache to keep coherent.
    """
    claims = verify_token(request.app[SETTINGS], bearer_token(request))
    check_generation(claims, await users.token_generation(request.app[PG_POOL], claims.user_id))
    return claims


def user_public(user: User) -> dict[str, Any]:
    """What anyone may see of a user: never the e-mail, role or hash."""
    return {
        "id": user.id,
        "name": user.name,
        "username": user.username,
        "avatar_url": user.avatar_url,
        "created_at": iso_from_datetime(user.created_at),
    }


def user_private(user: User) -> dict[str, Any]:
    """The user as they see themselves."""
    return {**user_public(user), "email": user.email, "role": user.role}


def channel_json(channel: Channel) -> dict[str, Any]:
    return {
        "id": channel.id,
        "name": channel.name,
        "description": channel.description,
        "image_url": channel.image_url,
        "created_at": iso_from_datetime(channel.created_at),
    }


def member_json(member: Member) -> dict[str, Any]:
    return {
        "id": member.user_id,
        "name": member.name,
        "username": member.username,
        "avatar_url": member.avatar_url,
        "role": member.role,
        "joined_at": iso_from_datetime(member.joined_at),
    }
