"""A deliberately minimal WebSocket client that writes exactly the bytes a test asks for.

The gateway parses WebSocket frames itself once upgraded (gateway/websocket.py),
so its tests send what a well-behaved client library never would: unmasked
frames, reserved bits, stray continuations, floods of tiny frames.
"""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import orjson
from aiohttp.test_utils import BaseTestServer, TestClient

from tests.gateway.api_client import RECEIVE_TIMEOUT, Account

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


class RawSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(
        cls, gateway: TestClient[Any, Any], account: Account, channel_id: int, *, key: str = ""
    ) -> tuple[RawSocket, bytes]:
        """Connect to a chat socket and upgrade; returns the socket and the server's 101 head."""
        path = f"/api/v1/chat/{channel_id}?token={account.token}"
        return await cls.connect(gateway.server, path, key=key)

    @classmethod
    async def connect(
        cls, server: BaseTestServer[Any], path: str, *, key: str = ""
    ) -> tuple[RawSocket, bytes]:
        """Connect to `path` on `server` and upgrade; returns the socket and the 101 head."""
        reader, writer = await asyncio.open_connection(server.host, server.port)
        key = key or base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\n"
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
        mask_bit = 0x80 if masked else 0
        size = len(payload)
        if size < 126:
            header = bytes((first, mask_bit | size))
        elif size < 65536:
            header = bytes((first, mask_bit | 126)) + size.to_bytes(2, "big")
        else:
            header = bytes((first, mask_bit | 127)) + size.to_bytes(8, "big")
        if not masked:
            return header + payload
        mask = os.urandom(4)
        key = (mask * (size // 4 + 1))[:size]
        masked_payload = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(
            size, "big"
        )
        return header + mask + masked_payload

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
        assert opcode == TEXT, (opcode, payload)
        frame: dict[str, Any] = orjson.loads(payload)
        return frame

    async def read_close(self, *, answer: bool = False) -> int:
        """The close code of the server's close frame, skipping frames before it; then EOF.

        With `answer`, the close is answered as a client would, for a server
        that closed normally and waits for the peer's close frame.
        """
        while True:
            opcode, payload = await self.read_frame()
            if opcode == CLOSE:
                break
        if answer:
            self.send(self.frame(CLOSE, payload[:2]))
        async with asyncio.timeout(RECEIVE_TIMEOUT):
            assert await self.reader.read() == b"", "the server ends the TCP connection"
        self.close()
        return int.from_bytes(payload[:2], "big")

    def close(self) -> None:
        self.writer.close()
