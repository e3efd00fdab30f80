"""The multiplexed socket's budgets of `subscribe` and `read` frames: a flood is refused
before it costs a PostgreSQL query or a Redis call, and a socket that keeps flooding
is closed with 4429."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import asyncpg
import orjson
from redis.asyncio import Redis

from tests.gateway.api_client import RECEIVE_TIMEOUT, connect, room, send_texts
from tests.gateway.conftest import MakeGateway
from tests.gateway.test_mux import open_mux, put, receive_json

# Capacity: WS_MAX_SUBSCRIPTIONS + the rate = 5 frames; no refill within a test.
_TIGHT = {"ws_max_subscriptions": 3, "ws_frame_rate_window_seconds": 3600}


async def _reset_redis_stats(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        await client.config_resetstat()
    finally:
        await client.aclose()


async def _redis_reads(redis_url: str) -> int:
    """GETs Redis has run since the last reset: a subscribe reads the channel's head
    with one, a read frame the channel's counter with one."""
    client = Redis.from_url(redis_url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


async def _replies_until_unsubscribed(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    """Every frame up to the `unsubscribed` that answers the marker sent after a flood
    (frames are answered in order)."""
    replies: list[dict[str, Any]] = []
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        while (frame := await receive_json(ws))["type"] != "unsubscribed":
            replies.append(frame)
    return replies


async def _channel_with_messages(gateway: Any, count: int) -> tuple[int, Any]:
    channel_id, (alice,) = await room(gateway, "alice")
    # Seeds the channel's counter: a head read is one GET from then on.
    await send_texts(await connect(gateway, alice, channel_id), count, "m")
    return channel_id, alice


async def _subscribe_flood(
    make_gateway: MakeGateway, redis_url: str, count: int, *, close_after: int
) -> tuple[aiohttp.ClientWebSocketResponse, int]:
    """Alice's socket after `count` subscribes to her channel at once (a budget of 5,
    Redis's counts reset just before), and the channel."""
    gateway = await make_gateway(
        **_TIGHT, ws_subscribe_rate=2, ws_message_rate_close_after=close_after
    )
    channel_id, alice = await _channel_with_messages(gateway, 1)
    mux = await open_mux(gateway, alice)
    await _reset_redis_stats(redis_url)
    for _ in range(count):
        await put(mux, type="subscribe", channel_id=channel_id)
    return mux, channel_id


async def test_a_subscribe_flood_is_refused_before_postgresql_or_redis(
    make_gateway: MakeGateway, redis_url: str
) -> None:
    mux, channel_id = await _subscribe_flood(make_gateway, redis_url, 30, close_after=100)
    await put(mux, type="unsubscribe", channel_id=channel_id)
    replies = await _replies_until_unsubscribed(mux)

    assert [reply["type"] for reply in replies].count("subscribed") == 5
    refused = [reply for reply in replies if reply["type"] == "error"]
    assert len(refused) == 25
    assert {(reply["code"], reply["channel_id"]) for reply in refused} == {
        ("rate_limited", channel_id)
    }
    assert all(reply["retry_after_ms"] > 0 for reply in refused)
    assert refused[0]["message"] == "Too many subscribes, slow down"
    assert await _redis_reads(redis_url) == 5  # the 25 refused never read the head
    assert not mux.closed


async def test_a_read_flood_never_reaches_postgresql(
    make_gateway: MakeGateway, redis_url: str, pg_pool: asyncpg.Pool
) -> None:
    gateway = await make_gateway(**_TIGHT, ws_read_rate=2, ws_message_rate_close_after=100)
    channel_id, alice = await _channel_with_messages(gateway, 30)
    mux = await open_mux(gateway, alice)
    await _reset_redis_stats(redis_url)

    for seq in range(1, 31):  # each would move the marker one further
        await put(mux, type="read", channel_id=channel_id, seq=seq)
    await put(mux, type="unsubscribe", channel_id=channel_id)
    replies = await _replies_until_unsubscribed(mux)

    assert len(replies) == 25
    assert {(reply["code"], reply["channel_id"]) for reply in replies} == {
        ("rate_limited", channel_id)
    }
    marker = await pg_pool.fetchval(
        "SELECT last_read_seq FROM memberships WHERE channel_id = $1 AND user_id = $2",
        channel_id,
        alice.user_id,
    )
    assert marker == 5  # only the first five frames were written
    assert await _redis_reads(redis_url) == 5


async def test_a_socket_that_keeps_subscribing_over_its_budget_is_closed_4429(
    make_gateway: MakeGateway, redis_url: str
) -> None:
    mux, _ = await _subscribe_flood(make_gateway, redis_url, 200, close_after=3)
    subscribed, last_error = 0, None
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        while (message := await mux.receive()).type is aiohttp.WSMsgType.TEXT:
            frame = orjson.loads(message.data)
            subscribed += frame["type"] == "subscribed"
            last_error = frame if frame["type"] == "error" else last_error

    assert message.type is aiohttp.WSMsgType.CLOSE
    assert mux.close_code == 4429
    assert subscribed == 5
    assert last_error is not None
    assert last_error["code"] == "rate_limited"
    assert await _redis_reads(redis_url) == 5


async def test_read_frames_are_off_the_budget_when_the_rate_is_0(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(**_TIGHT, ws_read_rate=0)
    channel_id, alice = await _channel_with_messages(gateway, 1)
    mux = await open_mux(gateway, alice)
    for _ in range(50):
        await put(mux, type="read", channel_id=channel_id, seq=1)
    await put(mux, type="unsubscribe", channel_id=channel_id)
    assert await _replies_until_unsubscribed(mux) == []
    await put(mux, type="subscribe", channel_id=10**9)  # the socket is still open
    assert (await receive_json(mux))["code"] == "channel_not_found"
