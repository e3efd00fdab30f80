"""The whole data path: socket -> send script -> ingest stream -> worker ->
PostgreSQL -> history endpoint, with the frames and the stored rows compared."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from persistence.worker import Worker
from shared.db.messages import list_messages_after
from shared.redis_keys import RedisKeys
from shared.settings import Settings
from shared.wire import stored_message_frame
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


async def test_a_stored_message_frame_is_the_live_frame_byte_for_byte(
    make_gateway: MakeGateway, make_settings: Any, pg_pool: asyncpg.Pool, redis_url: str
) -> None:
    """The send script composes live frames and `stored_message_frame` those of
    stored messages (history, resume from PostgreSQL, the Go import): one layout.
    Text bodies only: PostgreSQL's jsonb reorders other bodies' keys."""
    gateway = await make_gateway()
    alice = await signup(gateway, "alice")
    channel_id = await create_channel(gateway, alice, "general")
    ws = await connect(gateway, alice, channel_id)
    contents = ["plain", 'quote " back \\ slash', "h\u00e9llo \U0001f600 \n", "</script>"]
    for index, content in enumerate(contents):
        client_id = f"c-{index}" if index % 2 else None
        frame: dict[str, object] = {"type": "text", "content": content}
        if client_id is not None:
            frame["client_id"] = client_id
        await ws.send_str(orjson.dumps(frame).decode())
        await receive_until(ws, "ack")
    settings: Settings = make_settings()
    assert await Worker(settings, pool=pg_pool).run_until_idle() == len(contents)
    keys = RedisKeys(settings.redis_key_prefix, settings.redis_partitions)
    redis = Redis.from_url(redis_url)
    try:
        live = [fields[b"f"] for _, fields in await redis.xrange(keys.channel_recent(channel_id))]
    finally:
        await redis.aclose()

    stored = await list_messages_after(pg_pool, channel_id, 0, 10)

    assert [stored_message_frame(message) for message in stored] == live


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
