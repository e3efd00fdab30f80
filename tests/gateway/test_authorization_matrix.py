"""The authorization matrix: every REST route and every socket frame type, against each
kind of caller, with the status or error code each gets.

`ROWS` is the table. Each row names a route or frame, says what each caller gets,
and how to ask; `test_row` runs it against a real gateway, every caller in a fresh
channel of its own (so one caller's kick or leave does not change the next one's
world). The README's "Authorization matrix" section is this table, rendered by
`render_table`; `test_the_readme_shows_this_table` keeps them equal, and
`python -m tests.gateway.test_authorization_matrix` rewrites the section.

Adding a route: add a `Row` (a name, the eight outcomes, and an `ask`), then
regenerate the README. An outcome is the HTTP status, with the error `code` when it
is not 2xx (`403 forbidden_role`); for sockets, the close code and error code of a
refused socket (`4403 not_a_member`), `error <code>` for an error frame on an open
socket, or the word for what came back (`open`, `ack`, `subscribed`, `ok`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.app_keys import SETTINGS
from gateway.auth import issue_token
from tests.gateway.api_client import PASSWORD, RECEIVE_TIMEOUT, Account, signup
from tests.gateway.conftest import MakeGateway

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "Authorization matrix"

CALLERS = ("anonymous", "non_member", "member", "muted", "banned", "moderator", "owner", "admin")
# The target of moderation rows (a plain member) and an outsider to invite.
_TARGET, _OUTSIDER = "target", "outsider"
_FENCE_CHANNEL = 2**53  # an unsubscribe for it answers at once: what came before is in


@dataclass
class Case:
    """One caller's go at one row: the gateway, a fresh channel, the accounts."""

    client: TestClient[Any, Any]
    pool: asyncpg.Pool
    channel_id: int
    caller: Account | None
    kind: str  # the caller kind
    accounts: dict[str, Account]

    def user(self, name: str) -> int:
        return self.accounts[name].user_id


Ask = Callable[[Case], Awaitable[str]]


@dataclass(frozen=True)
class Row:
    name: str
    outcomes: tuple[str, ...]  # in CALLERS order
    ask: Ask
    private: bool = False  # the channel of each case is private
    setup: Callable[[Case], Awaitable[None]] | None = None
    notes: str = ""

    def expected(self) -> dict[str, str]:
        return dict(zip(CALLERS, self.outcomes, strict=True))


# --- asking over REST -----------------------------------------------------------


def rest(method: str, path: str, body: Callable[[Case], object] | None = None) -> Ask:
    """Ask `method path` (`{id}` is the case's channel, `{target}` and `{banned}`,
    `{muted}`, `{outsider}` user ids) with the caller's token."""

    async def ask(case: Case) -> str:
        url = path.format(
            id=case.channel_id,
            message=_message_of(case, _TARGET),
            own=_message_of(case, "caller"),
            target=case.user(_TARGET),
            banned=case.user("banned"),
            muted=case.user("muted"),
            outsider=case.user(_OUTSIDER),
        )
        headers = {} if case.caller is None else case.caller.auth
        payload = None if body is None else body(case)
        response = await case.client.request(method, url, json=payload, headers=headers)
        if response.status < 300:
            return str(response.status)
        error = await response.json()
        return f"{response.status} {error['code']}"

    return ask


def _target(case: Case) -> object:
    return {"user_id": case.user(_TARGET)}


def _message_of(case: Case, author: str) -> int:
    """The id of the message `_messages` stored: the target's, or the caller's own."""
    return case.channel_id * 1000 + (1 if author == _TARGET else 2)


async def _messages(case: Case) -> None:
    """A message of the target's and (for a caller with an account) one of the
    caller's own, as the persistence worker stores them."""
    authors = [(_message_of(case, _TARGET), case.user(_TARGET), 1)]
    if case.caller is not None:
        authors.append((_message_of(case, "caller"), case.caller.user_id, 2))
    await case.pool.executemany(
        "INSERT INTO messages (id, channel_id, seq, user_id, body, created_at)"
        """ VALUES ($1, $2, $3, $4, '{"type": "text", "content": "hi"}', now())""",
        [(message_id, case.channel_id, seq, user_id) for message_id, user_id, seq in authors],
    )


