"""Hostile input on the multiplexed socket: what PostgreSQL cannot store in every string
field of every frame type, deep nesting, huge numbers, unknown types, fragmented
messages, a frame handler failing unexpectedly, and events racing a subscribe."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import asyncpg
import orjson
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from gateway.app_keys import HUB, KEYS
from tests.gateway import api_client
from tests.gateway.api_client import RECEIVE_TIMEOUT, eventually, room
from tests.gateway.conftest import MakeGateway
from tests.gateway.raw_websocket import CONTINUATION, PING, TEXT, RawSocket
from tests.gateway.test_mux import (
    close_code_of,
    next_error,
    open_mux,
    put,
    send_text,
    subscribe,
)
from tests.gateway.test_resume import _messages_locked

_TEXT_BODY = {"type": "text", "content": "hello"}
_FILE_BODY = {
    "type": "file",
    "file_id": "f-1",
    "filename": "a.png",
    "mime_type": "image/png",
    "url": "https://files.example/a.png",
    "size_in_bytes": 10,
}


def _frames(channel_id: int) -> list[dict[str, Any]]:
    """One valid frame of every type the client sends."""
    return [
        {"type": "subscribe", "channel_id": channel_id, "since": 0},
        {"type": "unsubscribe", "channel_id": channel_id},
        {"type": "typing", "channel_id": channel_id},
        {"type": "read", "channel_id": channel_id, "seq": 0},
        {"type": "send", "channel_id": channel_id, "body": _TEXT_BODY, "client_id": "c-1"},
        {"type": "send", "channel_id": channel_id, "body": _FILE_BODY, "client_id": "c-2"},
    ]


def _string_paths(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path of every string in a frame, nested bodies included."""
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _string_paths(item, (*path, key))


def _with(frame: dict[str, Any], path: tuple[str, ...], text: str) -> dict[str, Any]:
    copy = json.loads(json.dumps(frame))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = text
    return copy


def _unstorable(channel_id: int) -> Iterator[tuple[str, bytes]]:
    """Each frame type with U+0000 or an escaped lone surrogate in one string field
    (at its start, middle and end), and as a key of its own."""
    for frame in _frames(channel_id):
        for path in _string_paths(frame):
            original = _with(frame, path, "")
            for bad in ("\x00", "\ud800", "\udfff"):
                for text in (bad, f"a{bad}b", f"{_value(frame, path)}{bad}"):
                    # json.dumps escapes both as \u0000 / \ud800: JSON that is valid.
                    yield ".".join(path), json.dumps(_with(original, path, text)).encode()
        yield "key", json.dumps({**frame, "\x00": 1}).encode()
        yield "key", json.dumps({**frame, "\ud800": 1}).encode()


def _value(frame: dict[str, Any], path: tuple[str, ...]) -> str:
    value: Any = frame
    for key in path:
        value = value[key]
    assert isinstance(value, str)
    return value


async def _nothing_changed(
    gateway: TestClient[Any, Any], pg_pool: asyncpg.Pool, redis_url: str, channel_id: int
) -> None:
    stored = await pg_pool.fetchval(
        "SELECT count(*) FROM messages WHERE channel_id = $1", channel_id
    )
    markers = await pg_pool.fetchval(
        "SELECT max(last_read_seq) FROM memberships WHERE channel_id = $1", channel_id
    )
    client = Redis.from_url(redis_url)
    try:
        counter = await client.get(gateway.app[KEYS].channel_seq(channel_id))
    finally:
        await client.aclose()
    assert (stored, markers, counter) == (0, 0, None)


