"""The chat socket: `WS /api/v1/chat/{channel_id}?token=<jwt>[&since=<seq>]`.

Step one of the send path: admit the socket (Origin, token, channel,
membership), subscribe it and read the channel's head before completing the
upgrade, then read frames, validate each, and hand valid ones to
`Broker.send`. A refused socket gets the Go server's error frame with a
`code` and a 44xx close code a browser can read; a bad frame gets an error
frame and the socket stays open. Outbound frames go through the connection,
which first replays everything after `since` (nothing without it).
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass

import orjson
from aiohttp import WSMsgType, web
from pydantic import ValidationError

from gateway.api.common import path_id, query_int
from gateway.app_keys import BACKLOG, BROKER, HUB, METRICS, PG_POOL, READINESS, SETTINGS
from gateway.auth import verify_token
from gateway.broker import Broker
from gateway.connection import Connection
from shared.db.channels import chat_access
from shared.db.pool import POSTGRES_OUTAGE_ERRORS
from shared.db.records import User
from shared.errors import (
    AppError,
    ChannelNotFoundError,
    DrainingError,
    InvalidBodyError,
    InvalidJsonError,
    InvalidParameterError,
    InvalidTokenError,
    MessageTooLargeError,
    MissingTokenError,
    NotAMemberError,
    OriginNotAllowedError,
    SinceAheadError,
    UnavailableError,
)
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

# Sequence numbers stay within what JavaScript clients read exactly.
_MAX_SEQ = 2**53


@dataclass(frozen=True, slots=True)
class _Session:
    user_id: int
    channel_id: int
    author: bytes  # the `user` object of every frame this socket sends, encoded once
    since: int | None


async def chat_socket(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    ws = web.WebSocketResponse(
        max_msg_size=settings.ws_max_frame_bytes,
        heartbeat=settings.ws_heartbeat_seconds,
        decode_text=False,
        # Compressing costs CPU per frame per recipient, and the frames are
        # written pre-encoded by the connection (see connection.py).
        compress=False,
    )
    if not ws.can_prepare(request).ok:
        raise InvalidParameterError("WebSocket upgrade required")
    # Admission and the subscription complete before the 101 answer, so once a
    # client sees its socket open, everything published to the channel reaches it.
    # Refusals still upgrade first: a browser can read a close code, not a 403.
    hub = request.app[HUB]
    backlog = request.app[BACKLOG]
    try:
        session = await _admit(request, settings)
        connection = Connection(
            ws,
            request.transport,
            user_id=session.user_id,
            channel_id=session.channel_id,
            queue_size=settings.ws_send_queue_size,
            replay=backlog,
            metrics=request.app[METRICS],
            resume_wait_seconds=settings.ws_resume_wait_seconds,
        )
        await hub.join(connection)
    except AppError as exc:
        await ws.prepare(request)
        await _refuse(ws, exc)
        return ws
    try:
        # Read after the subscription: every later message reaches the connection live.
        head = await backlog.head(session.channel_id)
    except AppError as exc:
        await hub.leave(connection)
        await ws.prepare(request)
        await _refuse(ws, exc)
        return ws
    try:
        stream = await ws.prepare(request)
        _bound_send_buffer(request, settings.ws_socket_send_buffer_bytes)
        since = head if session.since is None else session.since
        if since > head:
            ahead = SinceAheadError(details=[{"since": since, "last_seq": head}])
            connection.enqueue(error_frame(ahead.code, ahead.message, ahead.details))
            since = head
        connection.start(stream, since, head=head)
        try:
            await _read_frames(ws, connection, session, request.app)
        finally:
            await connection.stop()
    finally:
        await hub.leave(connection)
    return ws


def _bound_send_buffer(request: web.Request, size: int) -> None:
    # Kernel autotuning lets a socket buffer megabytes for a client that stopped
    # reading, which hides it from the bounded queue and holds that memory.
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if size and sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


async def _admit(request: web.Request, settings: Settings) -> _Session:
    if request.app[READINESS].draining:
        raise DrainingError()
    origin = request.headers.get("Origin")
    # Browsers always send Origin; native clients (the Go server's included) may not.
    if origin is not None and not settings.origin_allowed(origin):
        raise OriginNotAllowedError()
    channel_id = path_id(request, "channel_id")
    since = query_int(request, "since", default=None, low=0, high=_MAX_SEQ)
    token = request.query.get("token", "").strip()
    if not token:
        raise MissingTokenError()
    claims = verify_token(settings, token)
    try:
        access = await chat_access(request.app[PG_POOL], channel_id, claims.user_id)
    except POSTGRES_OUTAGE_ERRORS as exc:
        raise UnavailableError() from exc
    if access.user is None:
        raise InvalidTokenError()  # signed for a user that no longer exists
    if not access.channel_exists:
        raise ChannelNotFoundError()
    if access.role is None:
        raise NotAMemberError()
    return _Session(
        user_id=claims.user_id, channel_id=channel_id, author=_author(access.user), since=since
    )


def _author(user: User) -> bytes:
    encoded = orjson.dumps(author_json(user.id, user.name, user.username, user.avatar_url))
    # Kept for the socket's life: orjson's result holds a 4 KB allocation behind
    # even a short value, so keep an exact-size copy instead.
    return bytes(bytearray(encoded))


async def _refuse(ws: web.WebSocketResponse, exc: AppError) -> None:
    await ws.send_frame(error_frame(exc.code, exc.message), WSMsgType.TEXT)
    await ws.close(code=exc.close_code, message=exc.message.encode())


async def _read_frames(
    ws: web.WebSocketResponse,
    connection: Connection,
    session: _Session,
    app: web.Application,
) -> None:
    broker, settings, metrics = app[BROKER], app[SETTINGS], app[METRICS]
    async for message in ws:
        if message.type is WSMsgType.TEXT:
            payload: bytes = message.data
        elif message.type is WSMsgType.BINARY:
            payload = message.data
        else:
            break  # CLOSE / ERROR: aiohttp has already answered the peer
        started = time.perf_counter()
        try:
            duplicate = await _send(payload, connection, session, broker, settings)
        except AppError as exc:
            metrics.send_rejections.inc(exc.code)
            connection.enqueue(error_frame(exc.code, exc.message, exc.details, exc.retry_after))
        else:
            metrics.send_seconds.observe(time.perf_counter() - started)
            if duplicate:
                metrics.duplicate_sends.inc()
            else:
                metrics.messages_in.inc()


async def _send(
    payload: bytes,
    connection: Connection,
    session: _Session,
    broker: Broker,
    settings: Settings,
) -> bool:
    """Validate one inbound frame, make it durable, and acknowledge it; True for a duplicate."""
    if len(payload) > settings.ws_max_body_bytes:
        raise MessageTooLargeError(f"Message exceeds {settings.ws_max_body_bytes} bytes")
    try:
        frame = CHAT_FRAME.validate_json(payload)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            raise InvalidJsonError() from None
        raise InvalidBodyError(details=validation_details(exc)) from None
    body = orjson.dumps(frame_body(frame))
    result = await broker.send(
        channel_id=session.channel_id,
        user_id=session.user_id,
        client_id=frame.client_id,
        body=body,
        tail=message_tail(
            user_id=session.user_id,
            channel_id=session.channel_id,
            body=body,
            client_id=frame.client_id,
            author=session.author,
        ),
    )
    connection.enqueue(
        ack_frame(result.message_id, result.seq, frame.client_id, duplicate=result.duplicate)
    )
    return result.duplicate
