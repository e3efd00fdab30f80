"""`/api/v1/auth/*`: sign-up, log-in and log-out, the caller's own user, password
change, and tickets for the chat socket."""

from __future__ import annotations

from aiohttp import web

from gateway.api.common import caller, ok, read_body, user_private
from gateway.api.docs import Auth, documented
from gateway.app_keys import CONTROL_EVENTS, KEYS, PASSWORDS, PG_POOL, REDIS, SCRIPTS, SETTINGS
from gateway.auth import FIRST_GENERATION, issue_ticket, issue_token
from gateway.login_limit import count_attempt, give_back
from gateway.middlewares import client_key
from shared.db import users
from shared.errors import (
    EmailTakenError,
    InvalidCredentialsError,
    InvalidTokenError,
    UsernameTakenError,
    WrongPasswordError,
)
from shared.responses import OwnUserJson, TicketJson, Token
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
        password_hash=await request.app[PASSWORDS].hash(body.password),
        avatar_url=body.avatar_url,
    )
    token = issue_token(request.app[SETTINGS], user.id, user.username, FIRST_GENERATION)
    return ok("user created", token, status=201)


@documented(
    "Log in with the e-mail or the username; `data` is a token",
    description="Unknown identity and wrong password get the same answer, in the same time. "
    "Failed log-ins are limited per identity and per client (429 `rate_limited`).",
    body=LoginBody,
    data=Token,
    errors=(InvalidCredentialsError,),
)
async def login(request: web.Request) -> web.Response:
    app = request.app
    settings, passwords, pool = app[SETTINGS], app[PASSWORDS], app[PG_POOL]
    body = await read_body(request, LoginBody)
    # Counted before anything is checked: a locked identity is refused even with
    # the right password, and parallel guesses cannot overtake the count.
    attempt = await count_attempt(
        app[SCRIPTS], app[KEYS], settings, body.identity, client_key(request, settings)
    )
    credentials = await users.find_credentials(pool, body.identity)
    if credentials is None:
        await passwords.burn(body.password)
        raise InvalidCredentialsError()
    valid, new_hash = await passwords.verify(body.password, credentials.password_hash)
    if not valid:
        raise InvalidCredentialsError()
    await give_back(app[SCRIPTS], settings, attempt)
    if new_hash is not None:  # a migrated bcrypt hash, upgraded to argon2id
        await users.set_password_hash(pool, credentials.user_id, new_hash)
    user = await users.get_user(pool, credentials.user_id)
    if user is None:
        raise InvalidCredentialsError()
    # The generation read with the hash that was checked: a password changed
    # meanwhile has bumped it, and this token is then refused like the others.
    token = issue_token(settings, user.id, user.username, credentials.token_generation)
    return ok("login successful", token)


@documented(
    "Revoke every token of the caller, on every gateway, and close their sockets",
    auth=Auth.REQUIRED,
)
async def logout(request: web.Request) -> web.Response:
    """Revoke every token of the caller issued so far, and close their sockets."""
    claims = await caller(request)
    channel_ids = await users.revoke_tokens(request.app[PG_POOL], claims.user_id)
    await request.app[CONTROL_EVENTS].publish_tokens_revoked(channel_ids, claims.user_id)
    return ok("logged out", None)


@documented("The caller's own user, with e-mail and role", data=OwnUserJson, auth=Auth.REQUIRED)
async def me(request: web.Request) -> web.Response:
    claims = await caller(request)
    user = await users.get_user(request.app[PG_POOL], claims.user_id)
    if user is None:
        raise InvalidTokenError()
    return ok("user retrieved", user_private(user))


@documented(
    "Change the caller's password",
    description="Every token issued so far is revoked: log in again.",
    body=ChangePasswordBody,
    errors=(WrongPasswordError,),
    auth=Auth.REQUIRED,
)
async def change_password(request: web.Request) -> web.Response:
    """Set a new password; every token issued so far is revoked (log in again)."""
    claims = await caller(request)
    body = await read_body(request, ChangePasswordBody)
    app = request.app
    pool, passwords = app[PG_POOL], app[PASSWORDS]
    credentials = await users.get_credentials(pool, claims.user_id)
    if credentials is None:
        raise InvalidTokenError()
    valid, _ = await passwords.verify(body.old_password, credentials.password_hash)
    if not valid:
        raise WrongPasswordError()
    new_hash = await passwords.hash(body.new_password)
    channel_ids = await users.change_password(pool, claims.user_id, new_hash)
    await app[CONTROL_EVENTS].publish_tokens_revoked(channel_ids, claims.user_id)
    return ok("password changed", None)


@documented(
    "A single-use ticket for the chat socket's `?ticket=`, so no token is in its URL",
    data=TicketJson,
    auth=Auth.REQUIRED,
)
async def ws_ticket(request: web.Request) -> web.Response:
    """A single-use ticket for `?ticket=` on the chat socket, so no token is in its URL."""
    claims = await caller(request)
    seconds = request.app[SETTINGS].ws_ticket_seconds
    ticket = await issue_ticket(request.app[REDIS], request.app[KEYS], claims, seconds)
    data: TicketJson = {"ticket": ticket, "expires_in": seconds}
    return ok("ticket issued", data)
