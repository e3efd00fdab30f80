"""What a hostile peer can make one WebSocket cost the gateway: bounded, and cheap.

Each test pins a hole found by trying the gateway from outside with raw
frames: a message in tens of thousands of fragments, a frame trickled in tiny
pieces, and a peer that sends pings as fast as it can and never reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from shared.settings import Settings
from tests.gateway.api_client import RECEIVE_TIMEOUT, room
from tests.gateway.conftest import MakeGateway
from tests.gateway.echo_websocket import ECHOES, Echo, echo_app
from tests.gateway.raw_websocket import BINARY, CONTINUATION, PING, TEXT, RawSocket

MakeServer = Callable[[web.Application], Awaitable[TestServer]]

# How long /healthz may take while a socket floods the gateway with fragments.
_PROMPT_SECONDS = 1.0
_HEARTBEAT_SECONDS = 0.5
_FLOOD_SECONDS = 4.0
# The ping flood ran the gateway 690 MB over in 6 s; a paused reader holds
# about its buffers (high-water mark, SO_SNDBUF, one read of pongs).
_RSS_GROWTH_BOUND = 32 * 2**20


async def _echo_socket(aiohttp_server: MakeServer, settings: Settings) -> tuple[RawSocket, Echo]:
    app = echo_app(settings)
    socket, _ = await RawSocket.connect(await aiohttp_server(app), "/")
    # The harness keeps the listener before its 101 answer leaves.
    (echo,) = app[ECHOES]
    return socket, echo


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def test_a_message_in_forty_thousand_fragments_is_cut_off_and_healthz_answers(
    gateway: TestClient[Any, Any], pg_pool: asyncpg.Pool, make_settings: Callable[..., Settings]
) -> None:
    """40,000 empty continuation frames froze a gateway for seconds: each one re-summed
    the sizes of all before it, and their number had no bound."""
    count = 40_000
    assert make_settings().ws_max_fragments < count
    channel_id, (alice,) = await room(gateway, "alice")
    socket, _ = await RawSocket.open(gateway, alice, channel_id)
    empty = socket.frame(CONTINUATION, b"", final=False)
    socket.send(socket.frame(TEXT, b"{", final=False) + empty * count)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(_PROMPT_SECONDS):
        response = await gateway.get("/healthz")
    assert response.status == 200
    assert loop.time() - started < _PROMPT_SECONDS
    assert await socket.read_close() == 1009
    stored = await pg_pool.fetchval("SELECT count(*) FROM messages")
    assert stored == 0


async def test_a_frame_in_many_small_pieces_is_parsed_in_linear_time(
    aiohttp_server: MakeServer, make_settings: Callable[..., Settings]
) -> None:
    """A partial frame was joined with each new piece (`buffer + data`): a frame
    trickled in small segments cost time quadratic in its size."""
    size, piece = 16 * 2**20, 2048
    socket, echo = await _echo_socket(aiohttp_server, make_settings(ws_max_frame_bytes=size))
    assert echo.websocket is not None
    payload = os.urandom(size)
    frame = socket.frame(BINARY, payload)
    pieces = [frame[start : start + piece] for start in range(0, len(frame), piece)]
    # The pieces go straight to the socket's parser, so each one is a separate
    # read however the kernel would have coalesced them.
    started = time.process_time()
    for part in pieces[:-1]:
        echo.websocket.data_received(part)
    assert echo.messages == 0, "the frame is not complete before its last piece"
    echo.websocket.data_received(pieces[-1])
    elapsed = time.process_time() - started
    assert echo.messages == 1
    assert await socket.read_frame() == (BINARY, payload)
    # 8,193 pieces: parsed in linear time they take a tenth of a second (most of
    # it unmasking); joining each piece to all before it copies 64 GiB, seconds.
    assert elapsed < 1.0, f"{len(pieces)} pieces took {elapsed:.2f} s of CPU"
    socket.close()


async def test_a_peer_that_pings_and_never_reads_stays_bounded_and_is_dropped(
    make_gateway: MakeGateway,
) -> None:
    """Pongs were written whatever the transport's backlog and reading never paused: a
    peer sending pings and reading nothing grew a gateway by 690 MB in 6 s."""
    gateway = await make_gateway(ws_heartbeat_seconds=_HEARTBEAT_SECONDS)
    channel_id, (alice,) = await room(gateway, "alice")
    socket, _ = await RawSocket.open(gateway, alice, channel_id)
    batch = socket.frame(PING, b"p" * 125) * 64
    before = peak = _rss_bytes()
    sent = 0
    dropped = False
    try:
        async with asyncio.timeout(_FLOOD_SECONDS):
            while True:
                socket.send(batch)
                await socket.writer.drain()  # waits while the gateway reads nothing
                sent += len(batch)
                peak = max(peak, _rss_bytes())
    except TimeoutError:
        pass
    except ConnectionError:
        dropped = True
    assert peak - before < _RSS_GROWTH_BOUND, f"{(peak - before) >> 20} MiB after {sent} bytes"
    if not dropped:
        # Whatever pongs reached the kernel's buffers, then the end.
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(RECEIVE_TIMEOUT + 2 * _HEARTBEAT_SECONDS):
                while await socket.reader.read(2**16):
                    pass
    socket.close()


async def test_reading_resumes_only_when_neither_reason_to_pause_holds(
    aiohttp_server: MakeServer, make_settings: Callable[..., Settings]
) -> None:
    socket, echo = await _echo_socket(aiohttp_server, make_settings())
    websocket, transport = echo.websocket, echo.transport
    assert websocket is not None
    assert transport is not None
    # The listener's pause, then the transport's; each lifted alone.
    websocket.pause_reading()
    websocket.pause_writing()
    websocket.resume_reading()
    assert not transport.is_reading(), "writes are still paused"
    websocket.resume_writing()
    assert transport.is_reading()
    # The other way round.
    websocket.pause_writing()
    websocket.pause_reading()
    websocket.resume_writing()
    assert not transport.is_reading(), "the listener still holds it"
    websocket.resume_reading()
    assert transport.is_reading()
    socket.send(socket.frame(TEXT, b"still reading"))
    assert await socket.read_frame() == (TEXT, b"still reading")
    socket.close()