_EDIT = {"body": {"type": "text", "content": "edited"}}
_REACT = {"emoji": "👍"}


def _channel(case: Case) -> object:
    return {"channel_id": case.channel_id}


def _own_profile(case: Case) -> object:
    name = case.caller.username if case.caller else "nobody"
    return {"name": name.title(), "username": name, "email": f"{name}@example.com"}


def _fresh_signup(case: Case) -> object:
    name = f"new_{case.kind}"
    return {"name": "New", "username": name, "email": f"{name}@example.com", "password": PASSWORD}


def _login(case: Case) -> object:
    return {"identity": f"{_TARGET}@example.com", "password": PASSWORD}


def _password(case: Case) -> object:
    return {"old_password": PASSWORD, "new_password": PASSWORD + "!"}


def _new_channel(case: Case) -> object:
    return {"name": f"made by {case.kind}"}


# --- asking over the sockets ----------------------------------------------------


async def _open(case: Case, path: str) -> tuple[aiohttp.ClientWebSocketResponse | None, str]:
    """Open a socket; (the socket, "open"), or (None, "<close code> <error code>").

    Both sockets decide admission after the upgrade, so a probe tells: an admitted
    socket answers it (the chat socket refuses a frame of unknown type with
    `invalid_body`; the multiplexed one answers an unsubscribe), a refused one's
    first frame is its refusal, then the close."""
    query = "" if case.caller is None else f"?token={case.caller.token}"
    ws = await case.client.ws_connect(f"{path}{query}")
    chat = path.startswith("/api/v1/chat/")
    probe = {"type": "probe"} if chat else {"type": "unsubscribe", "channel_id": _FENCE_CHANNEL}
    with contextlib.suppress(ConnectionResetError):  # a refused socket may be gone already
        await _put(ws, **probe)
    message = await ws.receive(timeout=RECEIVE_TIMEOUT)
    assert message.type is aiohttp.WSMsgType.TEXT, message
    frame = orjson.loads(message.data)
    if frame["type"] == "unsubscribed" or (chat and frame.get("code") == "invalid_body"):
        return ws, "open"
    closing = await ws.receive(timeout=RECEIVE_TIMEOUT)
    assert closing.type is aiohttp.WSMsgType.CLOSE, closing
    return None, f"{ws.close_code} {frame['code']}"


async def _put(ws: aiohttp.ClientWebSocketResponse, **frame: object) -> None:
    await ws.send_str(orjson.dumps(frame).decode())


async def _until_fence(ws: aiohttp.ClientWebSocketResponse, success: str) -> str:
    """Send the fence and read up to its answer: the first error's code, else `success`
    if any frame other than presence arrived, else "ok"."""
    await _put(ws, type="unsubscribe", channel_id=_FENCE_CHANNEL)
    outcome = None
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        while True:
            frame = orjson.loads((await ws.receive()).data)
            kind = frame["type"]
            if kind == "unsubscribed" and frame["channel_id"] == _FENCE_CHANNEL:
                return outcome or "ok"
            if kind == "error" and outcome is None:
                outcome = f"error {frame['code']}"
            elif kind == success and outcome is None:
                outcome = success


def chat_socket(send: bool) -> Ask:
    async def ask(case: Case) -> str:
        ws, outcome = await _open(case, f"/api/v1/chat/{case.channel_id}")
        if ws is None or not send:
            return outcome
        await ws.send_str(orjson.dumps({"type": "text", "content": "hi"}).decode())
        async with asyncio.timeout(RECEIVE_TIMEOUT):
            while True:
                frame = orjson.loads((await ws.receive()).data)
                if frame["type"] in ("ack", "error"):
                    return "ack" if frame["type"] == "ack" else f"error {frame['code']}"

    return ask


