"""The chat socket: `WS /api/v1/chat/{channel_id}?token=<jwt>[&since=<seq>]` (or the
token as a subprotocol, or `?ticket=`: see `gateway.auth`).

Step one of the send path: admit the socket (Origin, token, channel,
membership, the user's socket cap), subscribe it and read the channel's head
before completing the upgrade, then read frames, check each against the
socket's message budget (`gateway.message_budget`: a flood is refused before
it reaches Redis) and validate it, and hand valid ones to
`Broker.start_send`. A refused socket gets the Go server's error frame with a
`code` and a 44xx close code a browser can read; a bad frame gets an error
frame and the socket stays open. Outbound frames go through the connection,
which first replays everything after `since` (nothing without it).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from gateway.api.common import MAX_ID, IntParam, path_id
from gateway.api.docs import Auth, documented
from gateway.app_keys import (
    BACKLOG,
    BROKER,
    HUB,
    KEYS,
    MESSAGE_LIMITS,
    METRICS,
    PG_POOL,
    PRESENCE,
    READINESS,
    REDIS,
    SETTINGS,
    SOCKETS,
)
from gateway.auth import check_generation, socket_claims, socket_protocol
from gateway.broker import Broker, PendingSend, SendResult, SendRoute
from gateway.connection import Connection
from gateway.message_budget import MessageBudget
from gateway.websocket import Sockets, WebSocket, check_upgrade, text_frame
from shared.db.channels import chat_access
from shared.db.pool import POSTGRES_OUTAGE_ERRORS
from shared.db.records import User
from shared.errors import (
    AppError,
    ChannelNotFoundError,
    CloseCode,
    DrainingError,
    InvalidBodyError,
    InvalidJsonError,
    InvalidParameterError,
    InvalidTokenError,
    MessageTooLargeError,
    NotAMemberError,
    OriginNotAllowedError,
    RateLimitedError,
    SinceAheadError,
    UnavailableError,
)
from shared.log import request_id_var
from shared.settings import Settings
from shared.wire import (
    CHAT_FRAME,
    ack_frame,
    author_json,
    error_frame,
    frame_body,
    message_tail,
    validation_details,
)

log = logging.getLogger(__name__)

SINCE = IntParam("since", 0, MAX_ID, None, "Replay every message after this seq first.")
# Frames a socket may have read but not yet sent before it stops reading.
_INBOX_LIMIT = 64


@dataclass(frozen=True, slots=True)
class _Session:
    user_id: int
    channel_id: int
    token_generation: int
    author: bytes  # the `user` object of every frame this socket sends, encoded once
    since: int | None


@documented(
    "The chat socket (WebSocket)",
    description="An RFC 6455 upgrade; a request that is not one is answered 422 "
    "`invalid_parameter`. The credential is the token after `bearer` among the offered "
    "subprotocols (`Sec-WebSocket-Protocol: bearer, <jwt>`), `?ticket=` or `?token=`. Admission "
    "(Origin, credential, channel, membership) is decided after the upgrade: a refused socket "
    "gets an error frame and a close code. Frames, resume with `since` and close codes are "
    "described in the README.",
    status=101,
    query=(SINCE,),
    errors=(InvalidParameterError,),
    auth=Auth.QUERY,
)
async def chat_socket(request: web.Request) -> web.StreamResponse:
    check_upgrade(request)
    app = request.app
    settings, hub, backlog, sockets = app[SETTINGS], app[HUB], app[BACKLOG], app[SOCKETS]
    # Admission and the subscription complete before the 101 answer, so once a
    # client sees its socket open, everything published to the channel reaches it.
    # Refusals still upgrade first: a browser can read a close code, not a 403.
    try:
        session = await _admit(request, settings)
        connection = Connection(
            user_id=session.user_id,
            channel_id=session.channel_id,
            token_generation=session.token_generation,
            queue_size=settings.ws_send_queue_size,
            replay=backlog,
            metrics=app[METRICS],
            resume_wait_seconds=settings.ws_resume_wait_seconds,
            replay_stall_seconds=settings.ws_replay_stall_seconds,
        )
        await hub.join(connection)
    except AppError as exc:
        return _refuse(request, sockets, exc)
    try:
        # Read after the subscription: every later message reaches the connection live.
        head = await backlog.head(session.channel_id)
    except AppError as exc:
        await hub.leave(connection)
        return _refuse(request, sockets, exc)
    chat = _ChatSocket(session, connection, app)
    try:
        websocket = sockets.upgrade(request, chat, subprotocol=socket_protocol(request))
    except ConnectionResetError:
        await hub.leave(connection)
        return _handed_over()
    chat.websocket = websocket
    since = head if session.since is None else session.since
    if since > head:
        ahead = SinceAheadError(details=[{"since": since, "last_seq": head}])
        connection.enqueue(error_frame(ahead.code, ahead.message, ahead.details))
        since = head
    connection.start(websocket, since, head=head)
    # After the socket is live: presence is the user's, whichever socket they use
    # (this one receives no presence frames). It never raises.
    await app[PRESENCE].socket_opened(session.channel_id, session.user_id)
    return _handed_over()


def _handed_over() -> web.StreamResponse:
    # What the handler returns once the connection belongs to a `WebSocket`:
    # aiohttp no longer has the transport, so it cannot write this, and drops it.
    return web.Response(status=HTTPStatus.SWITCHING_PROTOCOLS)


def _refuse(request: web.Request, sockets: Sockets, exc: AppError) -> web.StreamResponse:
    try:
        websocket = sockets.upgrade(request, None, subprotocol=socket_protocol(request))
    except ConnectionResetError:
        return _handed_over()
    frame = text_frame(error_frame(exc.code, exc.message))
    websocket.close(exc.close_code, exc.message, last_frame=frame)
    return _handed_over()


class _ChatSocket:
    """The inbound half of one chat socket: its frames are sent one after another, in order.

    Frames are read without waiting for the sends before them; past
    `_INBOX_LIMIT` unsent frames the socket stops reading until they are sent.
    A send whose script call could leave at once, and whose reply settles it,
    is finished in the reply's callback: no task per message. Anything else (no
    Redis connection yet, a retry, a counter to seed) goes to a task, and the
    frames after it wait for that task.
    """

    __slots__ = (
        "_app",
        "_budget",
        "_connection",
        "_context",
        "_in_flight",
        "_inbox",
        "_request_id",
        "_route",
        "_sender",
        "_session",
        "websocket",
    )

    def __init__(self, session: _Session, connection: Connection, app: web.Application) -> None:
        self._session = session
        self._connection = connection
        self._app = app
        self._request_id = request_id_var.get()
        # What sending needs, built at the first frame: most sockets mostly listen.
        self._route: SendRoute | None = None
        self._context: contextvars.Context | None = None
        self._budget: MessageBudget | None = None
        self._inbox: list[bytes] = []
        # The first script call out, the send it belongs to, and its start time.
        self._in_flight: tuple[asyncio.Future[Any], PendingSend, float] | None = None
        # Runs only while a send needs awaiting: an idle socket holds no task.
        self._sender: asyncio.Task[None] | None = None
        self.websocket: WebSocket | None = None

    def on_message(self, payload: bytes, binary: bool) -> None:
        if binary:
            # Chat frames are JSON text; a client sending binary is broken, not wrong once.
            self._connection.close(CloseCode.UNSUPPORTED_DATA, "binary messages are not accepted")
            return
        self._inbox.append(payload)
        if self._sender is None and self._in_flight is None:
            (self._context or self._start_sending()).run(self._send_next)
        elif len(self._inbox) == _INBOX_LIMIT and self.websocket is not None:
            self.websocket.pause_reading()

    async def on_closed(self) -> None:
        request_id_var.set(self._request_id)
        # Frames read before the close are still sent (and durable); their acks are
        # dropped. Not so for a user who lost access: `_send_next` drops them.
        while self._sender is not None or self._in_flight is not None:
            if self._sender is not None:
                await asyncio.wait({self._sender})
            elif self._in_flight is not None:
                await asyncio.wait({self._in_flight[0]})
        await self._connection.stop()
        await self._app[HUB].leave(self._connection)
        await self._app[PRESENCE].socket_closed(self._session.channel_id, self._session.user_id)

    def _start_sending(self) -> contextvars.Context:
        self._route = self._app[BROKER].route(self._session.channel_id, self._session.user_id)
        limits = self._app[MESSAGE_LIMITS]
        if limits is not None:
            self._budget = MessageBudget(limits, time.perf_counter())
        # Frames arrive in transport callbacks, outside the upgrade request's
        # context: what handles them runs in a context of the socket's own,
        # which carries the request's id, so it logs under that id.
        context = self._context = contextvars.copy_context()
        context.run(request_id_var.set, self._request_id)
        return context

    def _send_next(self) -> None:
        """Send the inbox's frames in order, as far as it goes without waiting."""
        if self._connection.revoked:
            # The user lost access: what the socket read before its close is not sent.
            self._drop_inbox()
            return
        broker, route = self._app[BROKER], self._route
        assert route is not None  # built before the first frame is sent
        while self._inbox and self._sender is None and self._in_flight is None:
            payload = self._inbox.pop(0)
            if len(self._inbox) == _INBOX_LIMIT - 1 and self.websocket is not None:
                self.websocket.resume_reading()
            started = time.perf_counter()
            budget = self._budget
            if budget is not None and not budget.spend(started):
                self._over_budget(budget, started)  # refused here: Redis never sees it
                continue
            try:
                pending = _start_send(
                    payload, route, self._session.author, broker, self._app[SETTINGS]
                )
            except AppError as exc:
                self._rejected(exc)
                continue
            if pending.first is None:
                self._send_in_task(pending, started)
                return
            self._in_flight = (pending.first, pending, started)
            pending.first.add_done_callback(self._on_first_reply, context=self._context)

    def _on_first_reply(self, _: asyncio.Future[object]) -> None:
        assert self._in_flight is not None  # the callback of the send in flight
        _, pending, started = self._in_flight
        self._in_flight = None
        try:
            result = self._app[BROKER].result_now(pending)
        except AppError as exc:
            self._rejected(exc)
        else:
            if result is None:
                self._send_in_task(pending, started)
                return
            self._accepted(pending, result, started)
        self._send_next()

    def _send_in_task(self, pending: PendingSend, started: float) -> None:
        """Finish `pending` in a task; the frames after it wait for that task."""
        self._sender = asyncio.create_task(self._send(pending, started), name="ws-sender")

    async def _send(self, pending: PendingSend, started: float) -> None:
        try:
            result = await self._app[BROKER].send(pending)
        except AppError as exc:
            self._rejected(exc)
        else:
            self._accepted(pending, result, started)
        finally:
            self._sender = None
        self._send_next()

    def _accepted(self, pending: PendingSend, result: SendResult, started: float) -> None:
        metrics = self._app[METRICS]
        metrics.send_seconds.observe(time.perf_counter() - started)
        if result.duplicate:
            metrics.duplicate_sends.inc()
        else:
            metrics.messages_in.inc()
        self._connection.enqueue(
            ack_frame(result.message_id, result.seq, pending.client_id, duplicate=result.duplicate)
        )

    def _over_budget(self, budget: MessageBudget, now: float) -> None:
        retry_after, close = budget.refuse(now)
        exc = RateLimitedError("Too many messages, slow down", retry_after=retry_after)
        if not close:
            self._rejected(exc)
            return
        self._drop_inbox()  # a flood's frames already read are dropped too
        metrics = self._app[METRICS]
        metrics.send_rejections.inc(exc.code)
        metrics.rate_limit_closes.inc()
        log.info("closing a socket that keeps sending over its rate limit")
        frame = error_frame(exc.code, exc.message, exc.details, exc.retry_after)
        self._connection.close(exc.close_code, "too many messages", last_frame=frame)

    def _drop_inbox(self) -> None:
        self._inbox.clear()
        if self.websocket is not None:
            # A full inbox paused reading; the closing handshake needs the peer's close frame.
            self.websocket.resume_reading()

    def _rejected(self, exc: AppError) -> None:
        self._app[METRICS].send_rejections.inc(exc.code)
        self._connection.enqueue(error_frame(exc.code, exc.message, exc.details, exc.retry_after))


