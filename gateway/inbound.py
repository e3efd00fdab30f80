"""A socket's inbound half: the frames it reads are handled one after another, in order.

Both sockets share it. The chat socket's frames are all sends; the
multiplexed socket's also subscribe, unsubscribe and type. Frames are read
without waiting for the ones before them; past `_INBOX_LIMIT` unhandled frames
the socket stops reading until they are handled. A send whose script call
could leave at once, and whose reply settles it, is finished in the reply's
callback: no task per message. Anything else (no Redis connection yet, a
retry, a counter to seed, a subscribe) goes to a task, and the frames after
it wait for that task, so the order of a socket's sends, acks and
subscriptions is the order it sent them in, across its channels too.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from gateway.app_keys import MESSAGE_LIMITS, METRICS, SENDER, SETTINGS
from gateway.message_budget import MessageBudget
from gateway.outbox import Outbox
from gateway.sender import PendingSend, SendResult, SendRoute
from gateway.websocket import WebSocket
from shared.errors import (
    AppError,
    CloseCode,
    MessageTooLargeError,
    RateLimitedError,
)
from shared.log import request_id_var
from shared.wire import ack_frame, error_frame, frame_body, message_tail

log = logging.getLogger(__name__)

# Frames a socket may have read but not yet handled before it stops reading.
_INBOX_LIMIT = 64

# What `_start` returns: a send in flight, work to await before the next
# frame, or None when the frame is handled already.
Step = PendingSend | Coroutine[Any, Any, None] | None


class Inbound:
    """Reads frames in order and hands each to `_start` (the socket kind's part).

    `channel_tag` says whether acks and error frames carry `channel_id`: the
    chat socket's frames keep the Go server's shape.
    """

    channel_tag = False

    __slots__ = (
        "_context",
        "_in_flight",
        "_inbox",
        "_request_id",
        "_sender",
        "app",
        "author",
        "out",
        "websocket",
    )

    def __init__(self, out: Outbox, author: bytes, app: web.Application) -> None:
        self.out = out
        self.author = author  # the `user` object of every frame this socket sends
        self.app = app
        self._request_id = request_id_var.get()
        self._context: contextvars.Context | None = None
        self._inbox: list[bytes] = []
        # The first script call out, the send it belongs to, and its start time.
        self._in_flight: tuple[asyncio.Future[Any], PendingSend, float] | None = None
        # Runs only while a frame needs awaiting: an idle socket holds no task.
        self._sender: asyncio.Task[None] | None = None
        self.websocket: WebSocket | None = None

    # --- what a socket kind defines -------------------------------------------

    def _start(self, payload: bytes, started: float) -> Step:
        """Handle one frame; raises AppError to refuse it (an error frame, the socket open)."""
        raise NotImplementedError

    async def _finish(self) -> None:
        """After the last frame: leave the hub."""
        raise NotImplementedError

    # --- the listener ---------------------------------------------------------

    def on_message(self, payload: bytes, binary: bool) -> None:
        if binary:
            # Chat frames are JSON text; a client sending binary is broken, not wrong once.
            self.out.close(CloseCode.UNSUPPORTED_DATA, "binary messages are not accepted")
            return
        self._inbox.append(payload)
        if self._sender is None and self._in_flight is None:
            (self._context or self._start_handling()).run(self._handle_next)
        elif len(self._inbox) == _INBOX_LIMIT and self.websocket is not None:
            self.websocket.pause_reading()

    async def on_closed(self) -> None:
        request_id_var.set(self._request_id)
        # Frames read before the close are still sent (and durable); their acks are
        # dropped. Not so for a user who lost access: `_handle_next` drops them.
        while self._sender is not None or self._in_flight is not None:
            if self._sender is not None:
                await asyncio.wait({self._sender})
            elif self._in_flight is not None:
                await asyncio.wait({self._in_flight[0]})
        await self._finish()

    def _start_handling(self) -> contextvars.Context:
        # Frames arrive in transport callbacks, outside the upgrade request's
        # context: what handles them runs in a context of the socket's own,
        # which carries the request's id, so it logs under that id.
        context = self._context = contextvars.copy_context()
        context.run(request_id_var.set, self._request_id)
        return context

    def _handle_next(self) -> None:
        """Handle the inbox's frames in order, as far as it goes without waiting."""
        if self.out.revoked:
            # The user lost access: what the socket read before its close is not sent.
            self._drop_inbox()
            return
        while self._inbox and self._sender is None and self._in_flight is None:
            payload = self._inbox.pop(0)
            if len(self._inbox) == _INBOX_LIMIT - 1 and self.websocket is not None:
                self.websocket.resume_reading()
            started = time.perf_counter()
            try:
                step = self._start(payload, started)
            except AppError as exc:
                self._rejected(exc, None)
                continue
            if step is None:
                continue
            if not isinstance(step, PendingSend):
                self._run_in_task(step)
                return
            if step.first is None:
                self._run_in_task(self._send(step, started))
                return
            self._in_flight = (step.first, step, started)
            step.first.add_done_callback(self._on_first_reply, context=self._context)

    # --- sends ------------------------------------------------------------------

    def _spend(
        self,
        budget: MessageBudget | None,
        started: float,
        channel_id: int | None,
        what: str = "messages",
    ) -> bool:
        """Take one frame from `budget`; False (refused here, so Redis never
        sees it) when it is spent. `what` names the frames in the refusal."""
        if budget is None or budget.spend(started):
            return True
        self._over_budget(budget, started, channel_id, what)
        return False

    def _begin_send(
        self, route: SendRoute, frame: Any, client_id: str | None, reply_to: int | None = None
    ) -> PendingSend:
        """Start making a validated frame durable (a reply's parent checked already)."""
        body = frame_body(frame)
        return self.app[SENDER].start(
            route,
            client_id=client_id,
            body=body,
            tail=message_tail(
                user_id=route.user_id,
                channel_id=route.channel_id,
                body=body,
                client_id=client_id,
                author=self.author,
                reply_to=reply_to,
            ),
            target_id=reply_to,
        )

    def _budget(self) -> MessageBudget | None:
        limits = self.app[MESSAGE_LIMITS]
        return None if limits is None else MessageBudget(limits, time.perf_counter())

    def _on_first_reply(self, _: asyncio.Future[object]) -> None:
        assert self._in_flight is not None  # the callback of the send in flight
        _, pending, started = self._in_flight
        self._in_flight = None
        try:
            result = self.app[SENDER].result_now(pending)
        except AppError as exc:
            self._rejected(exc, pending.route.channel_id)
        else:
            if result is None:
                self._run_in_task(self._send(pending, started))
                return
            self._accepted(pending, result, started)
        self._handle_next()

    def _run_in_task(self, work: Coroutine[Any, Any, None]) -> None:
        """Finish `work` in a task; the frames after it wait for that task."""
        self._sender = asyncio.create_task(self._run(work), name="ws-sender")

    async def _run(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception:
            # Not an AppError (those become error frames where they arise): the
            # frames after this one would wait forever, so the socket closes.
            log.exception("socket frame failed")
            self.out.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            self._sender = None
        self._handle_next()

    async def _send(self, pending: PendingSend, started: float) -> None:
        try:
            result = await self.app[SENDER].finish(pending)
        except AppError as exc:
            self._rejected(exc, pending.route.channel_id)
        else:
            self._accepted(pending, result, started)

    def _accepted(self, pending: PendingSend, result: SendResult, started: float) -> None:
        metrics = self.app[METRICS]
        metrics.send_seconds.observe(time.perf_counter() - started)
        if result.duplicate:
            metrics.duplicate_sends.inc()
        else:
            metrics.messages_in.inc()
        channel_id = pending.route.channel_id if self.channel_tag else None
        self.out.enqueue(
            ack_frame(
                result.message_id,
                result.seq,
                pending.client_id,
                duplicate=result.duplicate,
                channel_id=channel_id,
            )
        )

    def _over_budget(
        self, budget: MessageBudget, now: float, channel_id: int | None, what: str
    ) -> None:
        retry_after, close = budget.refuse(now)
        exc = RateLimitedError(f"Too many {what}, slow down", retry_after=retry_after)
        if not close:
            self._rejected(exc, channel_id)
            return
        self._drop_inbox()  # a flood's frames already read are dropped too
        metrics = self.app[METRICS]
        metrics.send_rejections.inc(exc.code)
        metrics.rate_limit_closes.inc()
        log.info("closing a socket that keeps sending over its rate limit")
        frame = error_frame(
            exc.code,
            exc.message,
            exc.details,
            exc.retry_after,
            channel_id=channel_id if self.channel_tag else None,
        )
        self.out.close(exc.close_code, f"too many {what}", last_frame=frame)

    def _drop_inbox(self) -> None:
        self._inbox.clear()
        if self.websocket is not None:
            # A full inbox paused reading; the closing handshake needs the peer's close frame.
            self.websocket.resume_reading()

    def _rejected(self, exc: AppError, channel_id: int | None) -> None:
        self.app[METRICS].send_rejections.inc(exc.code)
        self.out.enqueue(
            error_frame(
                exc.code,
                exc.message,
                exc.details,
                exc.retry_after,
                channel_id=channel_id if self.channel_tag else None,
            )
        )


def check_size(payload: bytes, app: web.Application) -> None:
    limit = app[SETTINGS].ws_max_body_bytes
    if len(payload) > limit:
        raise MessageTooLargeError(f"Message exceeds {limit} bytes")
