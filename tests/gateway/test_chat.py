"""The chat socket over real WebSockets, with two gateways sharing one Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import aiohttp
import asyncpg
import jwt
import orjson
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from gateway.app_keys import HUB
from shared.redis_keys import RedisKeys
from shared.settings import Settings
from tests.gateway.api_client import (
    FILE_BODY,
    connect,
    create_channel,
    eventually,
    expect_refusal,
    receive_each,
    receive_json,
    receive_messages,
    receive_until,
    room,
    send_texts,
    signup,
    subscriber_count,
)
from tests.gateway.conftest import MakeGateway

MESSAGE_FIELDS = {
    "type",
    "id",
    "seq",
    "user_id",
    "channel_id",
    "body",
    "client_id",
    "created_at",
    "user",
}


async def test_message_reaches_every_member_on_both_gateways(make_gateway: MakeGateway) -> None:
    """Regression: admission used to finish after the 101 answer, so a message sent
    as soon as another member's socket opened could be published before that
    socket was subscribed, and never reach it."""
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    ws_alice = await connect(gateway_a, alice, channel_id)
    ws_bob = await connect(gateway_b, bob, channel_id)

    await ws_alice.send_str('{"type": "text", "content": "Hello", "client_id": "c-1"}')

    ack, own_copy = await receive_each(ws_alice, "ack", "message")
    received = await receive_until(ws_bob, "message")
    assert ack["success"] is True
    assert ack["message"] == "Message sent successfully"
    assert (ack["id"], ack["seq"], ack["client_id"]) == (received["id"], 1, "c-1")
    assert own_copy == received
    assert set(received) == MESSAGE_FIELDS
    assert received["user_id"] == alice.user_id
    assert received["channel_id"] == channel_id
    assert received["body"] == {"type": "text", "content": "Hello"}
    assert received["user"] == {
        "id": alice.user_id,
        "name": "Alice",
        "username": "alice",
        "avatar_url": None,
    }
    created = dt.datetime.fromisoformat(received["created_at"])
    assert abs(dt.datetime.now(dt.UTC) - created) < dt.timedelta(seconds=30)


async def test_messages_arrive_in_seq_order_both_ways(make_gateway: MakeGateway) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    ws_alice = await connect(gateway_a, alice, channel_id)
    ws_bob = await connect(gateway_b, bob, channel_id)
    for index in range(20):
        sender = ws_alice if index % 2 == 0 else ws_bob
        await sender.send_str(orjson.dumps({"type": "text", "content": f"m{index}"}).decode())

    for ws in (ws_alice, ws_bob):
        frames = [await receive_until(ws, "message") for _ in range(20)]
        assert [frame["seq"] for frame in frames] == list(range(1, 21))
        ids = [frame["id"] for frame in frames]
        assert ids == sorted(ids)
        assert len(set(ids)) == 20


async def test_file_message_keeps_the_go_fields(gateway: TestClient[Any, Any]) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    ws = await connect(gateway, alice, channel_id)
    body = FILE_BODY
    await ws.send_str(orjson.dumps(body).decode())
    assert (await receive_until(ws, "message"))["body"] == body


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b'{"type": "text", "content": ', "invalid_json"),
        (b'{"type": "text", "content": 5}', "invalid_body"),
        (b'{"type": "video", "content": "x"}', "invalid_body"),
        (b'{"type": "text", "content": "   "}', "invalid_body"),
        (b'{"type": "text", "content": "x", "extra": 1}', "invalid_body"),
        (b'{"type": "text", "content": "x", "client_id": "has space"}', "invalid_body"),
        (
            b'{"type": "file", "file_id": "f", "filename": "a", "mime_type": "text/plain", '
            b'"url": "javascript:alert(1)", "size_in_bytes": 1}',
            "invalid_body",
        ),
        (b"[]", "invalid_body"),
        (b'{"type": "text", "content": "' + b"x" * 10_300 + b'"}', "message_too_large"),
    ],
)
async def test_bad_frame_gets_error_and_socket_stays_usable(
    gateway: TestClient[Any, Any], pg_pool: asyncpg.Pool, payload: bytes, code: str
) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    ws = await connect(gateway, alice, channel_id)
    await ws.send_str(payload.decode())

    error = await receive_json(ws)
    assert (error["type"], error["success"], error["code"]) == ("error", False, code)
    assert all(not detail["field"].startswith("text.") for detail in error.get("errors", []))
    await ws.send_str('{"type": "text", "content": "still here"}')
    ack = await receive_until(ws, "ack")
    assert ack["seq"] == 1  # the bad frame consumed no sequence number


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b'{"type": "text", "content": "nul \\u0000 inside"}', "content"),
        (b'{"type": "text", "content": "lone \\ud800 surrogate"}', "content"),
        (b'{"type": "text", "content": "\\udc00"}', "content"),
        (
            b'{"type": "file", "file_id": "f\\u0000", "filename": "a", "mime_type": "a/b", '
            b'"url": "https://x.example/a", "size_in_bytes": 1}',
            "file_id",
        ),
        (
            b'{"type": "file", "file_id": "f", "filename": "a", "mime_type": "a/b", '
            b'"url": "https://x.example/a", "size_in_bytes": 9007199254740992}',
            "size_in_bytes",
        ),
    ],
)
async def test_frame_postgres_cannot_store_is_refused_before_redis(
    gateway: TestClient[Any, Any], make_settings: Any, redis_url: str, payload: bytes, field: str
) -> None:
    """Regression: a text holding U+0000 was acknowledged and delivered live, then
    never stored (jsonb refuses it), and a resume across it reported history_gap."""
    channel_id, (alice,) = await room(gateway, "alice")
    ws = await connect(gateway, alice, channel_id)
    await ws.send_str(payload.decode())

    error = await receive_json(ws)
    assert (error["type"], error["code"]) == ("error", "invalid_body")
    assert [detail["field"] for detail in error["errors"]] == [field]
    settings = make_settings()
    keys = RedisKeys(settings.redis_key_prefix, settings.redis_partitions)
    redis = Redis.from_url(redis_url)
    try:
        assert await redis.xlen(keys.ingest_stream_of(channel_id)) == 0
        assert await redis.xlen(keys.channel_recent(channel_id)) == 0
    finally:
        await redis.aclose()
    await ws.send_str('{"type": "text", "content": "next"}')
    assert (await receive_until(ws, "ack"))["seq"] == 1  # refused: no ack, no seq spent


async def test_frame_over_the_hard_limit_closes_with_1009(gateway: TestClient[Any, Any]) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    ws = await connect(gateway, alice, channel_id)
    await ws.send_str("x" * 70_000)
    closing = await ws.receive(timeout=5)
    assert closing.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 1009


def _token(settings: Settings, **claims: Any) -> str:
    now = dt.datetime.now(dt.UTC)
    base = {"user_id": 1, "username": "alice", "exp": now + dt.timedelta(hours=1)}
    return jwt.encode({**base, **claims}, settings.jwt_secret.get_secret_value(), "HS256")


async def test_refusals_send_error_frame_then_44xx_close(
    gateway: TestClient[Any, Any], make_settings: Any
) -> None:
    channel_id, (alice, _bob) = await room(gateway, "alice", "bob")
    stranger = await signup(gateway, "mallory")
    settings = make_settings()
    expired = _token(settings, user_id=alice.user_id, exp=dt.datetime.now(dt.UTC))
    forged = jwt.encode({"user_id": alice.user_id, "exp": 9999999999}, "x" * 40, "HS256")
    cases = [
        (f"/api/v1/chat/{channel_id}", {}, "missing_token", 4400),
        (f"/api/v1/chat/{channel_id}?token=garbage", {}, "invalid_token", 4401),
        (f"/api/v1/chat/{channel_id}?token={expired}", {}, "invalid_token", 4401),
        (f"/api/v1/chat/{channel_id}?token={forged}", {}, "invalid_token", 4401),
        (f"/api/v1/chat/999?token={alice.token}", {}, "channel_not_found", 4404),
        (f"/api/v1/chat/abc?token={alice.token}", {}, "invalid_parameter", 4400),
        (f"/api/v1/chat/{channel_id}?token={stranger.token}", {}, "not_a_member", 4403),
        (
            f"/api/v1/chat/{channel_id}?token={alice.token}",
            {"Origin": "https://evil.example"},
            "origin_not_allowed",
            4403,
        ),
    ]
    for path, headers, code, close_code in cases:
        ws = await gateway.ws_connect(path, headers=headers)
        frame, closed_with = await expect_refusal(ws)
        assert (frame["code"], closed_with) == (code, close_code), path
        assert frame["success"] is False


async def test_allowed_origin_is_admitted(gateway: TestClient[Any, Any]) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    ws = await connect(gateway, alice, channel_id, headers={"Origin": "http://allowed.test"})
    await ws.send_str('{"type": "text", "content": "hi"}')
    assert (await receive_until(ws, "ack"))["seq"] == 1


async def test_flood_is_refused_with_rate_limited_frames(make_gateway: MakeGateway) -> None:
    gateway_a, gateway_b = (
        await make_gateway(ws_message_rate=3),
        await make_gateway(ws_message_rate=3),
    )
    channel_id, (alice,) = await room(gateway_a, "alice")
    ws_a = await connect(gateway_a, alice, channel_id)
    ws_b = await connect(gateway_b, alice, channel_id)
    # The limit is per user and channel, shared by every socket on every gateway.
    for ws in (ws_a, ws_b, ws_a):
        await ws.send_str('{"type": "text", "content": "ok"}')
        assert (await receive_until(ws, "ack"))["success"] is True
    await ws_b.send_str('{"type": "text", "content": "one too many"}')
    error = await receive_until(ws_b, "error")
    assert error["code"] == "rate_limited"
    assert 0 < error["retry_after_ms"] <= 10_000


async def test_resent_client_id_returns_the_original(gateway: TestClient[Any, Any]) -> None:
    channel_id, (alice, bob) = await room(gateway, "alice", "bob")
    ws_alice = await connect(gateway, alice, channel_id)
    ws_bob = await connect(gateway, bob, channel_id)
    frame = '{"type": "text", "content": "once", "client_id": "retry-1"}'
    await ws_alice.send_str(frame)
    first = await receive_until(ws_alice, "ack")
    await ws_alice.send_str(frame)
    second = await receive_until(ws_alice, "ack")
    await ws_alice.send_str('{"type": "text", "content": "next"}')

    assert (second["id"], second["seq"]) == (first["id"], first["seq"])
    assert "duplicate" not in first
    assert second["duplicate"] is True
    delivered = [await receive_until(ws_bob, "message") for _ in range(2)]
    assert [m["body"]["content"] for m in delivered] == ["once", "next"]
    assert [m["seq"] for m in delivered] == [1, 2]


async def test_leaving_closes_the_users_sockets_on_every_gateway(
    make_gateway: MakeGateway,
) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    ws_bob = await connect(gateway_b, bob, channel_id)
    ws_alice = await connect(gateway_b, alice, channel_id)
    await ws_alice.send_str('{"type": "text", "content": "both admitted"}')
    await receive_until(ws_alice, "ack")
    await receive_until(ws_bob, "message")
    response = await gateway_a.post(
        "/api/v1/channels/leave", json={"channel_id": channel_id}, headers=bob.auth
    )
    assert response.status == 200
    closing = await ws_bob.receive(timeout=5)
    assert closing.type is aiohttp.WSMsgType.CLOSE
    assert ws_bob.close_code == 4403
    await ws_alice.send_str('{"type": "text", "content": "still open"}')
    assert (await receive_until(ws_alice, "ack"))["seq"] == 2


async def test_one_subscription_per_channel_dropped_with_the_last_member(
    gateway: TestClient[Any, Any], make_settings: Any, redis_url: str
) -> None:
    channel_id, (alice, bob) = await room(gateway, "alice", "bob")
    settings = make_settings()
    topic = RedisKeys(settings.redis_key_prefix, settings.redis_partitions).channel_topic(
        channel_id
    )
    ws_alice = await connect(gateway, alice, channel_id)
    ws_bob = await connect(gateway, bob, channel_id)
    assert await subscriber_count(redis_url, topic) == 1
    await ws_alice.close()
    await ws_bob.send_str('{"type": "text", "content": "x"}')  # bob still receives
    assert (await receive_until(ws_bob, "message"))["seq"] == 1
    assert await subscriber_count(redis_url, topic) == 1
    await ws_bob.close()

    async def unsubscribed() -> bool:
        return await subscriber_count(redis_url, topic) == 0

    await eventually(unsubscribed)


async def test_seq_resumes_above_stored_messages_after_redis_loses_the_counter(
    gateway: TestClient[Any, Any], pg_pool: asyncpg.Pool, make_settings: Any, redis_url: str
) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    await pg_pool.execute(
        """INSERT INTO messages (id, channel_id, seq, user_id, body, created_at)
           SELECT s, $1, s, $2, '{"type": "text", "content": "old"}', now()
           FROM generate_series(1, 7) AS s""",
        channel_id,
        alice.user_id,
    )
    ws = await connect(gateway, alice, channel_id)
    await ws.send_str('{"type": "text", "content": "after restore"}')
    assert (await receive_until(ws, "ack"))["seq"] == 8


async def test_sends_keep_their_order_when_redis_forgets_the_send_script(
    gateway: TestClient[Any, Any], redis_url: str
) -> None:
    """A Redis that lost its scripts (restarted, or flushed) answers NOSCRIPT. The
    send that meets it is finished by EVAL, and the frames read behind it wait for it."""
    channel_id, (alice,) = await room(gateway, "alice")
    ws = await connect(gateway, alice, channel_id)
    before = await send_texts(ws, 5, "before")
    redis = Redis.from_url(redis_url)
    try:
        await redis.script_flush()
    finally:
        await redis.aclose()

    after = await send_texts(ws, 20, "after")  # raises on any error frame

    assert before.acked_seqs + after.acked_seqs == list(range(1, 26))


async def test_frames_sent_just_before_a_close_are_still_delivered(
    gateway: TestClient[Any, Any],
) -> None:
    """A client that sends and closes at once, without waiting for its acks: every
    frame the gateway read before the close is still made durable and delivered."""
    channel_id, (alice, bob) = await room(gateway, "alice", "bob")
    ws_bob = await connect(gateway, bob, channel_id)
    ws_alice = await connect(gateway, alice, channel_id)
    for index in range(30):
        await ws_alice.send_str(orjson.dumps({"type": "text", "content": f"m{index}"}).decode())
    await ws_alice.close()

    frames = await receive_messages(ws_bob, 30)
    assert [frame["seq"] for frame in frames] == list(range(1, 31))
    assert [frame["body"]["content"] for frame in frames] == [f"m{i}" for i in range(30)]


async def test_sockets_over_the_per_user_cap_are_refused(make_gateway: MakeGateway) -> None:
    gateway_a = await make_gateway(ws_max_sockets_per_user=2)
    gateway_b = await make_gateway(ws_max_sockets_per_user=2)
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    other_channel = await create_channel(gateway_a, alice, "other")
    first = await connect(gateway_a, alice, channel_id)
    await connect(gateway_a, alice, other_channel)  # the cap counts every channel

    frame, close_code = await expect_refusal(await connect(gateway_a, alice, channel_id))
    assert (frame["code"], close_code) == ("too_many_sockets", 4429)
    # Other users keep their own cap; another gateway keeps its own count.
    assert (await send_texts(await connect(gateway_a, bob, channel_id), 1, "b")).acked_seqs == [1]
    assert (await send_texts(await connect(gateway_b, alice, channel_id), 1, "a")).acked_seqs == [2]

    # A closed socket frees its place.
    await first.close()

    async def first_gone() -> bool:
        return gateway_a.app[HUB].connection_count == 2  # alice's other socket and bob's

    await eventually(first_gone)
    again = await connect(gateway_a, alice, channel_id)
    assert (await send_texts(again, 1, "again")).acked_seqs == [3]


async def test_concurrent_sockets_cannot_overshoot_the_per_user_cap(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(ws_max_sockets_per_user=2)
    channel_id, (alice, bob) = await room(gateway, "alice", "bob")
    sockets = await asyncio.gather(*(connect(gateway, alice, channel_id) for _ in range(6)))
    await send_texts(await connect(gateway, bob, channel_id), 1, "hello")

    # Admitted sockets get bob's message; refused ones got their error frame first.
    first_frames = [await receive_json(ws) for ws in sockets]
    codes = sorted(frame.get("code", frame["type"]) for frame in first_frames)
    assert codes == ["message"] * 2 + ["too_many_sockets"] * 4
