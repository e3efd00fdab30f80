"""One chat socket's outbound side: a bounded queue and the task that drains it.

Fan-out never awaits a socket: `enqueue` is synchronous and only this
connection's writer awaits the network. A client whose queue fills up is too
slow; it is closed with `CloseCode.TOO_SLOW` and resumes on reconnect, so one
slow reader never holds up anyone else.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import WSMsgType, web

from shared.errors import CloseCode

log = logging.getLogger(__name__)

# Bound on the closing handshake with a client that may no longer read.
_CLOSE_TIMEOUT_SECONDS = 5.0


class Connection:
    """The outbound half of one WebSocket. Frames are pre-encoded bytes."""

    def __init__(
        self, ws: web.WebSocketResponse, *, user_id: int, channel_id: int, queue_size: int
    ) -> None:
        self.ws = ws
        self.user_id = user_id
        self.channel_id = channel_id
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=queue_size)
        self._writer: asyncio.Task[None] | None = None
        self._close_request: tuple[CloseCode, str] | None = None

    def enqueue(self, frame: bytes) -> None:
        """Queue a frame without waiting. A full queue closes the socket as too slow."""
        if self._close_request is not None:
            return
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            log.info(
                "closing slow client",
                extra={"user_id": self.user_id, "channel_id": self.channel_id},
            )
            self.close(CloseCode.TOO_SLOW, "too slow: outbound queue full, reconnect to resume")

    def close(self, code: CloseCode, reason: str) -> None:
        """Ask the writer to stop and close the socket with `code`; idempotent."""
        if self._close_request is not None:
            return
        self._close_request = (code, reason)
        if self._writer is not None:
            self._writer.cancel()

    async def run_writer(self) -> None:
        """Drain the queue into the socket until cancelled or asked to close."""
        self._writer = asyncio.current_task()
        try:
            while self._close_request is None:
                frame = await self._queue.get()
                await self.ws.send_frame(frame, WSMsgType.TEXT)
        except asyncio.CancelledError:
            if self._close_request is None:
                raise
        except ConnectionError:
            return  # the peer went away; the reader sees the same and cleans up
        code, reason = self._close_request
        await self._close_socket(code, reason)

    async def _close_socket(self, code: CloseCode, reason: str) -> None:
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_SECONDS):
                await self.ws.close(code=code, message=reason.encode())
        except (TimeoutError, ConnectionError):
            log.info("close handshake abandoned", extra={"user_id": self.user_id})
