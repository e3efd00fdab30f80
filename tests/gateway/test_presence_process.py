"""No ghosts: a gateway killed with SIGKILL removes nothing, yet its users go offline
for everyone within PRESENCE_TTL_SECONDS + PRESENCE_REFRESH_SECONDS. Real
`python -m gateway` processes on the suite's PostgreSQL and Valkey."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import aiohttp
import pytest

from tests.faults.chat_clients import channel_with, signup
from tests.faults.stack import ORIGIN, Service, Stack
from tests.gateway.conftest import MakeStack
from tests.gateway.presence_events import presence_events

_REFRESH_SECONDS = 0.3
_TTL_SECONDS = 1.0
# The documented bound, and what a loaded 2-core machine may add to it (a sweep
# call, a process scheduled late).
_BOUND_SECONDS = _TTL_SECONDS + _REFRESH_SECONDS
_SLACK_SECONDS = 2.0

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def stack(make_stack: MakeStack) -> Stack:
    return await make_stack(
        PRESENCE_REFRESH_SECONDS=str(_REFRESH_SECONDS), PRESENCE_TTL_SECONDS=str(_TTL_SECONDS)
    )


async def _online(
    session: aiohttp.ClientSession, gateway: Service, token: str, channel_id: int
) -> list[int]:
    async with session.get(
        f"{gateway.url}/api/v1/channels/{channel_id}/presence",
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        body: dict[str, Any] = await response.json()
        assert response.status == 200, body
        return [user["id"] for user in body["data"]["users"]]


async def test_users_of_a_killed_gateway_go_offline_within_the_bound(stack: Stack) -> None:
    gateway_a, gateway_b = await asyncio.gather(stack.start_gateway(), stack.start_gateway())
    async with aiohttp.ClientSession(headers={"Origin": ORIGIN}) as session:
        alice = await signup(session, gateway_a.url, "alice")
        bob = await signup(session, gateway_a.url, "bob")
        channel_id = await channel_with(session, gateway_a.url, [alice, bob])
        async with presence_events(
            stack.env["REDIS_URL"], stack.env["REDIS_KEY_PREFIX"], channel_id
        ) as events:
            socket_url = "ws://127.0.0.1:{}/api/v1/chat/{}?token={}"
            ws_alice = await session.ws_connect(
                socket_url.format(gateway_a.port, channel_id, alice.token)
            )
            ws_bob = await session.ws_connect(
                socket_url.format(gateway_b.port, channel_id, bob.token)
            )
            seen = {(await events.next())["user_id"], (await events.next())["user_id"]}
            assert seen == {alice.user_id, bob.user_id}
            assert await _online(session, gateway_b, bob.token, channel_id) == [
                alice.user_id,
                bob.user_id,
            ]

            gateway_a.signal(signal.SIGKILL)
            killed_at = time.monotonic()
            assert await asyncio.to_thread(gateway_a.wait) == -signal.SIGKILL

            # Gateway B's periodic sweep finds Alice's entry expired and publishes
            # her offline, once; nobody reads the REST presence meanwhile.
            event = await events.next(within=_BOUND_SECONDS + _SLACK_SECONDS)
            elapsed = time.monotonic() - killed_at
            assert event == {
                "type": "presence",
                "channel_id": channel_id,
                "user_id": alice.user_id,
                "status": "offline",
                "online_count": 1,
            }
            assert elapsed <= _BOUND_SECONDS + _SLACK_SECONDS, elapsed
            assert await _online(session, gateway_b, bob.token, channel_id) == [bob.user_id]
            assert not ws_bob.closed
        await ws_alice.close()
        await ws_bob.close()
