"""The chat socket: `WS /api/v1/chat/{channel_id}?token=<jwt>[&since=<seq>]` (or the
token as a subprotocol, or `?ticket=`: see `gateway.auth`).

Step one of the send path: admit the socket (Origin, token, channel,
membership, the user's socket cap), subscribe it and read the channel's head
before completing the upgrade, then read frames, check each against the
socket's message budget (`gateway.message_budget`: a flood is refused before
it reaches Redis) and validate it, and hand valid ones to
`Sender.start` (`gateway.inbound`) unless the user is muted in the channel
(`gateway.mutes`: checked in memory). A refused socket gets the Go server's
error frame with a `code` and a 44xx close code a browser can read; a bad
frame gets an error frame and the socket stays open. Outbound frames go through the connection,
which first replays everything after `since` (nothing without it).

The admission steps (`admit_user`, `channel_access`) and the upgrade helpers
are the multiplexed socket's too (`gateway.mux`); the inbound send queue is
`gateway.inbound`'s, shared by both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus

import orjson
from aiohttp import web

from gateway.api.common import MAX_ID, IntParam, path_id
from gateway.api.docs import Auth, documented
from gateway.app_keys import (
    BACKLOG,
    HUB,
    KEYS,
    METRICS,
    PG_POOL,
    PRESENCE,
    READINESS,
    REDIS,
    SENDER,
    SETTINGS,
    SOCKETS,
    TOPICS,
)
from gateway.auth import TokenClaims, check_generation, socket_claims, socket_protocol
from gateway.connection import Connection
from gateway.inbound import Inbound, Step, check_size
from gateway.message_budget import MessageBudget
from gateway.message_changes import check_reply_to
from gateway.mutes import check_not_muted, epoch_of
from gateway.outbox import Outbox
from gateway.sender import SendRoute
from gateway.sockets import Sockets, check_upgrade
from gateway.websocket import Listener, WebSocket, text_frame
from shared.db.channels import chat_access
from shared.db.pool import POSTGRES_OUTAGE_ERRORS
from shared.db.records import User
from shared.errors import (
    AppError,
    ChannelNotFoundError,
    DrainingError,
    InvalidParameterError,
    InvalidTokenError,
    NotAMemberError,
    OriginNotAllowedError,
    SinceAheadError,
    UnavailableError,
)
from shared.settings import Settings
from shared.wire import CHAT_FRAME, FileFrame, TextFrame, author_json, error_frame, parse_json

log = logging.getLogger(__name__)

SINCE = IntParam("since", 0, MAX_ID, None, "Replay every message after this seq first.")


@dataclass(frozen=True, slots=True)
class _Session:
    user_id: int
    channel_id: int
    token_generation: int
    author: bytes  # the `user` object of every frame this socket sends, encoded once
    since: int | None
    muted_until: float


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
        out = new_outbox(app, session.user_id)
        hub.open_socket(out)
    except AppError as exc:
        return refuse(request, sockets, exc)
    connection = new_connection(app, out, session.channel_id, session.token_generation)
    connection.muted_until = session.muted_until
    try:
        await hub.join(connection)
        # Read after the subscription: every later message reaches the connection live.
        head = await backlog.head(session.channel_id)
        head = app[TOPICS].known_head(session.channel_id, head)
    except AppError as exc:
        await hub.leave(connection)
        hub.close_socket(out)
        return refuse(request, sockets, exc)
    chat = _ChatSocket(session, connection, app)
    websocket = upgrade(request, chat)
    if websocket is None:
        await hub.leave(connection)
        hub.close_socket(out)
        return handed_over()
    since = head if session.since is None else session.since
    if since > head:
        ahead = SinceAheadError(details=[{"since": since, "last_seq": head}])
        out.enqueue(error_frame(ahead.code, ahead.message, ahead.details))
        since = head
    out.attach(websocket)
    connection.start(since, head=head)
    # After the socket is live: presence is the user's, whichever socket they use
    # (this one receives no presence frames). It never raises.
    await app[PRESENCE].socket_opened(session.channel_id, session.user_id)
    return handed_over()


def new_outbox(app: web.Application, user_id: int) -> Outbox:
    return Outbox(
        user_id=user_id, queue_size=app[SETTINGS].ws_send_queue_size, metrics=app[METRICS]
    )


def new_connection(
    app: web.Application,
    out: Outbox,
    channel_id: int,
    token_generation: int,
    kind: type[Connection] = Connection,
    *,
    wants_events: bool = False,
) -> Connection:
    settings = app[SETTINGS]
    return kind(
        out,
        channel_id=channel_id,
        token_generation=token_generation,
        replay=app[BACKLOG],
        metrics=app[METRICS],
        resume_wait_seconds=settings.ws_resume_wait_seconds,
        replay_stall_seconds=settings.ws_replay_stall_seconds,
        wants_events=wants_events,
    )


def upgrade(request: web.Request, listener: Inbound) -> WebSocket | None:
    """Complete the upgrade for an admitted socket; None if the peer is gone already."""
    try:
        websocket = request.app[SOCKETS].upgrade(
            request, listener, subprotocol=socket_protocol(request)
        )
    except ConnectionResetError:
        return None
    listener.websocket = websocket
    return websocket


def handed_over() -> web.StreamResponse:
    # What the handler returns once the connection belongs to a `WebSocket`:
    # aiohttp no longer has the transport, so it cannot write this, and drops it.
    return web.Response(status=HTTPStatus.SWITCHING_PROTOCOLS)


def refuse(request: web.Request, sockets: Sockets, exc: AppError) -> web.StreamResponse:
    listener: Listener | None = None
    try:
        websocket = sockets.upgrade(request, listener, subprotocol=socket_protocol(request))
    except ConnectionResetError:
        return handed_over()
    frame = text_frame(error_frame(exc.code, exc.message))
    websocket.close(exc.close_code, exc.message, last_frame=frame)
    return handed_over()


class _ChatSocket(Inbound):
    """The chat socket's inbound half: every frame is a send to its one channel."""

    __slots__ = ("_connection", "_message_budget", "_route", "_session")

    def __init__(self, session: _Session, connection: Connection, app: web.Application) -> None:
        super().__init__(connection.out, session.author, app)
        self._session = session
        self._connection = connection
        # What sending needs, built at the first frame: most sockets mostly listen.
        self._route: SendRoute | None = None
        self._message_budget: MessageBudget | None = None

    def _start(self, payload: bytes, started: float) -> Step:
        route = self._route
        if route is None:
            route = self._route = self.app[SENDER].route(
                self._session.channel_id, self._session.user_id
            )
            self._message_budget = self._budget()
        if not self._spend(self._message_budget, started, None):
            return None
        check_size(payload, self.app)
        frame = parse_json(CHAT_FRAME, payload)
        check_not_muted(self._connection)
        if frame.reply_to is not None:
            return self._reply(route, frame, started)
        return self._begin_send(route, frame, frame.client_id)

    async def _reply(self, route: SendRoute, frame: TextFrame | FileFrame, started: float) -> None:
        """A reply: its parent is checked first (`check_reply_to`), then it is sent."""
        try:
            await check_reply_to(self.app, route.channel_id, frame.reply_to or 0)
        except AppError as exc:
            self._rejected(exc, None)
            return
        await self._send(self._begin_send(route, frame, frame.client_id, frame.reply_to), started)

    async def _finish(self) -> None:
        await self.out.stop()
        await self._connection.stop()
        hub = self.app[HUB]
        await hub.leave(self._connection)
        hub.close_socket(self.out)
        await self.app[PRESENCE].socket_closed(self._session.channel_id, self._session.user_id)