def mux(frame_type: str | None) -> Ask:
    """Open the multiplexed socket, subscribe to the case's channel (unless the row is
    the subscribe itself), then send `frame_type`."""

    async def ask(case: Case) -> str:
        ws, outcome = await _open(case, "/api/v1/ws")
        if ws is None or frame_type is None:
            return outcome
        channel_id = case.channel_id
        await _put(ws, type="subscribe", channel_id=channel_id)
        if frame_type == "subscribe":
            return await _until_fence(ws, "subscribed")
        await _until_fence(ws, "subscribed")
        if frame_type == "send":
            await _put(
                ws, type="send", channel_id=channel_id, body={"type": "text", "content": "hi"}
            )
            return await _until_fence(ws, "ack")
        if frame_type in ("edit", "delete", "react"):
            mine = frame_type == "edit"  # one edits one's own; deletes and reacts to another's
            message_id = _message_of(case, "caller" if mine else _TARGET)
            extra: dict[str, object] = {"edit": _EDIT, "react": _REACT}.get(frame_type, {})
            await _put(ws, type=frame_type, channel_id=channel_id, message_id=message_id, **extra)
            return await _until_fence(ws, "ack")
        if frame_type == "typing":
            await _put(ws, type="typing", channel_id=channel_id)
        elif frame_type == "read":
            await _put(ws, type="read", channel_id=channel_id, seq=0)
        else:
            await _put(ws, type="unsubscribe", channel_id=channel_id)
            return await _until_fence(ws, "unsubscribed")
        return await _until_fence(ws, "-")

    return ask


def _rest(
    method: str,
    path: str,
    outcomes: tuple[str, ...],
    body: Callable[[Case], object] | None = None,
    *,
    label: str | None = None,
    **options: Any,
) -> Row:
    """A REST row named `method label` (the path as documented; `path` by default)."""
    return Row(f"{method} {label or path}", outcomes, rest(method, path, body), **options)


# --- the table ------------------------------------------------------------------


def _same(outcome: str) -> tuple[str, ...]:
    return (outcome,) * len(CALLERS)


def _signed_in(outcome: str) -> tuple[str, ...]:
    return ("400 missing_token", *(outcome,) * (len(CALLERS) - 1))


# Callers:   anonymous, non_member, member, muted, banned, moderator, owner, admin
_MEMBERS_ONLY = (
    "400 missing_token",
    "403 not_a_member",
    "200",
    "200",
    "403 not_a_member",
    "200",
    "200",
    "403 not_a_member",
)
_MODERATORS = (
    "400 missing_token",
    "403 not_a_member",
    "403 forbidden_role",
    "403 forbidden_role",
    "403 not_a_member",
    "200",
    "200",
    "200",
)
_OWNER = (
    "400 missing_token",
    "403 not_a_member",
    "403 forbidden_role",
    "403 forbidden_role",
    "403 not_a_member",
    "403 forbidden_role",
    "200",
    "200",
)
_PRIVATE_MODERATORS = (
    "400 missing_token",
    "404 channel_not_found",
    "403 forbidden_role",
    "403 forbidden_role",
    "404 channel_not_found",
    "200",
    "200",
    "200",
)
# A join of a public channel, an acceptance of an invitation into a private one.
_JOINS = (
    "400 missing_token",
    "200",
    "409 already_member",
    "409 already_member",
    "403 banned",
    "409 already_member",
    "409 already_member",
    "200",
)
# An edit of one's own message, a reaction: members who are not muted. An admin
# outside the channel is no member.
_CHANGE_OWN = (
    "400 missing_token",
    "403 not_a_member",
    "200",
    "403 muted",
    "403 not_a_member",
    "200",
    "200",
    "403 not_a_member",
)
# Deleting another's message: its moderators and owner, and an admin anywhere.
_DELETE_OTHERS = (
    "400 missing_token",
    "403 not_a_member",
    "403 not_your_message",
    "403 not_your_message",
    "403 not_a_member",
    "200",
    "200",
    "200",
)
_REFUSED_CHAT = {
    "anonymous": "4400 missing_token",
    "non_member": "4403 not_a_member",
    "banned": "4403 not_a_member",
    "admin": "4403 not_a_member",
}


