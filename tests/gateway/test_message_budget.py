"""Each chat socket's local message budget: a flood is refused before it costs a Redis
script call, and a socket that keeps flooding is closed with 4429."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from aiohttp.test_utils import TestClient
from hypothesis import example, given
from hypothesis import strategies as st
from redis.asyncio import Redis

from gateway.app_keys import HUB, KEYS, METRICS
from gateway.message_budget import BudgetLimits, MessageBudget
from gateway.websocket import CLOSE_TIMEOUT_SECONDS
from shared.settings import Settings
from tests.gateway.api_client import (
    RECEIVE_TIMEOUT,
    connect,
    eventually,
    receive_json,
    room,
    send_texts,
)
from tests.gateway.conftest import MakeGateway

_SCRIPT_COMMANDS = ("evalsha", "eval")  # EVAL after a NOSCRIPT


async def _flooder(
    gateway: TestClient[Any, Any], redis_url: str
) -> tuple[aiohttp.ClientWebSocketResponse, int, int]:
    """Alice's socket, its channel and alice's id. Bob has sent the channel's first
    message (which also seeds its counter and loads the script: more calls), and
    Redis's call counts are reset once alice's presence entry (a script call too) is in."""
    channel_id, (alice, bob) = await room(gateway, "alice", "bob")
    await send_texts(await connect(gateway, bob, channel_id), 1, "first")
    ws = await connect(gateway, alice, channel_id)
    await eventually(_online_in_redis(gateway, redis_url, channel_id, alice.user_id, True))
    client = Redis.from_url(redis_url)
    try:
        await client.config_resetstat()
    finally:
        await client.aclose()
    return ws, channel_id, alice.user_id


def _online_in_redis(
    gateway: TestClient[Any, Any], redis_url: str, channel_id: int, user_id: int, online: bool
) -> Callable[[], Awaitable[bool]]:
    """Whether the user's presence is as given, read without a script call."""

    async def probe() -> bool:
        client = Redis.from_url(redis_url)
        try:
            users = gateway.app[KEYS].presence_users(channel_id)
            return bool(await client.hexists(users, str(user_id))) is online
        finally:
            await client.aclose()

    return probe


async def _script_calls(redis_url: str) -> int:
    """Script calls Redis has run since the last reset: one per send that reached it."""
    client = Redis.from_url(redis_url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
    )


async def _flood(ws: aiohttp.ClientWebSocketResponse, count: int) -> None:
    """`count` valid frames at once: the gateway reads them far faster than the budget refills."""
    for index in range(count):
        await ws.send_str(orjson.dumps({"type": "text", "content": f"m{index}"}).decode())


async def _replies(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    """The next `count` acks and error frames, skipping messages."""
    replies: list[dict[str, Any]] = []
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        while len(replies) < count:
            frame = await receive_json(ws)
            if frame["type"] != "message":
                replies.append(frame)
    return replies


async def test_frames_over_the_budget_are_refused_without_a_redis_call(
    make_gateway: MakeGateway, redis_url: str
) -> None:
    gateway = await make_gateway(ws_message_rate=5, ws_message_rate_close_after=100)
    ws, _, _ = await _flooder(gateway, redis_url)

    await _flood(ws, 30)
    replies = await _replies(ws, 30)

    assert [reply["type"] for reply in replies].count("ack") == 5
    refused = [reply for reply in replies if reply["type"] == "error"]
    assert {reply["code"] for reply in refused} == {"rate_limited"}
    assert all(reply["retry_after_ms"] > 0 for reply in refused)
    # The budget's burst (twice the rate, plus one) reaches Redis, which refuses all
    # but the first 5; the other 19 frames never leave the gateway.
    assert await _script_calls(redis_url) == 11
    assert not ws.closed


async def test_socket_that_keeps_flooding_is_closed_with_4429(
    make_gateway: MakeGateway, redis_url: str
) -> None:
    gateway = await make_gateway(ws_message_rate=5, ws_message_rate_close_after=3)
    ws, channel_id, alice_id = await _flooder(gateway, redis_url)

    await _flood(ws, 200)
    acks = 0
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        while (message := await ws.receive()).type is aiohttp.WSMsgType.TEXT:
            acks += orjson.loads(message.data)["type"] == "ack"

    assert message.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 4429
    assert acks == 5
    # The close removed alice's presence entry: one more script call.
    await eventually(_online_in_redis(gateway, redis_url, channel_id, alice_id, False))
    assert await _script_calls(redis_url) == 12
    assert gateway.app[METRICS].rate_limit_closes.value == 1

    async def closing_handshake_done() -> bool:
        return gateway.app[HUB].connection_count == 1  # bob's socket only

    # The flood had paused reading (a full inbox): the gateway must still read the
    # client's close frame, rather than abort the connection after CLOSE_TIMEOUT_SECONDS.
    await eventually(closing_handshake_done, within=CLOSE_TIMEOUT_SECONDS / 2)


def _accepted_by_the_redis_window(times_ms: list[int], rate: int, window_ms: int) -> list[int]:
    """The arrivals send.lua accepts: a window opens at the first message after the last
    one expired, and counts every message in it, refused ones included."""
    accepted: list[int] = []
    opened, count = None, 0
    for now in times_ms:
        if opened is None or now >= opened + window_ms:
            opened, count = now, 0
        count += 1
        if count <= rate:
            accepted.append(now)
    return accepted


# The tightest case: a window opened at 0, the rest of its 5 just before it ends, and
# the next window's 5 just after: 9 messages within 1 ms.
@example(gaps_ms=[0, 999, 0, 0, 0, 1, 0, 0, 0, 0], rate=5, window_seconds=1)
@given(
    # Bursts (gaps of a few ms) and pauses of about a window: the tight cases are a
    # window's worth just before a window ends and another just after.
    gaps_ms=st.lists(st.one_of(st.integers(0, 5), st.integers(0, 3000)), min_size=1, max_size=300),
    rate=st.integers(min_value=1, max_value=20),
    window_seconds=st.integers(min_value=1, max_value=3),
)
def test_budget_never_refuses_what_the_redis_limit_accepts(
    gaps_ms: list[int], rate: int, window_seconds: int
) -> None:
    times_ms = list(itertools.accumulate(gaps_ms))
    limits = BudgetLimits.from_settings(
        Settings(ws_message_rate=rate, ws_message_rate_window_seconds=window_seconds)
    )
    assert limits is not None
    legit = _accepted_by_the_redis_window(times_ms, rate, window_seconds * 1000)
    budget = MessageBudget(limits, legit[0] / 1000)
    assert all(budget.spend(now / 1000) for now in legit)
