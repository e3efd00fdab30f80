"""A test-only echo server on the gateway's own WebSocket layer.

It upgrades with `Sockets.upgrade`, exactly as the chat socket does, and
writes every message back as it came (text as text, binary as binary), which
is what the Autobahn TestSuite's cases expect of a server under test. It has
none of the chat's admission, so a conformance run exercises the framing alone.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus

from aiohttp import web

from gateway.sockets import Sockets, check_upgrade
from gateway.websocket import WebSocket, text_frame
from shared.settings import Settings

ECHO_SOCKETS = web.AppKey("ECHO_SOCKETS", Sockets)
ECHOES = web.AppKey("ECHOES", list["Echo"])


class Echo:
    """One socket's listener: each message goes straight back."""

    def __init__(self, transport: asyncio.Transport | None) -> None:
        self.transport = transport  # what the socket reads from and writes to
        self.websocket: WebSocket | None = None
        self.messages = 0

    def on_message(self, payload: bytes, binary: bool) -> None:
        assert self.websocket is not None  # set right after the upgrade, before any frame
        self.messages += 1
        frame = text_frame(payload)
        # The same header with the binary opcode (0x2) in place of text's (0x1).
        self.websocket.write(b"\x82" + frame[1:] if binary else frame)

    async def on_closed(self) -> None:
        return None


def echo_app(settings: Settings) -> web.Application:
    """An app that answers `GET /` with an echoing WebSocket, limits from `settings`."""
    app = web.Application()
    app[ECHO_SOCKETS] = Sockets(
        max_size=settings.ws_max_frame_bytes,
        max_fragments=settings.ws_max_fragments,
        send_buffer_bytes=settings.ws_socket_send_buffer_bytes,
    )
    app[ECHOES] = []
    app.router.add_get("/", _echo_socket)
    return app


async def _echo_socket(request: web.Request) -> web.StreamResponse:
    check_upgrade(request)
    echo = Echo(request.transport)
    echo.websocket = request.app[ECHO_SOCKETS].upgrade(request, echo)
    request.app[ECHOES].append(echo)
    # aiohttp no longer holds the transport, so this answer is never written.
    return web.Response(status=HTTPStatus.SWITCHING_PROTOCOLS)