def _chat(member: str, muted: str) -> tuple[str, ...]:
    return tuple(_REFUSED_CHAT.get(kind, muted if kind == "muted" else member) for kind in CALLERS)


def _mux(member: str, muted: str, outsider: str) -> tuple[str, ...]:
    by_kind = {
        "anonymous": "4400 missing_token",
        "non_member": outsider,
        "banned": outsider,
        "admin": outsider,
        "muted": muted,
    }
    return tuple(by_kind.get(kind, member) for kind in CALLERS)


async def _invite_outsider(case: Case) -> None:
    await case.pool.execute(
        "INSERT INTO channel_invitations (channel_id, user_id, invited_by) VALUES ($1, $2, $3)",
        case.channel_id,
        case.user(_OUTSIDER),
        case.user("owner"),
    )


async def _invite_caller(case: Case) -> None:
    """An invitation for callers outside the channel (the banned one's written past the
    route, which would refuse it: accepting must refuse it too)."""
    if case.caller is not None and case.kind in ("non_member", "banned", "admin"):
        await case.pool.execute(
            "INSERT INTO channel_invitations (channel_id, user_id) VALUES ($1, $2)",
            case.channel_id,
            case.caller.user_id,
        )


ROWS: tuple[Row, ...] = (
    _rest("GET", "/", _same("200")),
    _rest("GET", "/healthz", _same("200")),
    _rest("GET", "/readyz", _same("200")),
    _rest("GET", "/metrics", _same("200")),
    _rest("GET", "/api/v1/openapi.json", _same("200")),
    _rest("POST", "/api/v1/auth/signup", _same("201"), _fresh_signup),
    _rest("POST", "/api/v1/auth/login", _same("200"), _login),
    _rest("POST", "/api/v1/auth/logout", _signed_in("200")),
    _rest("POST", "/api/v1/auth/ws-ticket", _signed_in("200")),
    _rest("GET", "/api/v1/auth/me", _signed_in("200")),
    _rest("PUT", "/api/v1/auth/change-password", _signed_in("200"), _password),
    _rest("GET", "/api/v1/users", _signed_in("200")),
    _rest("GET", "/api/v1/users/{target}", _signed_in("200"), label="/api/v1/users/{id}"),
    _rest("PUT", "/api/v1/users/edit", _signed_in("200"), _own_profile),
    _rest("GET", "/api/v1/channels", _same("200")),
    _rest("POST", "/api/v1/channels/new", _signed_in("201"), _new_channel),
    _rest("GET", "/api/v1/channels/{id}", _same("200")),
    _rest(
        "GET",
        "/api/v1/channels/{id}",
        (
            "404 channel_not_found",
            "404 channel_not_found",
            "200",
            "200",
            "404 channel_not_found",
            "200",
            "200",
            "200",
        ),
        label="/api/v1/channels/{id} (private)",
        private=True,
    ),
    _rest("POST", "/api/v1/channels/join", _JOINS, _channel),
    _rest(
        "POST",
        "/api/v1/channels/join",
        (
            "400 missing_token",
            "404 channel_not_found",
            "409 already_member",
            "409 already_member",
            "404 channel_not_found",
            "409 already_member",
            "409 already_member",
            "404 channel_not_found",
        ),
        _channel,
        label="/api/v1/channels/join (private)",
        private=True,
    ),
    _rest("POST", "/api/v1/channels/leave", _MEMBERS_ONLY, _channel),
    _rest("GET", "/api/v1/channels/{id}/members", _signed_in("200")),
    _rest("GET", "/api/v1/channels/{id}/messages", _MEMBERS_ONLY),
    _rest("GET", "/api/v1/channels/{id}/presence", _MEMBERS_ONLY),
    _rest("PUT", "/api/v1/channels/{id}/read", _MEMBERS_ONLY, lambda _: {"seq": 0}),
    _rest("GET", "/api/v1/me/channels", _signed_in("200")),
    _rest("GET", "/api/v1/search?q=hi", _signed_in("200"), label="/api/v1/search (q)"),
    _rest(
        "GET",
        "/api/v1/search?q=hi&channel_id={id}",
        _MEMBERS_ONLY,
        label="/api/v1/search (q, channel_id)",
    ),
    _rest(
        "GET",
        "/api/v1/search?q=hi&channel_id={id}",
        (
            "400 missing_token",
            "404 channel_not_found",
            "200",
            "200",
            "404 channel_not_found",
            "200",
            "200",
            "404 channel_not_found",
        ),
        label="/api/v1/search (q, channel_id, private)",
        private=True,
    ),
    _rest("GET", "/app", _same("200"), label="/app (redirected to /app/)"),
    _rest("GET", "/app/", _same("200")),
    _rest("GET", "/app/style.css", _same("200")),
    _rest("GET", "/app/js/main.js", _same("200"), label="/app/js/{module}"),
    _rest(
        "PUT",
        "/api/v1/channels/{id}/members/{target}/role",
        _OWNER,
        lambda _: {"role": "moderator"},
        label="/api/v1/channels/{id}/members/{user_id}/role",
    ),
    _rest("POST", "/api/v1/channels/{id}/transfer-ownership", _OWNER, _target),
    _rest("POST", "/api/v1/channels/{id}/kick", _MODERATORS, _target),
    _rest("GET", "/api/v1/channels/{id}/bans", _MODERATORS),
    _rest("POST", "/api/v1/channels/{id}/bans", _MODERATORS, _target),
    _rest(
        "DELETE",
        "/api/v1/channels/{id}/bans/{banned}",
        _MODERATORS,
        label="/api/v1/channels/{id}/bans/{user_id}",
    ),
    _rest("GET", "/api/v1/channels/{id}/mutes", _MODERATORS),
    _rest(
        "POST",
        "/api/v1/channels/{id}/mutes",
        _MODERATORS,
        lambda c: {"user_id": c.user(_TARGET), "duration_seconds": 60},
    ),
    _rest(
        "DELETE",
        "/api/v1/channels/{id}/mutes/{muted}",
        _MODERATORS,
        label="/api/v1/channels/{id}/mutes/{user_id}",
    ),
    _rest(
        "POST",
        "/api/v1/channels/{id}/invitations",
        tuple(o.replace("200", "201") for o in _PRIVATE_MODERATORS),
        lambda c: {"user_id": c.user(_OUTSIDER)},
        label="/api/v1/channels/{id}/invitations (private)",
        private=True,
    ),
    _rest(
        "GET",
        "/api/v1/channels/{id}/invitations",
        _PRIVATE_MODERATORS,
        label="/api/v1/channels/{id}/invitations (private)",
        private=True,
    ),
    _rest(
        "DELETE",
        "/api/v1/channels/{id}/invitations/{outsider}",
        _PRIVATE_MODERATORS,
        label="/api/v1/channels/{id}/invitations/{user_id} (private)",
        private=True,
        setup=_invite_outsider,
    ),
    _rest("GET", "/api/v1/me/invitations", _signed_in("200")),
    _rest(
        "POST",
        "/api/v1/me/invitations/{id}/accept",
        _JOINS,
        label="/api/v1/me/invitations/{channel_id}/accept (private)",
        private=True,
        setup=_invite_caller,
    ),
    _rest(
        "POST",
        "/api/v1/me/invitations/{id}/decline",
        (
            "400 missing_token",
            "200",
            "404 invitation_not_found",
            "404 invitation_not_found",
            "200",
            "404 invitation_not_found",
            "404 invitation_not_found",
            "200",
        ),
        label="/api/v1/me/invitations/{channel_id}/decline (private)",
        private=True,
        setup=_invite_caller,
    ),
    _rest("POST", "/api/v1/dm", _signed_in("200"), _target),
    _rest(
        "PATCH",
        "/api/v1/channels/{id}/messages/{own}",
        _CHANGE_OWN,
        lambda c: _EDIT,
        label="/api/v1/channels/{id}/messages/{message_id} (the caller's)",
        setup=_messages,
    ),
    _rest(
        "DELETE",
        "/api/v1/channels/{id}/messages/{message}",
        _DELETE_OTHERS,
        label="/api/v1/channels/{id}/messages/{message_id} (another's)",
        setup=_messages,
    ),
    _rest(
        "POST",
        "/api/v1/channels/{id}/messages/{message}/reactions",
        _CHANGE_OWN,
        lambda c: _REACT,
        label="/api/v1/channels/{id}/messages/{message_id}/reactions",
        setup=_messages,
    ),
    _rest(
        "GET",
        "/api/v1/channels/{id}/messages/{message}/replies",
        _MEMBERS_ONLY,
        label="/api/v1/channels/{id}/messages/{message_id}/replies",
        setup=_messages,
    ),
    Row("WS /api/v1/chat/{channel_id}: admission", _chat("open", "open"), chat_socket(send=False)),
    Row(
        "WS /api/v1/chat/{channel_id}: a message",
        _chat("ack", "error muted"),
        chat_socket(send=True),
    ),
    Row("WS /api/v1/ws: admission", ("4400 missing_token", *("open",) * 7), mux(None)),
    Row(
        "WS /api/v1/ws: subscribe",
        _mux("subscribed", "subscribed", "error not_a_member"),
        mux("subscribe"),
    ),
    Row("WS /api/v1/ws: send", _mux("ack", "error muted", "error not_subscribed"), mux("send")),
    Row("WS /api/v1/ws: typing", _mux("ok", "error muted", "error not_subscribed"), mux("typing")),
    Row("WS /api/v1/ws: read", _mux("ok", "ok", "error not_a_member"), mux("read")),
    Row(
        "WS /api/v1/ws: edit (the caller's message)",
        _mux("ack", "error muted", "error not_subscribed"),
        mux("edit"),
        setup=_messages,
    ),
    Row(
        "WS /api/v1/ws: delete (another's message)",
        tuple(
            "ack" if kind in ("moderator", "owner") else outcome
            for kind, outcome in zip(
                CALLERS,
                _mux("error not_your_message", "error not_your_message", "error not_subscribed"),
                strict=True,
            )
        ),
        mux("delete"),
        setup=_messages,
    ),
    Row(
        "WS /api/v1/ws: react",
        _mux("ack", "error muted", "error not_subscribed"),
        mux("react"),
        setup=_messages,
    ),
    Row(
        "WS /api/v1/ws: unsubscribe",
        _mux("unsubscribed", "unsubscribed", "unsubscribed"),
        mux("unsubscribe"),
    ),
)


