"""One socket's outbound queue: bounded, written at the transport's pace.

Fan-out never awaits a socket: `send` and `enqueue` are synchronous. When the
socket keeps up (nothing waiting in the transport), a frame is written at once,
with no task switch; otherwise it waits in a bounded queue that the outbox's
writer task drains, many frames per write, at the pace the transport allows.
A client whose queue fills up is too slow; it is closed with
`CloseCode.TOO_SLOW` and resumes on reconnect, so one slow reader never holds
up anyone else. Each socket has one outbox, whatever number of channels it
carries (`gateway.connection` holds each channel's resume state).
"""

from __future__ import annotations

import asyncio
import logging

from gateway.metrics import GatewayMetrics
from gateway.websocket import WebSocket, text_frame
from shared.errors import CloseCode

log = logging.getLogger(__name__)


# The codes `revoke` closes with; nothing else closes a socket with them.
_LOST_ACCESS = frozenset({CloseCode.FORBIDDEN, CloseCode.UNAUTHORIZED})


class StalledError(Exception):
    """A replay found its socket's queue full for longer than the stall bound."""


class ClosedError(Exception):
    """The outbox closed while a catch-up was replaying into it."""


class Outbox:
    """One socket's bounded outbound queue and its writer task.

    Frames are offered finished (`text_frame`, built once per message for
    every local recipient); `enqueue` takes a payload and frames it.
    """

    __slots__ = (
        "_metrics",
        "_writer",
        "close_request",
        "pending",
        "queue_size",
        "socket",
        "user_id",
    )

    def __init__(self, *, user_id: int, queue_size: int, metrics: GatewayMetrics) -> None:
        self.user_id = user_id
        # A list, not a deque: an empty deque costs ten times the memory of an
        # empty list, and the writer swaps the list whole.
        self.pending: list[bytes] = []
        self.queue_size = queue_size
        self.socket: WebSocket | None = None
        self._metrics = metrics
        # Runs only while frames wait for the transport: an idle socket holds no task.
        self._writer: asyncio.Task[None] | None = None
        self.close_request: tuple[CloseCode, str, bytes | None] | None = None

    @property
    def closing(self) -> bool:
        return self.close_request is not None

    def attach(self, socket: WebSocket) -> None:
        """Start writing to `socket` what was queued before it opened, and all after."""
        self.socket = socket
        if self.pending:
            self._start_writer()

    async def stop(self) -> None:
        """Close (normally, unless a close was already requested) and wait for the writer."""
        self.close(CloseCode.NORMAL, "")
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)

    def enqueue(self, payload: bytes) -> None:
        """Send or queue a frame without waiting. A full queue closes the socket as too slow."""
        self.send(text_frame(payload))

    def send(self, frame: bytes) -> None:
        if self.close_request is not None:
            return
        pending = self.pending
        socket = self.socket
        if not pending and socket is not None and socket.write_if_idle(frame):
            return
        if len(pending) >= self.queue_size:
            self.too_slow(0)
            return
        pending.append(frame)
        if self._writer is None and socket is not None:
            self._start_writer()

    def close(self, code: CloseCode, reason: str, *, last_frame: bytes | None = None) -> None:
        """Stop the writer and close the socket with `code`; idempotent.

        Frames still queued are dropped (a slow client resumes from its last
        seq); `last_frame`, such as an error frame, is sent before the close.
        Catch-ups replaying into the outbox end at their next frame.
        """
        if self.close_request is not None:
            return
        self.close_request = (code, reason, last_frame)
        writer = self._writer
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
        if self.socket is not None:
            last = None if last_frame is None else text_frame(last_frame)
            self.socket.close(code, reason, last_frame=last)

    def revoke(self, code: CloseCode, reason: str) -> bool:
        """Close because the user lost access (`code` 4403: removed from the channel;
        4401: token revoked); False if the socket was closing already."""
        if self.close_request is not None:
            return False
        self.close(code, reason)
        return True

    @property
    def revoked(self) -> bool:
        """Closed because the user lost access: what the socket read is no longer sent."""
        request = self.close_request
        return request is not None and request[0] in _LOST_ACCESS

    def too_slow(self, held: int) -> None:
        """Close as too slow; `held` counts frames dropped outside the queue."""
        self._metrics.slow_disconnects.inc()
        self._metrics.dropped_frames.inc(len(self.pending) + held)
        log.info("closing slow client", extra={"user_id": self.user_id})
        self.close(CloseCode.TOO_SLOW, "too slow: outbound queue full, reconnect to resume")

    async def put(self, frame: bytes, stall_seconds: float) -> None:
        """Queue a finished frame once the queue has room (replays wait for the writer).

        This wait is a replay's backpressure: the next page is read only once
        this one is queued. Raises StalledError when the writer could not hand
        the queue to the transport within `stall_seconds` (a client that stopped
        reading): it would hold a page and a queue for as long as it liked.
        Raises ClosedError once the outbox is closing.
        """
        while len(self.pending) >= self.queue_size and self._writer is not None:
            # The writer ends once the queue is written.
            done, _ = await asyncio.wait({self._writer}, timeout=stall_seconds)
            if not done:
                raise StalledError
        if self.close_request is not None:
            raise ClosedError
        self.send(frame)

    def _start_writer(self) -> None:
        self._writer = asyncio.create_task(self._write_pending(), name="ws-writer")

    async def _write_pending(self) -> None:
        """Write queued frames, all that wait in one write, at the transport's pace; then end."""
        socket = self.socket
        assert socket is not None  # the writer starts only once there is a socket
        try:
            while self.pending and self.close_request is None and socket.open:
                await socket.drain()  # waits while the transport is over its limit
                frames, self.pending = self.pending, []
                socket.write(b"".join(frames))
        finally:
            self._writer = None


# What a detached connection writes to: closed from the start, it takes nothing.
DETACHED = Outbox(user_id=0, queue_size=0, metrics=None)  # type: ignore[arg-type]
DETACHED.close_request = (CloseCode.NORMAL, "", None)
