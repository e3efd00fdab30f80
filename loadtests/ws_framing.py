"""Microbenchmark: gateway/websocket.py's framing against maintained implementations.

`python -m loadtests.ws_framing` measures, in one run on one machine:

- parse cost: microseconds per small masked text frame (a chat frame of about
  70 bytes), fed one frame per read, as a chat socket mostly gets them. Ours
  and the Sans-I/O protocols of `wsproto` and `websockets` are fed directly;
  ours and `picows` (which owns its transport and cannot be fed bytes) also
  end to end over loopback TCP.
- idle bytes per socket: Python memory (tracemalloc) held by one idle socket's
  protocol state, excluding the asyncio transport every option shares; for
  `picows`, that of real idle connections less a bare asyncio protocol's.

Libraries that are not installed are skipped. Bounded: a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import os
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from gateway.sockets import Sockets
from gateway.websocket import WebSocket

_FRAMES = 20_000
_ROUNDS = 5
_IDLE_SOCKETS = 200
_STREAMS = os.path.join("asyncio", "streams.py")
_BODY = b'{"type": "text", "content": "hello, how is everyone today?", "client_id": "c-12345"}'


def _masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return bytes((0x81, 0x80 | len(payload))) + mask + masked


class _Count:
    """A listener that only counts, so the figure is the framing's alone."""

    def __init__(self) -> None:
        self.messages = 0
        self.done: asyncio.Future[None] | None = None

    def on_message(self, payload: bytes, binary: bool) -> None:
        self.messages += 1
        if self.messages == _FRAMES and self.done is not None:
            self.done.set_result(None)

    async def on_closed(self) -> None:
        return None


def _per_frame_us(feed: Callable[[bytes], None], frame: bytes) -> float:
    """Best of a few rounds, in microseconds of CPU per frame."""
    rounds = []
    for _ in range(_ROUNDS):
        started = time.process_time()
        for _ in range(_FRAMES):
            feed(frame)
        rounds.append((time.process_time() - started) / _FRAMES * 1e6)
    return min(rounds)


def _ours(transport: asyncio.Transport) -> Callable[[bytes], None]:
    sockets = Sockets(max_size=65_536, max_fragments=128, send_buffer_bytes=0)
    return WebSocket(transport, sockets, _Count()).data_received


def _wsproto() -> Callable[[bytes], None] | None:
    try:
        from wsproto.connection import Connection, ConnectionType
    except ImportError:
        return None
    connection = Connection(ConnectionType.SERVER)

    def feed(data: bytes) -> None:
        connection.receive_data(data)
        for _ in connection.events():
            pass

    return feed


def _websockets() -> Callable[[bytes], None] | None:
    try:
        from websockets.protocol import Protocol, Side
    except ImportError:
        return None
    protocol = Protocol(Side.SERVER, max_size=65_536)

    def feed(data: bytes) -> None:
        protocol.receive_data(data)
        protocol.events_received()

    return feed


def _traced_bytes_per(make: Callable[[], object]) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = [make() for _ in range(_IDLE_SOCKETS)]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return (after - before) / _IDLE_SOCKETS


