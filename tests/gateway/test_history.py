"""The whole data path: socket -> send script -> ingest stream -> worker ->
PostgreSQL -> history endpoint, with the frames and the stored rows compared."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from persistence.worker import Worker
from shared.settings import Settings
from tests.gateway.api_client import (
    connect,
    create_channel,
    error_of,
    join,
    receive_until,
    signup,
)
from tests.gateway.conftest import MakeGateway


async def test_sent_messages_come_back_from_history_in_the_live_shape(
    make_gateway: MakeGateway, make_settings: Any, pg_pool: asyncpg.Pool
) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    alice = await signup(gateway_a, "alice")
    bob = await signup(gateway_a, "bob")
    channel_id = await create_channel(gateway_a, alice, "general")
    await join(gateway_a, bob, channel_id)
    ws_alice = await connect(gateway_a, alice, channel_id)
    ws_bob = await connect(gateway_b, bob, channel_id)
    live = []
    for index in range(5):
        ws = ws_alice if index % 2 == 0 else ws_bob
        await ws.send_str(orjson.dumps({"type": "text", "content": f"m{index}"}).decode())
        live.append(await receive_until(ws_alice, "message"))

    settings: Settings = make_settings()
    assert await Worker(settings, pool=pg_pool).run_until_idle() == 5
    # A history item is the live frame plus its reactions and reply count.
    live = [{**frame, "reactions": [], "reply_count": 0} for frame in live]

    response = await gateway_b.get(
        f"/api/v1/channels/{channel_id}/messages?limit=3", headers=bob.auth
    )
    page = (await response.json())["data"]
    assert page["messages"] == list(reversed(live))[:3]
    assert page["next_cursor"] == 3
    rest = await gateway_b.get(
        f"/api/v1/channels/{channel_id}/messages?limit=3&before=3", headers=bob.auth
    )
    assert (await rest.json())["data"] == {
        "messages": list(reversed(live))[3:],
        "next_cursor": None,
    }
    catch_up = await gateway_b.get(
        f"/api/v1/channels/{channel_id}/messages?after_seq=2", headers=bob.auth
    )
    assert (await catch_up.json())["data"]["messages"] == live[2:]


async def test_history_is_for_members_only(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway()
    alice = await signup(gateway, "alice")
    mallory = await signup(gateway, "mallory")
    channel_id = await create_channel(gateway, alice, "general")
    path = f"/api/v1/channels/{channel_id}/messages"
    assert await error_of(await gateway.get(path, headers=mallory.auth)) == (403, "not_a_member")
    assert await error_of(await gateway.get(path)) == (400, "missing_token")
    unknown = await gateway.get("/api/v1/channels/999/messages", headers=alice.auth)
    assert await error_of(unknown) == (404, "channel_not_found")
    both = await gateway.get(f"{path}?before=5&after_seq=1", headers=alice.auth)
    assert await error_of(both) == (422, "invalid_parameter")
