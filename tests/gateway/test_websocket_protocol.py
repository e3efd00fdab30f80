"""The chat socket's RFC 6455 layer, driven byte by byte over a raw TCP connection.

The gateway parses WebSocket frames itself once upgraded (gateway/websocket.py),
so these tests send what a well-behaved client library never would: unmasked
frames, reserved bits, stray continuations, oversized control frames, and
frames split at every byte or packed many to a segment.
"""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient

from tests.gateway.api_client import RECEIVE_TIMEOUT, Account, error_of, room

_TEXT, _CONTINUATION, _CLOSE, _PING, _PONG = 0x1, 0x0, 0x8, 0x9, 0xA


class RawSocket:
    """A deliberately minimal client: it writes exactly the bytes a test asks for."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(
        cls, gateway: TestClient[Any, Any], account: Account, channel_id: int, *, key: str = ""
    ) -> tuple[RawSocket, bytes]:
        """Connect and upgrade; returns the socket and the server's 101 head."""
        server = gateway.server
        reader, writer = await asyncio.open_connection(server.host, server.port)
        key = key or base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /api/v1/chat/{channel_id}?token={account.token} HTTP/1.1\r\n"
            f"Host: {server.host}:{server.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        async with asyncio.timeout(RECEIVE_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        return cls(reader, writer), head

    def frame(
        self, opcode: int, payload: bytes, *, final: bool = True, masked: bool = True, rsv: int = 0
    ) -> bytes:
        first = (0x80 if final else 0) | rsv << 4 | opcode
        size = len(payload)
        if size < 126:
            header = bytes((first, (0x80 if masked else 0) | size))
        else:
            header = bytes((first, (0x80 if masked else 0) | 126)) + size.to_bytes(2, "big")
        if not masked:
            return header + payload
        mask = os.urandom(4)
        return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_frame(self) -> tuple[int, bytes]:
        async with asyncio.timeout(RECEIVE_TIMEOUT):
            first, second = await self.reader.readexactly(2)
            assert not second & 0x80, "server frames are never masked"
            size = second & 0x7F
            if size == 126:
                size = int.from_bytes(await self.reader.readexactly(2), "big")
            elif size == 127:
                size = int.from_bytes(await self.reader.readexactly(8), "big")
            return first & 0x0F, await self.reader.readexactly(size)

    async def read_json(self) -> dict[str, Any]:
        opcode, payload = await self.read_frame()
        assert opcode == _TEXT, (opcode, payload)
        frame: dict[str, Any] = orjson.loads(payload)
        return frame

    async def read_close(self) -> int:
        """The close code of the server's close frame, skipping frames before it; then EOF."""
        while True:
            opcode, payload = await self.read_frame()
            if opcode == _CLOSE:
                break
        async with asyncio.timeout(RECEIVE_TIMEOUT):
            assert await self.reader.read() == b"", "the server ends the TCP connection"
        self.close()
        return int.from_bytes(payload[:2], "big")

    def close(self) -> None:
        self.writer.close()


def _text(content: str, client_id: str | None = None) -> bytes:
    return orjson.dumps({"type": "text", "content": content, "client_id": client_id})


async def _stored(pg_pool: asyncpg.Pool, channel_id: int) -> int:
    count: int = await pg_pool.fetchval(
        "SELECT count(*) FROM messages WHERE channel_id = $1", channel_id
    )
    return count


async def test_upgrade_answers_with_the_rfc_accept_key(gateway: TestClient[Any, Any]) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    # The worked example of RFC 6455, section 1.3.
    socket, head = await RawSocket.open(gateway, alice, channel_id, key="dGhlIHNhbXBsZSBub25jZQ==")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head
    socket.close()


async def test_plain_get_on_the_chat_route_is_refused_without_upgrading(
    gateway: TestClient[Any, Any],
) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    response = await gateway.get(f"/api/v1/chat/{channel_id}?token={alice.token}")
    assert await error_of(response) == (422, "invalid_parameter")


