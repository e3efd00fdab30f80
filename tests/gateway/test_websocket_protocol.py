"""The chat socket's RFC 6455 layer, driven byte by byte over a raw TCP connection.

These tests send what a well-behaved client library never would: unmasked
frames, reserved bits, stray continuations, oversized control frames, bad
UTF-8, bad close codes, binary frames, and frames split at every byte or
packed many to a segment.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient

from tests.gateway.api_client import error_of, room
from tests.gateway.raw_websocket import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, RawSocket


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
        ("unmasked", lambda s: s.frame(TEXT, _text("x"), masked=False)),
        ("reserved bits", lambda s: s.frame(TEXT, _text("x"), rsv=0b100)),
        ("stray continuation", lambda s: s.frame(CONTINUATION, _text("x"))),
        ("long control frame", lambda s: s.frame(PING, b"p" * 126)),
        ("fragmented control frame", lambda s: s.frame(PING, b"p", final=False)),
        ("unknown opcode", lambda s: s.frame(0x3, b"")),
        (
            "message inside a message",
            lambda s: s.frame(TEXT, b"{", final=False) + s.frame(TEXT, _text("x")),
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
        socket.frame(TEXT, body[:5], final=False)
        + socket.frame(PING, b"are you there")
        + socket.frame(CONTINUATION, body[5:12], final=False)
        + socket.frame(CONTINUATION, body[12:])
    )
    assert await socket.read_frame() == (PONG, b"are you there")
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
    split = socket.frame(TEXT, _text("split", "c-0"))
    for index in range(len(split)):
        socket.send(split[index : index + 1])
        await socket.writer.drain()
    socket.send(b"".join(socket.frame(TEXT, _text(f"packed {n}", f"c-{n}")) for n in (1, 2, 3)))
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
    for opcode in (TEXT, CONTINUATION):
        socket.send(socket.frame(opcode, part, final=False))
    assert 2 * len(part) > limit
    assert await socket.read_close() == 1009
    assert await _stored(pg_pool, channel_id) == 0


async def test_client_close_is_echoed_then_the_server_ends_the_connection(
    gateway: TestClient[Any, Any],
) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    socket, _ = await RawSocket.open(gateway, alice, channel_id)
    socket.send(socket.frame(CLOSE, (4000).to_bytes(2, "big") + b"bye"))
    assert await socket.read_close() == 4000


async def test_binary_message_closes_1003_and_stores_nothing(
    gateway: TestClient[Any, Any], pg_pool: asyncpg.Pool
) -> None:
    """Binary frames used to be taken as chat messages; chat frames are JSON text."""
    channel_id, (alice,) = await room(gateway, "alice")
    socket, _ = await RawSocket.open(gateway, alice, channel_id)
    socket.send(socket.frame(BINARY, _text("as binary", "c-1")))
    assert await socket.read_close(answer=True) == 1003
    assert await _stored(pg_pool, channel_id) == 0


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("lone continuation byte", b'{"type": "text", "content": "\x80"}'),
        ("surrogate half", b'{"type": "text", "content": "\xed\xa0\x80"}'),
        ("overlong slash", b'{"type": "text", "content": "\xc0\xaf"}'),
        ("past U+10FFFF", b'{"type": "text", "content": "\xf4\x90\x80\x80"}'),
        ("cut short", b'{"type": "text", "content": "\xe2\x82"}'),
    ],
)
async def test_invalid_utf8_text_closes_1007_and_stores_nothing(
    gateway: TestClient[Any, Any], pg_pool: asyncpg.Pool, name: str, payload: bytes
) -> None:
    """Invalid UTF-8 used to get an error frame (invalid_json) and keep the socket open."""
    channel_id, (alice,) = await room(gateway, "alice")
    socket, _ = await RawSocket.open(gateway, alice, channel_id)
    socket.send(socket.frame(TEXT, payload))
    assert await socket.read_close() == 1007, name
    assert await _stored(pg_pool, channel_id) == 0


async def test_invalid_utf8_in_a_fragment_fails_before_the_message_ends(
    gateway: TestClient[Any, Any], pg_pool: asyncpg.Pool
) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    socket, _ = await RawSocket.open(gateway, alice, channel_id)
    # The first fragment ends inside a character; the second makes it invalid.
    # The final fragment is never sent: the close must not wait for it.
    socket.send(
        socket.frame(TEXT, b'{"type": "text", "content": "\xe2', final=False)
        + socket.frame(CONTINUATION, b"\x28 ok", final=False)
    )
    assert await socket.read_close() == 1007
    assert await _stored(pg_pool, channel_id) == 0


async def test_text_split_inside_a_character_is_reassembled(
    gateway: TestClient[Any, Any],
) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    socket, _ = await RawSocket.open(gateway, alice, channel_id)
    body = _text("h\u00e9llo \u20ac \U0001f600", "c-1")
    socket.send(
        b"".join(
            socket.frame(TEXT if index == 0 else CONTINUATION, body[index : index + 1], final=False)
            for index in range(len(body) - 1)
        )
        + socket.frame(CONTINUATION, body[-1:])
    )
    while (frame := await socket.read_json())["type"] != "message":
        assert frame["type"] == "ack", frame
    assert frame["body"]["content"] == "h\u00e9llo \u20ac \U0001f600"
    socket.close()


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("one byte", b"\x03"),
        ("reserved 1004", (1004).to_bytes(2, "big")),
        ("never sent 1005", (1005).to_bytes(2, "big")),
        ("unassigned 1016", (1016).to_bytes(2, "big")),
        ("unassigned 2999", (2999).to_bytes(2, "big")),
        ("past 4999", (5000).to_bytes(2, "big")),
        ("reason not UTF-8", (1000).to_bytes(2, "big") + b"bye \xff"),
    ],
)
async def test_bad_close_frame_is_answered_1002(
    gateway: TestClient[Any, Any], name: str, payload: bytes
) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    socket, _ = await RawSocket.open(gateway, alice, channel_id)
    socket.send(socket.frame(CLOSE, payload))
    assert await socket.read_close() == 1002, name


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 1014, 3000, 4999])
async def test_valid_close_code_is_echoed(gateway: TestClient[Any, Any], code: int) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    socket, _ = await RawSocket.open(gateway, alice, channel_id)
    socket.send(socket.frame(CLOSE, code.to_bytes(2, "big") + "fin \u00e9".encode()))
    assert await socket.read_close() == code