# --- running a row --------------------------------------------------------------


async def _accounts(client: TestClient[Any, Any], pool: asyncpg.Pool) -> dict[str, Account]:
    """One account per caller kind (but anonymous), the target and the outsider: one
    signed up through the API, the rest with its password hash (hashing is slow)."""
    first = await signup(client, "member")
    password = await pool.fetchval("SELECT password FROM users WHERE id = $1", first.user_id)
    settings = client.server.app[SETTINGS]
    accounts = {"member": first}
    for kind in (*CALLERS[1:], _TARGET, _OUTSIDER):
        if kind in accounts:
            continue
        user_id = await pool.fetchval(
            """INSERT INTO users (name, username, email, password, role)
               VALUES ($1, $1, $1 || '@example.com', $2, $3) RETURNING id""",
            kind,
            password,
            "admin" if kind == "admin" else "user",
        )
        accounts[kind] = Account(user_id, kind, issue_token(settings, user_id, kind, 0))
    return accounts


async def _channel_for(
    pool: asyncpg.Pool, accounts: dict[str, Account], n: int, private: bool
) -> int:
    """A fresh channel: owner, moderator, member, muted and target members; banned banned."""
    async with pool.acquire() as conn, conn.transaction():
        channel_id: int = await conn.fetchval(
            "INSERT INTO channels (name, kind) VALUES ($1, $2) RETURNING id",
            f"matrix {n}",
            "private" if private else "public",
        )
        for kind, role in (
            ("owner", "owner"),
            ("moderator", "moderator"),
            ("member", "member"),
            ("muted", "member"),
            (_TARGET, "member"),
        ):
            await conn.execute(
                "INSERT INTO memberships (channel_id, user_id, role) VALUES ($1, $2, $3)",
                channel_id,
                accounts[kind].user_id,
                role,
            )
        await conn.execute(
            "INSERT INTO channel_bans (channel_id, user_id) VALUES ($1, $2)",
            channel_id,
            accounts["banned"].user_id,
        )
        await conn.execute(
            """INSERT INTO channel_mutes (channel_id, user_id, until)
               VALUES ($1, $2, now() + interval '1 hour')""",
            channel_id,
            accounts["muted"].user_id,
        )
    return channel_id


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
async def test_row(row: Row, make_gateway: MakeGateway, pg_pool: asyncpg.Pool) -> None:
    client = await make_gateway()
    accounts = await _accounts(client, pg_pool)
    got: dict[str, str] = {}
    for n, kind in enumerate(CALLERS):
        channel_id = await _channel_for(pg_pool, accounts, n, row.private)
        caller = None if kind == "anonymous" else accounts[kind]
        case = Case(client, pg_pool, channel_id, caller, kind, accounts)
        if row.setup is not None:
            await row.setup(case)
        got[kind] = await row.ask(case)
    assert got == row.expected()


