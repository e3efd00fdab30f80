"""Typing indicators are limited per user and channel across every socket and gateway,
in one Redis round trip, and a flood on one socket never reaches Redis."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from gateway.app_keys import KEYS
from tests.gateway.api_client import eventually, receive_until, room
from tests.gateway.conftest import MakeGateway
from tests.gateway.test_message_budget import _script_calls
from tests.gateway.test_mux import open_mux, put, receive_json, send_text, subscribe

_TYPING = {"type": "typing", "expires_in_ms": 5000}


async def _marker_gone(
    gateway: TestClient[Any, Any], redis_url: str, channel_id: int, user_id: int
) -> bool:
    client = Redis.from_url(redis_url)
    try:
        return not await client.exists(gateway.app[KEYS].typing(channel_id, user_id))
    finally:
        await client.aclose()


async def test_one_user_typing_on_two_gateways_is_relayed_once_per_interval(
    make_gateway: MakeGateway, redis_url: str
) -> None:
    """Regression: the limit was per socket, so a user with a socket on each gateway
    relayed one typing event per socket."""
    interval = {"ws_typing_interval_seconds": 0.5}
    gateway_a, gateway_b = await make_gateway(**interval), await make_gateway(**interval)
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    phone, laptop = await open_mux(gateway_a, alice), await open_mux(gateway_b, alice)
    watcher = await open_mux(gateway_a, bob)
    for ws in (phone, laptop, watcher):
        await subscribe(ws, channel_id)
    typing = {**_TYPING, "channel_id": channel_id, "user_id": alice.user_id}

    await put(phone, type="typing", channel_id=channel_id)
    assert await receive_until(watcher, "typing") == typing
    await put(laptop, type="typing", channel_id=channel_id)  # the other gateway, same user
    await send_text(laptop, channel_id, "after typing", "c-1")

    assert (await receive_json(watcher))["type"] == "message"  # no second typing first

    async def interval_over() -> bool:
        return await _marker_gone(gateway_b, redis_url, channel_id, alice.user_id)

    await eventually(interval_over)
    # The phone: its own interval began before the marker was set, so it is over too.
    # (The laptop's began at its refused typing, later: it may still hold one back.)
    await put(phone, type="typing", channel_id=channel_id)
    assert await receive_until(watcher, "typing") == typing


async def test_a_typing_flood_costs_one_script_call(
    make_gateway: MakeGateway, redis_url: str
) -> None:
    gateway = await make_gateway(ws_typing_interval_seconds=30)
    channel_id, (alice, bob) = await room(gateway, "alice", "bob")
    flooder, watcher = await open_mux(gateway, alice), await open_mux(gateway, bob)
    for number, ws in enumerate((flooder, watcher)):
        await subscribe(ws, channel_id)
        # Acked after the subscribe's presence call, and seeds the channel's counter.
        await send_text(ws, channel_id, "hello", f"c-{number}")
        await receive_until(ws, "ack")
    client = Redis.from_url(redis_url)
    try:
        await client.config_resetstat()
    finally:
        await client.aclose()

    for _ in range(200):
        await put(flooder, type="typing", channel_id=channel_id)
    await send_text(flooder, channel_id, "after the flood", "c-2")

    assert (await receive_until(watcher, "typing"))["user_id"] == alice.user_id
    assert (await receive_json(watcher))["type"] == "message"
    assert await _script_calls(redis_url) == 2  # one typing, one send
