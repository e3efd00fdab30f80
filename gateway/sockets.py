"""This node's upgraded sockets: the upgrade checks, the handover from aiohttp,
heartbeats, and the wait at shutdown.

`check_upgrade` refuses a request that is not a WebSocket upgrade before any
other work; `Sockets.upgrade` answers 101 and hands the connection to a
`gateway.websocket.WebSocket`, which speaks RFC 6455 from then on.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import socket

from aiohttp import hdrs, web

from gateway.websocket import Listener, WebSocket
from shared.errors import InvalidParameterError

log = logging.getLogger(__name__)

# RFC 6455's fixed GUID for the Sec-WebSocket-Accept answer.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def check_upgrade(request: web.Request) -> None:
    """Refuse, before anything else, a request that is not a WebSocket upgrade."""
    headers = request.headers
    key = headers.get(hdrs.SEC_WEBSOCKET_KEY, "")
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        valid_key = False
    if (
        request.method != hdrs.METH_GET
        or headers.get(hdrs.UPGRADE, "").lower() != "websocket"
        or "upgrade" not in headers.get(hdrs.CONNECTION, "").lower()
        or headers.get(hdrs.SEC_WEBSOCKET_VERSION) != "13"
        or not valid_key
    ):
        raise InvalidParameterError("WebSocket upgrade required")


class Sockets:
    """This node's upgraded sockets: the upgrade itself, heartbeats, and the wait at shutdown."""

    def __init__(self, *, max_size: int, max_fragments: int, send_buffer_bytes: int) -> None:
        self.max_size = max_size
        self.max_fragments = max_fragments
        self._send_buffer_bytes = send_buffer_bytes
        self._open: set[WebSocket] = set()
        self._finishing: set[asyncio.Task[None]] = set()
        self._all_closed: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self._open)

    def upgrade(
        self, request: web.Request, listener: Listener | None, *, subprotocol: str | None = None
    ) -> WebSocket:
        """Answer 101 and take the connection from aiohttp.

        `subprotocol` is the one the answer selects (`Sec-WebSocket-Protocol`), which
        must be one the client offered; None selects none. Call `check_upgrade`
        first; raises ConnectionResetError when the peer is gone.
        """
        transport = request.transport
        protocol = request.protocol
        if transport is None or transport.is_closing():
            raise ConnectionResetError("peer gone before the upgrade")
        key = request.headers[hdrs.SEC_WEBSOCKET_KEY].encode()
        accept = base64.b64encode(hashlib.sha1(key + _GUID, usedforsecurity=False).digest())
        selected = b"Sec-WebSocket-Protocol: %b\r\n" % subprotocol.encode() if subprotocol else b""
        transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n" + selected + b"\r\n"
        )
        sock = transport.get_extra_info("socket")
        if self._send_buffer_bytes and sock is not None:
            # Kernel autotuning lets a socket buffer megabytes for a client that
            # stopped reading, which hides it from the bounded queue.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._send_buffer_bytes)
        # aiohttp must neither write to nor close this connection from now on;
        # `connection_lost` drops its request handler, parser and timers.
        protocol.transport = None
        protocol.connection_lost(None)
        websocket = WebSocket(transport, self, listener)
        transport.set_protocol(websocket)
        self._open.add(websocket)
        return websocket

    def closed(self, websocket: WebSocket) -> None:
        self._open.discard(websocket)
        if websocket.listener is not None:
            task = asyncio.create_task(websocket.listener.on_closed(), name="ws-closed")
            self._finishing.add(task)
            task.add_done_callback(self._finished)
        self._check_all_closed()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._finishing.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("socket cleanup failed", exc_info=exc)
        self._check_all_closed()

    def _check_all_closed(self) -> None:
        if self._all_closed is not None and not self._open and not self._finishing:
            self._all_closed.set()

    async def heartbeat(self, interval: float) -> None:
        """Ping every socket each `interval`; drop the ones silent, or unwritable, for a
        whole interval."""
        while True:
            await asyncio.sleep(interval)
            for websocket in list(self._open):
                websocket.heartbeat()

    async def wait_closed(self, grace_seconds: float) -> None:
        """Wait, bounded, until every socket is closed and cleaned up; then abort the rest."""
        self._all_closed = asyncio.Event()
        self._check_all_closed()
        try:
            async with asyncio.timeout(grace_seconds):
                await self._all_closed.wait()
        except TimeoutError:
            log.warning("sockets still open at shutdown", extra={"count": len(self._open)})
            for websocket in list(self._open):
                websocket.abort()
