"""The multiplexed socket: `WS /api/v1/ws?token=<jwt>` (or the token as a
subprotocol, or `?ticket=`), one connection for many channels.

Admission is the chat socket's (`gateway.chat.admit_user`: draining, Origin,
credential) plus the user's socket cap; no channel yet. Then frames, each a
JSON object with `type`, handled in the order they arrive (`gateway.inbound`):

- `subscribe` checks membership and the socket's `WS_MAX_SUBSCRIPTIONS`,
  joins the hub, reads the channel's head, answers `subscribed` with
  `last_seq`, then replays after `since` (nothing without it) and goes live:
  the chat socket's per-channel resume, one `Connection` per channel, all
  writing into the socket's one bounded `Outbox`. A subscribe to a channel
  already subscribed replaces that subscription: what follows the new
  `subscribed` frame follows from the new `since`.
- `unsubscribe` detaches the channel's connection at once, then answers
  `unsubscribed`: nothing of that channel follows that frame (what was queued
  before it may precede it). Idempotent: it answers the same when not subscribed.
- `send` requires a subscription (membership was checked by it, and the
  membership audit keeps checking it), and goes the chat socket's way: a
  message budget per channel (as the rate limit in Redis is), validation, the
  send script, the ack (with `channel_id`).
- `edit`, `delete` and `react` require a subscription and spend its message
  budget, then go `gateway.message_changes`' way: authorized (author, role,
  target in this channel), made an event that takes the channel's next seq,
  acknowledged with the event's id and seq (`unchanged` when a reaction
  changes nothing) once durable. A `send` with `reply_to` has its parent
  checked first.
- `read` marks the channel read (`gateway.read_markers.mark_read`, the REST
  route's rules); no subscription needed.
- A muted member's `send` and `typing` get a `muted` error frame (checked in
  memory: see `gateway.mutes`); subscribing, reading and `read` still work.
- `subscribe` and `read` frames each spend from a budget of the socket's
  (`gateway.message_budget`, `WS_SUBSCRIBE_RATE` and `WS_READ_RATE`) before
  they cost anything: over it, a `rate_limited` error frame; a socket that
  keeps going over is closed with 4429, as for sends.
- `typing` requires a subscription, and is relayed at most once per
  `WS_TYPING_INTERVAL_SECONDS` per user and channel, across the user's
  sockets and gateways (`gateway.typing_indicators`; the rest are dropped
  silently, a socket's own refreshes before they reach Redis), as a control
  event on the channel's topic, which every gateway delivers to the channel's
  event-taking sockets (`Hub.deliver_event`), the typer's own included, as a
  `typing` frame with `expires_in_ms`.

A user removed from a channel loses that subscription with a `not_a_member`
error frame; the socket stays open. A revoked token closes the socket (4401).
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from gateway.api.docs import Auth, documented
from gateway.app_keys import (
    BACKLOG,
    HUB,
    PRESENCE,
    READ_LIMITS,
    SENDER,
    SETTINGS,
    SOCKETS,
    SUBSCRIBE_LIMITS,
    TOPICS,
)
from gateway.auth import TokenClaims
from gateway.chat import (
    admit_user,
    author_of,
    channel_access,
    handed_over,
    new_connection,
    new_outbox,
    refuse,
    upgrade,
)
from gateway.connection import Connection
from gateway.inbound import Inbound, Step, check_size
from gateway.message_budget import MessageBudget
from gateway.message_changes import (
    apply_change,
    check_reply_to,
    delete_change,
    edit_change,
    reaction_change,
)
from gateway.mutes import check_not_muted
from gateway.outbox import Outbox
from gateway.read_markers import mark_read
from gateway.sender import SendRoute
from gateway.sockets import check_upgrade
from gateway.typing_indicators import relay_typing
from shared.errors import (
    AppError,
    CloseCode,
    ErrorCode,
    InvalidBodyError,
    InvalidParameterError,
    NotAMemberError,
    NotSubscribedError,
    SinceAheadError,
    TooManySubscriptionsError,
)
from shared.wire import (
    MUX_FRAME,
    DeleteFrame,
    EditFrame,
    ReactFrame,
    ReadFrame,
    SendFrame,
    SubscribeFrame,
    TypingFrame,
    change_ack_frame,
    error_frame,
    parse_json,
    subscribed_frame,
    unsubscribed_frame,
)

log = logging.getLogger(__name__)


@documented(
    "The multiplexed socket (WebSocket)",
    description="An RFC 6455 upgrade for one connection to many channels; a request that is "
    "not one is answered 422 `invalid_parameter`. The credential is passed as for the chat "
    "socket. Admission (Origin, credential) is decided after the upgrade: a refused socket gets "
    "an error frame and a close code. The frames (`subscribe`, `unsubscribe`, `send`, `typing`, "
    "`read`, `edit`, `delete`, `react`) "
    "are described in the README.",
    status=101,
    errors=(InvalidParameterError,),
    auth=Auth.QUERY,
)
async def mux_socket(request: web.Request) -> web.StreamResponse:
    check_upgrade(request)
    app = request.app
    hub, sockets = app[HUB], app[SOCKETS]
    try:
        claims = await admit_user(request, app[SETTINGS])
        # No channel yet: only the user and the token's generation are checked here.
        user = (await channel_access(app, claims, 0, member=False)).user
        out = new_outbox(app, claims.user_id)
        hub.open_socket(out)
    except AppError as exc:
        return refuse(request, sockets, exc)
    mux = _MuxSocket(claims, out, author_of(user), app)
    websocket = upgrade(request, mux)
    if websocket is None:
        hub.close_socket(out)
        return handed_over()
    out.attach(websocket)
    return handed_over()


class _Subscription(Connection):
    """One channel of a multiplexed socket (made with `wants_events`)."""

    __slots__ = ("announced", "budget", "owner", "route", "typed_at")

    owner: _MuxSocket
    route: SendRoute
    budget: MessageBudget | None
    typed_at: float
    announced: bool  # `subscribed` is queued: events may follow

    def offer_event(self, frame: bytes) -> None:
        if self.announced:
            self.out.send(frame)

    def revoke(self, code: CloseCode, reason: str) -> bool:
        if code is CloseCode.FORBIDDEN:
            return self.owner.lost(self)  # removed from this channel: this subscription ends
        return super().revoke(code, reason)  # the token: the whole socket closes

    def _gap_frame(self, gap: AppError) -> bytes:
        return error_frame(gap.code, gap.message, gap.details, channel_id=self.channel_id)


class _MuxSocket(Inbound):
    channel_tag = True

    __slots__ = ("_claims", "_leaving", "_reads", "_streams", "_subscribes")

    def __init__(
        self, claims: TokenClaims, out: Outbox, author: bytes, app: web.Application
    ) -> None:
        super().__init__(out, author, app)
        self._claims = claims
        self._streams: dict[int, _Subscription] = {}
        self._leaving: set[asyncio.Task[None]] = set()
        # In front of what each subscribe (PostgreSQL, Redis) and read (a PostgreSQL
        # write) costs: a flood is refused before it reaches either.
        now = time.perf_counter()
        subscribes, reads = app[SUBSCRIBE_LIMITS], app[READ_LIMITS]
        self._subscribes = None if subscribes is None else MessageBudget(subscribes, now)
        self._reads = None if reads is None else MessageBudget(reads, now)

    def _start(self, payload: bytes, started: float) -> Step:
        check_size(payload, self.app)
        frame = parse_json(MUX_FRAME, payload)
        channel_id = frame.channel_id
        if isinstance(frame, SubscribeFrame):
            if not self._spend(self._subscribes, started, channel_id, "subscribes"):
                return None
            return self._subscribe(frame)
        if isinstance(frame, ReadFrame):
            if not self._spend(self._reads, started, channel_id, "read frames"):
                return None
            return self._read(frame)
        sub = self._streams.get(channel_id)
        if frame.type == "unsubscribe":
            if sub is not None:
                self._drop(sub)
            self.out.enqueue(unsubscribed_frame(channel_id))
            return None
        try:
            if sub is None:
                raise NotSubscribedError()
            if isinstance(frame, SendFrame):
                return self._send_frame(sub, frame, started)
            if isinstance(frame, TypingFrame):
                return self._typing(sub, started)
            if not isinstance(frame, DeleteFrame):
                check_not_muted(sub)  # an edit is new content, a reaction a post
            if sub.budget is None:
                sub.budget = self._budget()
            if not self._spend(sub.budget, started, channel_id):
                return None
            return self._change(frame)
        except AppError as exc:
            self._rejected(exc, channel_id)
            return None

    async def _change(self, frame: EditFrame | DeleteFrame | ReactFrame) -> None:
        """An edit, delete or reaction (`gateway.message_changes`): acknowledged once its
        event is durable; every subscriber, this one included, gets the event."""
        app, user_id = self.app, self._claims.user_id
        channel_id, message_id = frame.channel_id, frame.message_id
        try:
            if isinstance(frame, EditFrame):
                change = await edit_change(
                    app, user_id, channel_id, message_id, frame.body, frame.client_id
                )
            elif isinstance(frame, DeleteFrame):
                change = await delete_change(app, user_id, channel_id, message_id)
            else:
                change = await reaction_change(
                    app, user_id, channel_id, message_id, frame.emoji, frame.op
                )
            outcome = await apply_change(app, change)
        except AppError as exc:
            self._rejected(exc, channel_id)
            return
        result = outcome.result
        self.out.enqueue(
            change_ack_frame(
                channel_id,
                message_id,
                None if result is None else result.message_id,
                None if result is None else result.seq,
                client_id=change.client_id,
                count=outcome.count,
                duplicate=result is not None and result.duplicate,
            )
        )

    def _reply(self, sub: _Subscription, frame: SendFrame, started: float) -> Step:
        """A send naming `reply_to`: its parent is checked first (in a task: PostgreSQL,
        then the recent stream), then it goes the send's way."""
        assert frame.reply_to is not None

        async def check_then_send() -> None:
            try:
                await check_reply_to(self.app, sub.channel_id, frame.reply_to or 0)
            except AppError as exc:
                self._rejected(exc, sub.channel_id)
                return
            pending = self._begin_send(sub.route, frame.body, frame.client_id, frame.reply_to)
            await self._send(pending, started)

        return check_then_send()

    def _send_frame(self, sub: _Subscription, frame: SendFrame, started: float) -> Step:
        check_not_muted(sub)
        if frame.body.client_id is not None:
            raise InvalidBodyError(
                details=[{"field": "body.client_id", "message": "client_id belongs beside body"}]
            )
        if sub.budget is None:
            sub.budget = self._budget()
        if not self._spend(sub.budget, started, sub.channel_id):
            return None
        if frame.body.reply_to is not None:
            raise InvalidBodyError(
                details=[
                    {
                        "field": "body.reply_to",
                        "message": "reply_to belongs beside body",
                        "type": "extra_forbidden",
                    }
                ]
            )
        if frame.reply_to is not None:
            return self._reply(sub, frame, started)
        return self._begin_send(sub.route, frame.body, frame.client_id)

    def _typing(self, sub: _Subscription, started: float) -> Step:
        check_not_muted(sub)  # a muted user's typing would announce what they cannot send
        if started - sub.typed_at < self.app[SETTINGS].ws_typing_interval_seconds:
            return None  # a refresh within the interval adds nothing: dropped
        sub.typed_at = started
        return self._publish_typing(sub.channel_id)

    async def _publish_typing(self, channel_id: int) -> None:
        try:
            await relay_typing(self.app, channel_id, self._claims.user_id)
        except AppError as exc:
            self._rejected(exc, channel_id)

    async def _read(self, frame: ReadFrame) -> None:
        # A member's mark, subscribed or not: the same rules as the REST route's.
        try:
            await mark_read(self.app, self._claims.user_id, frame.channel_id, frame.seq)
        except AppError as exc:
            self._rejected(exc, frame.channel_id)

    async def _subscribe(self, frame: SubscribeFrame) -> None:
        try:
            await self._join(frame)
        except AppError as exc:
            if exc.code is ErrorCode.INVALID_TOKEN:
                last = error_frame(exc.code, exc.message, channel_id=frame.channel_id)
                self.out.close(exc.close_code, exc.message, last_frame=last)
            else:
                self._rejected(exc, frame.channel_id)

    async def _join(self, frame: SubscribeFrame) -> None:
        app, channel_id = self.app, frame.channel_id
        old = self._streams.get(channel_id)
        limit = app[SETTINGS].ws_max_subscriptions
        if old is None and len(self._streams) >= limit:
            raise TooManySubscriptionsError(details=[{"limit": limit}])
        admitted = await channel_access(app, self._claims, channel_id)
        sub = new_connection(
            app, self.out, channel_id, self._claims.generation, _Subscription, wants_events=True
        )
        assert isinstance(sub, _Subscription)
        sub.muted_until = admitted.muted_until
        sub.owner, sub.budget, sub.typed_at, sub.announced = self, None, -1e9, False
        sub.route = app[SENDER].route(channel_id, self._claims.user_id)
        hub = app[HUB]
        await hub.join(sub)
        try:
            # Read after the subscription: every later message reaches `sub` live.
            head = app[TOPICS].known_head(channel_id, await app[BACKLOG].head(channel_id))
        except BaseException:
            await hub.leave(sub)
            raise
        if self.out.closing:
            await hub.leave(sub)
            return
        since = head if frame.since is None else frame.since
        if since > head:
            ahead = SinceAheadError(details=[{"since": since, "last_seq": head}])
            self._rejected(ahead, channel_id)
            since = head
        if old is not None:
            self._drop(old)
        self._streams[channel_id] = sub
        self.out.enqueue(subscribed_frame(channel_id, head))
        sub.announced = True
        sub.start(since, head=head)
        # Live in the channel: the user counts as online there (never raises).
        await app[PRESENCE].socket_opened(channel_id, self._claims.user_id)

    def lost(self, sub: _Subscription) -> bool:
        """`sub`'s user was removed from its channel: end the subscription with an error."""
        if self._streams.get(sub.channel_id) is not sub:
            return False
        self._drop(sub)
        removed = NotAMemberError("No longer a member of this channel")
        self._rejected(removed, sub.channel_id)
        return True

    def _drop(self, sub: _Subscription) -> None:
        """End a subscription now; it leaves the hub in the background."""
        if self._streams.get(sub.channel_id) is sub:
            del self._streams[sub.channel_id]
        sub.detach()
        task = asyncio.create_task(self._leave(sub), name="ws-unsubscribe")
        self._leaving.add(task)
        task.add_done_callback(self._leaving.discard)

    async def _leave(self, sub: Connection) -> None:
        await sub.stop()
        await self.app[HUB].leave(sub)
        await self.app[PRESENCE].socket_closed(sub.channel_id, self._claims.user_id)

    async def _finish(self) -> None:
        await self.out.stop()
        for sub in list(self._streams.values()):
            await self._leave(sub)
        self._streams.clear()
        while self._leaving:
            await asyncio.wait(set(self._leaving))
        self.app[HUB].close_socket(self.out)