async def _admit(request: web.Request, settings: Settings) -> _Session:
    if request.app[READINESS].draining:
        raise DrainingError()
    origin = request.headers.get("Origin")
    # Browsers always send Origin; native clients (the Go server's included) may not.
    if origin is not None and not settings.origin_allowed(origin):
        raise OriginNotAllowedError()
    channel_id = path_id(request, "channel_id")
    since = SINCE.query(request)
    claims = await socket_claims(request, settings, request.app[REDIS], request.app[KEYS])
    try:
        access = await chat_access(request.app[PG_POOL], channel_id, claims.user_id)
    except POSTGRES_OUTAGE_ERRORS as exc:
        raise UnavailableError() from exc
    # Refuses a revoked token, and one signed for a user that no longer exists.
    check_generation(claims, access.token_generation)
    if access.user is None:
        raise InvalidTokenError()
    if not access.channel_exists:
        raise ChannelNotFoundError()
    if access.role is None:
        raise NotAMemberError()
    return _Session(
        user_id=claims.user_id,
        channel_id=channel_id,
        token_generation=claims.generation,
        author=_author(access.user),
        since=since,
    )


def _author(user: User) -> bytes:
    encoded = orjson.dumps(author_json(user.id, user.name, user.username, user.avatar_url))
    # Kept for the socket's life: orjson's result holds a 4 KB allocation behind
    # even a short value, so keep an exact-size copy instead.
    return bytes(bytearray(encoded))


def _start_send(
    payload: bytes, route: SendRoute, author: bytes, broker: Broker, settings: Settings
) -> PendingSend:
    """Validate one inbound frame and start making it durable; raises AppError if invalid."""
    if len(payload) > settings.ws_max_body_bytes:
        raise MessageTooLargeError(f"Message exceeds {settings.ws_max_body_bytes} bytes")
    try:
        frame = CHAT_FRAME.validate_json(payload)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            raise InvalidJsonError() from None
        raise InvalidBodyError(details=validation_details(exc)) from None
    body = frame_body(frame)
    return broker.start_send(
        route,
        client_id=frame.client_id,
        body=body,
        tail=message_tail(
            user_id=route.user_id,
            channel_id=route.channel_id,
            body=body,
            client_id=frame.client_id,
            author=author,
        ),
    )
