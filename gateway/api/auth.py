"""`/api/v1/auth/*`: sign-up, log-in, the caller's own user, password change."""

from __future__ import annotations

from aiohttp import web

from gateway.api.common import caller, ok, read_body, user_private
from gateway.api.docs import Auth, documented
from gateway.app_keys import PG_POOL, SETTINGS
from gateway.auth import burn_password_check, hash_password, issue_token, verify_password
from shared.db import users
from shared.errors import (
    EmailTakenError,
    InvalidCredentialsError,
    InvalidTokenError,
    UsernameTakenError,
    WrongPasswordError,
)
from shared.responses import OwnUserJson, Token
from shared.wire import ChangePasswordBody, LoginBody, SignupBody


@documented(
    "Create an account; `data` is a token",
    body=SignupBody,
    data=Token,
    status=201,
    errors=(UsernameTakenError, EmailTakenError),
)
async def signup(request: web.Request) -> web.Response:
    body = await read_body(request, SignupBody)
    user = await users.create_user(
        request.app[PG_POOL],
        name=body.name,
        username=body.username,
        email=body.email,
        password_hash=await hash_password(body.password),
        avatar_url=body.avatar_url,
    )
    token = issue_token(request.app[SETTINGS], user.id, user.username)
    return ok("user created", token, status=201)


@documented(
    "Log in with the e-mail or the username; `data` is a token",
    description="Unknown identity and wrong password get the same answer, in the same time.",
    body=LoginBody,
    data=Token,
    errors=(InvalidCredentialsError,),
)
async def login(request: web.Request) -> web.Response:
    body = await read_body(request, LoginBody)
    pool = request.app[PG_POOL]
    credentials = await users.find_credentials(pool, body.identity)
    if credentials is None:
        await burn_password_check(body.password)
        raise InvalidCredentialsError()
    valid, new_hash = await verify_password(body.password, credentials.password_hash)
    if not valid:
        raise InvalidCredentialsError()
    if new_hash is not None:  # a migrated bcrypt hash, upgraded to argon2id
        await users.set_password_hash(pool, credentials.user_id, new_hash)
    user = await users.get_user(pool, credentials.user_id)
    if user is None:
        raise InvalidCredentialsError()
    return ok("login successful", issue_token(request.app[SETTINGS], user.id, user.username))


@documented("The caller's own user, with e-mail and role", data=OwnUserJson, auth=Auth.REQUIRED)
async def me(request: web.Request) -> web.Response:
    claims = caller(request)
    user = await users.get_user(request.app[PG_POOL], claims.user_id)
    if user is None:
        raise InvalidTokenError()
    return ok("user retrieved", user_private(user))


@documented(
    "Change the caller's password",
    description="Tokens issued before stay valid until they expire.",
    body=ChangePasswordBody,
    errors=(WrongPasswordError,),
    auth=Auth.REQUIRED,
)
async def change_password(request: web.Request) -> web.Response:
    claims = caller(request)
    body = await read_body(request, ChangePasswordBody)
    pool = request.app[PG_POOL]
    credentials = await users.get_credentials(pool, claims.user_id)
    if credentials is None:
        raise InvalidTokenError()
    valid, _ = await verify_password(body.old_password, credentials.password_hash)
    if not valid:
        raise WrongPasswordError()
    await users.set_password_hash(pool, claims.user_id, await hash_password(body.new_password))
    return ok("password changed", None)