def _route_of(name: str) -> tuple[str, str]:
    """(method, path) of a row's name: `WS /path: what` is a GET upgrade."""
    method, rest_of_name = name.split(" ", 1)
    path = re.split(r"[: ]", rest_of_name, maxsplit=1)[0]
    return ("GET" if method == "WS" else method), path


def test_every_route_of_the_gateway_is_a_row(make_settings: Callable[..., Any]) -> None:
    """A route added without its row fails here: the matrix covers the whole API."""
    app = create_app(make_settings())
    routes = {
        (route.method, re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route.resource.canonical))
        for route in app.router.routes()
        if route.method not in ("HEAD", "OPTIONS") and route.resource is not None
    }
    assert routes == {_route_of(row.name) for row in ROWS}


# --- the README -----------------------------------------------------------------


def render_table() -> str:
    """The README section's table, from `ROWS`."""
    lines = [
        "| Route or frame | " + " | ".join(CALLERS) + " |",
        "| --- |" + " --- |" * len(CALLERS),
    ]
    for row in ROWS:
        lines.append(f"| `{row.name}` | " + " | ".join(row.outcomes) + " |")
    return "\n".join(lines) + "\n"


_TABLE = re.compile(rf"(^### {SECTION}\n.*?\n)(\| Route or frame .*?\n)(?!\|)", re.S | re.M)


def test_the_readme_shows_this_table() -> None:
    match = _TABLE.search(README.read_text(encoding="utf-8"))
    assert match is not None, f"README.md has no '{SECTION}' table"
    assert match.group(2) == render_table(), (
        "README.md's authorization matrix differs from the test's: run "
        "python -m tests.gateway.test_authorization_matrix"
    )


def _rewrite_readme() -> None:
    text = README.read_text(encoding="utf-8")
    match = _TABLE.search(text)
    if match is None:
        sys.exit(f"README.md has no '{SECTION}' table to replace")
    README.write_text(
        text[: match.start(2)] + render_table() + text[match.end(2) :], encoding="utf-8"
    )


if __name__ == "__main__":
    _rewrite_readme()