class _Bare(asyncio.Protocol):
    """What any option costs at least: an asyncio protocol that holds its transport."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport


async def _idle_connection_bytes(start_server: Callable[[], Any], upgrade: bytes) -> float:
    """Traced bytes per idle server-side connection.

    Client and server share this process: what the client streams allocate
    (everything traced under asyncio's streams module) is left out.
    """
    server = await start_server()
    port = server.sockets[0].getsockname()[1]
    clients = []
    gc.collect()
    tracemalloc.start(64)
    first = tracemalloc.take_snapshot()
    for _ in range(_IDLE_SOCKETS):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if upgrade:
            writer.write(upgrade)
            await reader.readuntil(b"\r\n\r\n")
        clients.append(writer)
    await asyncio.sleep(0.2)  # let the server side settle (accepts, handshakes)
    second = tracemalloc.take_snapshot()
    tracemalloc.stop()
    server_side = sum(
        stat.size_diff
        for stat in second.compare_to(first, "traceback")
        if not any(frame.filename.endswith(_STREAMS) for frame in stat.traceback)
    )
    for writer in clients:
        writer.close()
    server.close()
    await server.wait_closed()
    return server_side / _IDLE_SOCKETS


def _upgrade_request() -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def _end_to_end_us(
    start_server: Callable[[_Count], Any], upgrade: bytes, frame: bytes
) -> float:
    """Wall microseconds per frame for `_FRAMES` frames written at once, until all are heard."""
    loop = asyncio.get_running_loop()
    results = []
    for _ in range(_ROUNDS):
        count = _Count()
        count.done = loop.create_future()
        server = await start_server(count)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if upgrade:
            writer.write(upgrade)
            await reader.readuntil(b"\r\n\r\n")
        data = frame * _FRAMES
        started = time.perf_counter()
        writer.write(data)
        async with asyncio.timeout(30):
            await count.done
        results.append((time.perf_counter() - started) / _FRAMES * 1e6)
        writer.close()
        server.close()
        await server.wait_closed()
    return min(results)


def _ours_server(sockets: Sockets) -> Callable[[_Count], Any]:
    class _Handover(asyncio.Protocol):
        # The framing alone: the upgrade request is aiohttp's part and not measured.
        def __init__(self, listener: _Count) -> None:
            self.listener = listener

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            transport.set_protocol(WebSocket(transport, sockets, self.listener))

    def start(listener: _Count) -> Any:
        loop = asyncio.get_running_loop()
        return loop.create_server(lambda: _Handover(listener), "127.0.0.1", 0)

    return start


def _picows_server() -> Callable[[_Count], Any] | None:
    try:
        import picows
    except ImportError:
        return None

    def start(count: _Count) -> Any:
        class _Listener(picows.WSListener):  # type: ignore[misc]
            def on_ws_frame(self, transport: Any, frame: Any) -> None:
                if frame.msg_type == picows.WSMsgType.TEXT:
                    count.on_message(frame.get_payload_as_bytes(), False)

        # Its smallest sensible read buffer: the default (16 KiB) is allocated per socket.
        return picows.ws_create_server(
            lambda _request: _Listener(), "127.0.0.1", 0, read_buffer_init_size=1024
        )

    return start


async def main() -> None:
    frame = _masked_text_frame(_BODY)
    loop = asyncio.get_running_loop()
    # A real transport for the sockets fed directly; a text frame never writes to it.
    listener = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
    sink, _ = await loop.create_connection(
        asyncio.Protocol, "127.0.0.1", listener.sockets[0].getsockname()[1]
    )
    assert isinstance(sink, asyncio.Transport)
    sockets = Sockets(max_size=65_536, max_fragments=128, send_buffer_bytes=0)
    print(f"one masked text frame of {len(frame)} bytes, {_FRAMES} frames, best of {_ROUNDS}")

    print("\nparse, fed directly (CPU us/frame):")
    feeds = {"ours": _ours(sink), "wsproto": _wsproto(), "websockets": _websockets()}
    for name, feed in feeds.items():
        figure = "not installed" if feed is None else f"{_per_frame_us(feed, frame):.2f}"
        print(f"  {name:12} {figure}")

    print("\nidle protocol state per socket (traced bytes, transport excluded):")
    idle_states = {"ours": lambda: WebSocket(sink, sockets, _Count()), **_library_states()}
    for name, make in idle_states.items():
        wrapper = "" if name == "ours" else " (+ a wrapper protocol like ours)"
        print(f"  {name:12} {_traced_bytes_per(make):.0f}{wrapper}")

    print("\nend to end over loopback (wall us/frame):")
    ours_server = _ours_server(sockets)
    picows_server = _picows_server()
    print(f"  {'ours':12} {await _end_to_end_us(ours_server, b'', frame):.2f}")
    if picows_server is not None:
        figure = await _end_to_end_us(picows_server, _upgrade_request(), frame)
        print(f"  {'picows':12} {figure:.2f}")

    print("\nidle connection, server side (traced bytes, less a bare asyncio protocol's):")
    bare = await _idle_connection_bytes(lambda: loop.create_server(_Bare, "127.0.0.1", 0), b"")
    ours_idle = await _idle_connection_bytes(lambda: ours_server(_Count()), b"")
    print(f"  {'bare':12} {bare:.0f} (the transport and its socket)")
    print(f"  {'ours':12} {ours_idle - bare:.0f}")
    if picows_server is not None:
        upgrade = _upgrade_request()
        picows_idle = await _idle_connection_bytes(lambda: picows_server(_Count()), upgrade)
        print(f"  {'picows':12} {picows_idle - bare:.0f}")
    sink.close()
    listener.close()
    await listener.wait_closed()


def _library_states() -> dict[str, Callable[[], object]]:
    states: dict[str, Callable[[], object]] = {}
    try:
        from wsproto.connection import Connection, ConnectionType

        states["wsproto"] = lambda: Connection(ConnectionType.SERVER)
    except ImportError:
        pass
    try:
        from websockets.protocol import Protocol, Side

        states["websockets"] = lambda: Protocol(Side.SERVER)
    except ImportError:
        pass
    return states


def _configure() -> None:
    global _FRAMES, _ROUNDS, _IDLE_SOCKETS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=_FRAMES, help="frames per round")
    parser.add_argument("--rounds", type=int, default=_ROUNDS, help="rounds (best is kept)")
    parser.add_argument("--sockets", type=int, default=_IDLE_SOCKETS, help="idle sockets")
    args = parser.parse_args()
    _FRAMES, _ROUNDS, _IDLE_SOCKETS = args.frames, args.rounds, args.sockets


if __name__ == "__main__":
    _configure()
    asyncio.run(main())