def check_open(request: web.Request, settings: Settings) -> None:
    """Whether any socket may open now: not while draining, and from an allowed Origin."""
    if request.app[READINESS].draining:
        raise DrainingError()
    origin = request.headers.get("Origin")
    # Browsers always send Origin; native clients (the Go server's included) may not.
    if origin is not None and not settings.origin_allowed(origin):
        raise OriginNotAllowedError()


async def admit_user(request: web.Request, settings: Settings) -> TokenClaims:
    """Who opens a socket (`check_open`, then the credential)."""
    check_open(request, settings)
    return await socket_claims(request, settings, request.app[REDIS], request.app[KEYS])


@dataclass(frozen=True, slots=True)
class Admitted:
    user: User
    muted_until: float  # the user's mute in the channel (epoch seconds; 0: none)


async def channel_access(
    app: web.Application, claims: TokenClaims, channel_id: int, *, member: bool = True
) -> Admitted:
    """The user behind `claims`, if their token is current and (with `member`) they
    are a member of the existing `channel_id`; raises the AppError that refuses them
    (a private channel or direct message is not found to a non-member)."""
    try:
        access = await chat_access(app[PG_POOL], channel_id, claims.user_id)
    except POSTGRES_OUTAGE_ERRORS as exc:
        raise UnavailableError() from exc
    # Refuses a revoked token, and one signed for a user that no longer exists.
    check_generation(claims, access.token_generation)
    if access.user is None:
        raise InvalidTokenError()
    if member:
        if not access.channel_exists:
            raise ChannelNotFoundError()
        if access.role is None:
            if access.channel_kind != "public":
                raise ChannelNotFoundError()
            raise NotAMemberError()
    return Admitted(access.user, epoch_of(access.muted_until))


async def _admit(request: web.Request, settings: Settings) -> _Session:
    check_open(request, settings)
    channel_id = path_id(request, "channel_id")
    since = SINCE.query(request)
    claims = await socket_claims(request, settings, request.app[REDIS], request.app[KEYS])
    admitted = await channel_access(request.app, claims, channel_id)
    return _Session(
        user_id=claims.user_id,
        channel_id=channel_id,
        token_generation=claims.generation,
        author=author_of(admitted.user),
        since=since,
        muted_until=admitted.muted_until,
    )


def author_of(user: User) -> bytes:
    encoded = orjson.dumps(author_json(user.id, user.name, user.username, user.avatar_url))
    # Kept for the socket's life: orjson's result holds a 4 KB allocation behind
    # even a short value, so keep an exact-size copy instead.
    return bytes(bytearray(encoded))