async def test_unstorable_strings_in_every_field_of_every_frame_are_invalid_body(
    make_gateway: MakeGateway, pg_pool: asyncpg.Pool, redis_url: str
) -> None:
    gateway = await make_gateway()
    channel_id, (alice,) = await room(gateway, "alice")
    mux = await open_mux(gateway, alice)
    hostile = list(_unstorable(channel_id))
    assert len(hostile) > 100  # every string of every frame type

    for field, payload in hostile:
        await mux.send_str(payload.decode())
        refused = await next_error(mux)
        assert refused["code"] == "invalid_body", (field, payload)
        assert "channel_id" not in refused  # refused before its channel was read

    await _nothing_changed(gateway, pg_pool, redis_url, channel_id)
    assert gateway.app[HUB].channel_count == 0  # no subscribe got through either
    await subscribe(mux, channel_id)  # still open, and works


async def test_raw_control_characters_are_invalid_json(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway()
    channel_id, (alice,) = await room(gateway, "alice")
    socket, _ = await RawSocket.connect(gateway.server, f"/api/v1/ws?token={alice.token}")
    for raw in (b"\x00", b"\x01", b"\x1f", b"\n"):
        frame = b'{"type":"subscribe%b","channel_id":%d}' % (raw, channel_id)
        socket.send(socket.frame(TEXT, frame))
        assert (await socket.read_json())["code"] == "invalid_json", raw
    socket.close()


def _frame(kind: bytes, channel_id: int | bytes, rest: bytes = b"") -> bytes:
    """A frame of `kind` with `channel_id` as given (JSON text when bytes) and `rest`."""
    channel = channel_id if isinstance(channel_id, bytes) else b"%d" % channel_id
    return b'{"type":"%b","channel_id":%b%b}' % (kind, channel, rest)


def _send_with(channel_id: int, extra: bytes) -> bytes:
    """A text send with one more field, `n`, in its body."""
    body = b'{"type":"text","content":"x","n":%b}' % extra
    return b'{"type":"send","channel_id":%d,"body":%b}' % (channel_id, body)


async def test_deep_nesting_huge_numbers_and_unknown_types_are_refused(
    make_gateway: MakeGateway, pg_pool: asyncpg.Pool, redis_url: str
) -> None:
    gateway = await make_gateway()
    channel_id, (alice,) = await room(gateway, "alice")
    mux = await open_mux(gateway, alice)
    deep = b"[" * 4000 + b"]" * 4000
    hostile: list[tuple[bytes, set[str]]] = [
        # Nesting inside frames that are otherwise valid.
        (_send_with(channel_id, deep), {"invalid_json"}),
        (_send_with(channel_id, b'{"a":' * 120 + b"1" + b"}" * 120), {"invalid_body"}),
        (_frame(b"subscribe", channel_id, b',"since":' + deep), {"invalid_json"}),
        # Numbers no field holds.
        (_frame(b"subscribe", b"9" * 4000), {"invalid_body", "invalid_json"}),
        (_frame(b"subscribe", 2**53 + 1), {"invalid_body"}),
        (_frame(b"subscribe", 2**64), {"invalid_body"}),
        (_frame(b"subscribe", -(2**64)), {"invalid_body"}),
        (_frame(b"subscribe", b"1e400"), {"invalid_body", "invalid_json"}),
        (_frame(b"subscribe", b"1.5"), {"invalid_body"}),
        (_frame(b"subscribe", b"-0"), {"invalid_body"}),
        (_frame(b"subscribe", b"NaN"), {"invalid_body", "invalid_json"}),
        (_frame(b"subscribe", b"Infinity"), {"invalid_body", "invalid_json"}),
        (_frame(b"subscribe", channel_id, b',"since":%d' % (2**53 + 1)), {"invalid_body"}),
        (_frame(b"read", channel_id, b',"seq":' + b"9" * 400), {"invalid_body", "invalid_json"}),
        (_frame(b"read", channel_id, b',"seq":1e308'), {"invalid_body"}),
        (_frame(b"read", channel_id, b',"seq":-1'), {"invalid_body"}),
        # Types the client may not send, or that do not exist.
        *(
            (b'{"type":%b,"channel_id":%d}' % (kind, channel_id), {"invalid_body"})
            for kind in (
                b"null",
                b"1",
                b"true",
                b'""',
                b'"SUBSCRIBE"',
                b'" subscribe"',
                b'"message"',
                b'"ack"',
                b'"subscribed"',
                b'"error"',
                b'"presence"',
                b'["subscribe"]',
                b'{"type":"subscribe"}',
            )
        ),
        (b'{"type":"subscribe","type":"dance","channel_id":%d}' % channel_id, {"invalid_body"}),
        (b"{}", {"invalid_body"}),
        (b"null", {"invalid_body"}),
        (b"1", {"invalid_body"}),
        (b"", {"invalid_json"}),
    ]
    for payload, codes in hostile:
        await mux.send_str(payload.decode())
        assert (await next_error(mux))["code"] in codes, payload[:80]

    await _nothing_changed(gateway, pg_pool, redis_url, channel_id)
    assert gateway.app[HUB].channel_count == 0


async def test_fragmented_frames_are_reassembled_and_bounded(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(ws_max_fragments=4)
    channel_id, (alice,) = await room(gateway, "alice")
    socket, _ = await RawSocket.connect(gateway.server, f"/api/v1/ws?token={alice.token}")
    subscribe_frame = orjson.dumps({"type": "subscribe", "channel_id": channel_id})
    first, second, rest = subscribe_frame[:5], subscribe_frame[5:9], subscribe_frame[9:]
    socket.send(socket.frame(TEXT, first, final=False))
    socket.send(socket.frame(PING, b"between"))  # control frames may come between fragments
    socket.send(socket.frame(CONTINUATION, second, final=False))
    socket.send(socket.frame(CONTINUATION, rest))
    assert (await _read_json_of(socket, "subscribed"))["channel_id"] == channel_id

    # A character cut between fragments is still one character.
    encoded = orjson.dumps(
        {"type": "send", "channel_id": channel_id, "body": {"type": "text", "content": "é"}}
    )
    cut = encoded.index("é".encode()) + 1
    socket.send(socket.frame(TEXT, encoded[:cut], final=False))
    socket.send(socket.frame(CONTINUATION, encoded[cut:]))
    message = await _read_json_of(socket, "message")
    assert message["body"]["content"] == "é"

    # More fragments than WS_MAX_FRAGMENTS close the socket (1009), whatever they hold.
    socket.send(socket.frame(TEXT, b"{", final=False))
    for _ in range(4):
        socket.send(socket.frame(CONTINUATION, b" ", final=False))
    assert await socket.read_close() == 1009


async def _read_json_of(socket: RawSocket, frame_type: str) -> dict[str, Any]:
    """The next text frame of `frame_type`, skipping pongs and other frames."""
    while True:
        opcode, payload = await socket.read_frame()
        if opcode == TEXT and (frame := orjson.loads(payload))["type"] == frame_type:
            return dict(frame)


@contextlib.asynccontextmanager
async def _read_markers_fail(database_dsn: str, channel_id: int) -> AsyncIterator[None]:
    """Every marker update in the channel raises in PostgreSQL: an error no frame
    handler expects (not an outage, not a refusal)."""
    name = f"refuse_marks_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(database_dsn)
    try:
        await admin.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'unexpected'; END $$"
        )
        await admin.execute(
            f"CREATE TRIGGER {name} BEFORE UPDATE ON memberships FOR EACH ROW"
            f" WHEN (NEW.channel_id = {int(channel_id)}) EXECUTE FUNCTION {name}()"
        )
        yield
    finally:
        await admin.execute(f"DROP TRIGGER IF EXISTS {name} ON memberships")
        await admin.execute(f"DROP FUNCTION IF EXISTS {name}()")
        await admin.close()


async def test_a_frame_failing_unexpectedly_closes_1011_and_nothing_hangs(
    make_gateway: MakeGateway, database_dsn: str
) -> None:
    gateway = await make_gateway()
    channel_id, (alice, bob) = await room(gateway, "alice", "bob")
    mux = await open_mux(gateway, alice)
    watcher = await open_mux(gateway, bob)
    await subscribe(mux, channel_id)
    await subscribe(watcher, channel_id)
    await send_text(mux, channel_id, "before", "c-0")
    await api_client.receive_each(mux, "ack", "message")
    hub = gateway.app[HUB]

    async with _read_markers_fail(database_dsn, channel_id):
        await put(mux, type="read", channel_id=channel_id, seq=1)
        await send_text(mux, channel_id, "after the failure", "c-1")  # waits behind it
        assert await close_code_of(mux) == 1011

    async def left_the_hub() -> bool:
        return hub.connection_count == 1  # bob's socket only

    await eventually(left_the_hub)
    # Frames read before the close still run, as on any close (a send read is made
    # durable; its ack is dropped): none waits forever behind the failed one.
    seen = await _messages_until_offline(watcher, alice.user_id)
    assert [(frame["seq"], frame["body"]["content"]) for frame in seen] == [
        (1, "before"),
        (2, "after the failure"),
    ]
    await send_text(watcher, channel_id, "still serving", "c-2")
    assert (await api_client.receive_until(watcher, "ack"))["seq"] == 3


async def _messages_until_offline(
    ws: aiohttp.ClientWebSocketResponse, user_id: int
) -> list[dict[str, Any]]:
    """The messages that arrive before the presence event saying `user_id` went offline."""
    messages = []
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        while True:
            frame = await api_client.receive_json(ws)
            if frame["type"] == "message":
                messages.append(frame)
            elif (frame["type"], frame.get("user_id"), frame.get("status")) == (
                "presence",
                user_id,
                "offline",
            ):
                return messages


async def _offline(ws: aiohttp.ClientWebSocketResponse, user_id: int) -> None:
    """Wait for the presence event saying `user_id` went offline."""
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        while True:
            frame = await api_client.receive_until(ws, "presence")
            if (frame.get("user_id"), frame.get("status")) == (user_id, "offline"):
                return


async def test_no_event_reaches_a_subscription_before_its_subscribed_frame(
    make_gateway: MakeGateway, database_dsn: str
) -> None:
    """Events offered to a subscription in the hub whose `subscribed` frame is not yet
    queued (it waits for the channel's head) are dropped: a client must never see a
    channel's events before it knows it is subscribed."""
    gateway = await make_gateway()
    channel_id, (alice, bob, carol) = await room(gateway, "alice", "bob", "carol")
    # The gateway holds the channel already: alice's subscribe enters the hub at once.
    watcher = await open_mux(gateway, bob)
    leaver = await open_mux(gateway, carol)
    await subscribe(watcher, channel_id)
    await subscribe(leaver, channel_id)
    mux = await open_mux(gateway, alice)
    hub = gateway.app[HUB]

    async def alice_in_the_hub() -> bool:
        return alice.user_id in hub._event_takers.get(channel_id, {})

    # The channel has no counter yet: its head is read from PostgreSQL, which waits.
    async with _messages_locked(database_dsn):
        await put(mux, type="subscribe", channel_id=channel_id)
        await eventually(alice_in_the_hub)
        await put(watcher, type="typing", channel_id=channel_id)
        await leaver.close()
        # Both reached this gateway's event takers, alice's pending subscription too.
        assert (await api_client.receive_until(watcher, "typing"))["user_id"] == bob.user_id
        await _offline(watcher, carol.user_id)

    first = await api_client.receive_json(mux)
    assert first["type"] == "subscribed", first
    await send_text(watcher, channel_id, "after", "c-1")
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        while (frame := await api_client.receive_json(mux))["type"] != "message":
            # Only alice's own presence may come: it follows her subscription.
            assert (frame["type"], frame.get("user_id")) == ("presence", alice.user_id), frame
