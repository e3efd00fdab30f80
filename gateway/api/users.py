"""`/api/v1/users*`: listings for signed-in users and the caller's profile edit."""

from __future__ import annotations

from aiohttp import web

from gateway.api.common import (
    PAGE,
    caller,
    ok,
    page,
    path_id,
    read_body,
    user_private,
    user_public,
)
from gateway.api.docs import Auth, documented
from gateway.app_keys import PG_POOL
from shared.db import users
from shared.errors import EmailTakenError, InvalidTokenError, UsernameTakenError, UserNotFoundError
from shared.responses import OwnUserJson, PublicUserJson
from shared.wire import EditUserBody

_ADMINS_SEE_MORE = "Who is signed up is not public; admins also see e-mail addresses and roles."


async def _viewer_is_admin(request: web.Request) -> bool:
    """Listings need a valid token (who is signed up is not public); admins also
    see e-mail addresses and roles."""
    viewer = await users.get_user(request.app[PG_POOL], (await caller(request)).user_id)
    return viewer is not None and viewer.role == "admin"


@documented(
    "Users, public fields only",
    description=_ADMINS_SEE_MORE,
    data=list[PublicUserJson] | list[OwnUserJson],
    query=PAGE,
    auth=Auth.REQUIRED,
)
async def list_users(request: web.Request) -> web.Response:
    limit, offset = page(request)
    show = user_private if await _viewer_is_admin(request) else user_public
    found = await users.list_users(request.app[PG_POOL], limit=limit, offset=offset)
    return ok("users retrieved", [show(user) for user in found])


@documented(
    "One user, public fields only",
    description=_ADMINS_SEE_MORE,
    data=PublicUserJson | OwnUserJson,
    errors=(UserNotFoundError,),
    auth=Auth.REQUIRED,
)
async def get_user(request: web.Request) -> web.Response:
    show = user_private if await _viewer_is_admin(request) else user_public
    user = await users.get_user(request.app[PG_POOL], path_id(request, "id"))
    if user is None:
        raise UserNotFoundError()
    return ok("user retrieved", show(user))


@documented(
    "Replace the caller's profile",
    description="A missing or null `avatar_url` keeps the current one.",
    body=EditUserBody,
    data=OwnUserJson,
    errors=(UsernameTakenError, EmailTakenError),
    auth=Auth.REQUIRED,
)
async def edit_user(request: web.Request) -> web.Response:
    claims = await caller(request)
    body = await read_body(request, EditUserBody)
    user = await users.update_profile(
        request.app[PG_POOL],
        claims.user_id,
        name=body.name,
        username=body.username,
        email=body.email,
        avatar_url=body.avatar_url,
    )
    if user is None:
        raise InvalidTokenError()
    return ok("user updated", user_private(user))