@pytest.mark.parametrize(
    ("name", "build"),
    [
        ("unmasked", lambda s: s.frame(_TEXT, _text("x"), masked=False)),
        ("reserved bits", lambda s: s.frame(_TEXT, _text("x"), rsv=0b100)),
        ("stray continuation", lambda s: s.frame(_CONTINUATION, _text("x"))),
        ("long control frame", lambda s: s.frame(_PING, b"p" * 126)),
        ("fragmented control frame", lambda s: s.frame(_PING, b"p", final=False)),
        ("unknown opcode", lambda s: s.frame(0x3, b"")),
        (
            "message inside a message",
            lambda s: s.frame(_TEXT, b"{", final=False) + s.frame(_TEXT, _text("x")),
        ),
    ],
)
async def test_protocol_violation_closes_1002_and_stores_nothing(
    gateway: TestClient[Any, Any], pg_pool: asyncpg.Pool, name: str, build: Any
) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    socket, _ = await RawSocket.open(gateway, alice, channel_id)
    socket.send(build(socket))
    assert await socket.read_close() == 1002, name
    assert await _stored(pg_pool, channel_id) == 0


async def test_fragmented_message_is_reassembled_around_a_ping(
    gateway: TestClient[Any, Any],
) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    socket, _ = await RawSocket.open(gateway, alice, channel_id)
    body = _text("in three parts", "c-1")
    socket.send(
        socket.frame(_TEXT, body[:5], final=False)
        + socket.frame(_PING, b"are you there")
        + socket.frame(_CONTINUATION, body[5:12], final=False)
        + socket.frame(_CONTINUATION, body[12:])
    )
    assert await socket.read_frame() == (_PONG, b"are you there")
    frames = [await socket.read_json(), await socket.read_json()]
    ack = next(frame for frame in frames if frame["type"] == "ack")
    message = next(frame for frame in frames if frame["type"] == "message")
    assert (ack["seq"], ack["client_id"]) == (1, "c-1")
    assert message["body"]["content"] == "in three parts"
    socket.close()


async def test_frames_split_at_every_byte_and_packed_together_all_arrive(
    gateway: TestClient[Any, Any],
) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    socket, _ = await RawSocket.open(gateway, alice, channel_id)
    split = socket.frame(_TEXT, _text("split", "c-0"))
    for index in range(len(split)):
        socket.send(split[index : index + 1])
        await socket.writer.drain()
    socket.send(b"".join(socket.frame(_TEXT, _text(f"packed {n}", f"c-{n}")) for n in (1, 2, 3)))
    acks = []
    while len(acks) < 4:
        frame = await socket.read_json()
        if frame["type"] == "ack":
            acks.append((frame["client_id"], frame["seq"]))
    assert acks == [("c-0", 1), ("c-1", 2), ("c-2", 3), ("c-3", 4)]
    socket.close()


async def test_fragments_over_the_frame_limit_close_1009_and_store_nothing(
    gateway: TestClient[Any, Any], pg_pool: asyncpg.Pool, make_settings: Any
) -> None:
    limit = make_settings().ws_max_frame_bytes
    channel_id, (alice,) = await room(gateway, "alice")
    socket, _ = await RawSocket.open(gateway, alice, channel_id)
    part = b" " * 60_000  # each fragment is under the limit; the message is not
    for opcode in (_TEXT, _CONTINUATION):
        socket.send(socket.frame(opcode, part, final=False))
    assert 2 * len(part) > limit
    assert await socket.read_close() == 1009
    assert await _stored(pg_pool, channel_id) == 0


async def test_client_close_is_echoed_then_the_server_ends_the_connection(
    gateway: TestClient[Any, Any],
) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    socket, _ = await RawSocket.open(gateway, alice, channel_id)
    socket.send(socket.frame(_CLOSE, (4000).to_bytes(2, "big") + b"bye"))
    assert await socket.read_close() == 4000
