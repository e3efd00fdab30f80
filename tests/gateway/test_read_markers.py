"""Read markers and the caller's channel list: `PUT /api/v1/channels/{id}/read`,
`GET /api/v1/me/channels` and the live `read` event, over two gateways sharing one
Redis and one PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
import redis.asyncio as redis
from aiohttp.test_utils import TestClient

from gateway.app_keys import HUB, KEYS
from gateway.connection import Connection
from gateway.hub import Hub
from gateway.read_markers import mark_read
from persistence.worker import Worker
from shared.db.read_markers import PREVIEW_CHARS, list_my_channels
from shared.errors import ChannelNotFoundError, NotAMemberError
from tests.gateway.api_client import (
    FILE_BODY,
    RECEIVE_TIMEOUT,
    Account,
    connect,
    create_channel,
    error_of,
    eventually,
    join,
    receive_json,
    receive_until,
    room,
    send_texts,
    signup,
)
from tests.gateway.conftest import MakeGateway
from tests.gateway.test_message_changes import change, send, subscribed


async def _mark(client: TestClient[Any, Any], account: Account, channel_id: int, seq: Any) -> int:
    response = await client.put(
        f"/api/v1/channels/{channel_id}/read", json={"seq": seq}, headers=account.auth
    )
    assert response.status == 200, await response.text()
    data = (await response.json())["data"]
    assert data["channel_id"] == channel_id
    last_read_seq: int = data["last_read_seq"]
    return last_read_seq


async def _my_channels(
    client: TestClient[Any, Any], account: Account, query: str = ""
) -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/me/channels{query}", headers=account.auth)
    assert response.status == 200, await response.text()
    channels: list[dict[str, Any]] = (await response.json())["data"]
    return channels


async def _send(
    client: TestClient[Any, Any], account: Account, channel_id: int, count: int
) -> None:
    ws = await connect(client, account, channel_id)
    await send_texts(ws, count, f"c{channel_id}")
    await ws.close()


async def _next_millisecond() -> None:
    """Return once the wall clock's millisecond has changed, so the next message's
    `created_at` (taken from its id, in ms) sorts after everything sent so far."""
    start = time.time_ns() // 1_000_000
    async with asyncio.timeout(1):
        while time.time_ns() // 1_000_000 == start:  # noqa: ASYNC110 - waits for the clock itself
            await asyncio.sleep(0.0005)


async def test_marker_moves_forward_only(make_gateway: MakeGateway) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    channel_id, (alice,) = await room(gateway_a, "alice")
    await _send(gateway_a, alice, channel_id, 5)
    assert await _mark(gateway_a, alice, channel_id, 3) == 3
    assert await _mark(gateway_b, alice, channel_id, 2) == 3  # a lower seq does not move it back
    assert await _mark(gateway_b, alice, channel_id, 0) == 3
    assert await _mark(gateway_a, alice, channel_id, 5) == 5
    (mine,) = await _my_channels(gateway_b, alice)
    assert (mine["last_seq"], mine["last_read_seq"], mine["unread_count"]) == (5, 5, 0)


async def test_marker_beyond_the_last_seq_is_clamped_to_it(gateway: TestClient[Any, Any]) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    assert await _mark(gateway, alice, channel_id, 7) == 0  # no message yet
    await _send(gateway, alice, channel_id, 2)  # counted in Redis, not persisted
    # An integral float is that integer, as JSON Schema has it (see ChannelId).
    assert await _mark(gateway, alice, channel_id, 1.0) == 1
    assert await _mark(gateway, alice, channel_id, 2**53) == 2


async def test_clamp_uses_stored_messages_when_redis_lost_the_counter(
    gateway: TestClient[Any, Any], pg_pool: asyncpg.Pool, redis_url: str
) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    await _insert_messages(pg_pool, channel_id, alice.user_id, 6)
    client = redis.Redis.from_url(redis_url)
    try:
        assert await client.get(gateway.app[KEYS].channel_seq(channel_id)) is None
    finally:
        await client.aclose()
    assert await _mark(gateway, alice, channel_id, 100) == 6
    (mine,) = await _my_channels(gateway, alice)
    assert (mine["last_seq"], mine["unread_count"]) == (6, 0)


async def test_only_members_mark_and_unknown_channels_are_404(
    gateway: TestClient[Any, Any],
) -> None:
    channel_id, (alice, mallory) = await room(gateway, "alice", "mallory")
    leave = await gateway.post(
        "/api/v1/channels/leave", json={"channel_id": channel_id}, headers=mallory.auth
    )
    assert leave.status == 200
    await _send(gateway, alice, channel_id, 1)
    path = f"/api/v1/channels/{channel_id}/read"
    refused = await gateway.put(path, json={"seq": 1}, headers=mallory.auth)
    assert await error_of(refused) == (403, "not_a_member")
    unknown = await gateway.put("/api/v1/channels/999/read", json={"seq": 1}, headers=alice.auth)
    assert await error_of(unknown) == (404, "channel_not_found")
    assert await error_of(await gateway.put(path, json={"seq": 1})) == (400, "missing_token")
    zero = await gateway.put("/api/v1/channels/0/read", json={"seq": 1}, headers=alice.auth)
    assert await error_of(zero) == (422, "invalid_parameter")
    not_an_id = await gateway.put("/api/v1/channels/0x1/read", json={"seq": 1}, headers=alice.auth)
    assert await error_of(not_an_id) == (404, "route_not_found")
    (mine,) = await _my_channels(gateway, alice)
    assert mine["last_read_seq"] == 0


@pytest.mark.parametrize(
    "raw",
    [
        b'{"seq": -1}',
        b'{"seq": 9007199254740993}',  # 2**53 + 1
        b'{"seq": 1' + b"0" * 40 + b"}",
        b'{"seq": 1.5}',
        b'{"seq": "1"}',
        b'{"seq": "\\u0000"}',
        b'{"seq": null}',
        b'{"seq": true}',
        b'{"seq": [1]}',
        b'{"seq": {"$gt": 0}}',
        b"{}",
        b'{"seq": 1, "channel_id": 2}',
        b"[1]",
        b'"1"',
        b"1",
    ],
)
async def test_hostile_bodies_are_refused_and_change_nothing(
    gateway: TestClient[Any, Any], raw: bytes
) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    await _send(gateway, alice, channel_id, 3)
    response = await gateway.put(
        f"/api/v1/channels/{channel_id}/read", data=raw, headers=alice.auth
    )
    assert await error_of(response) == (422, "invalid_body")
    (mine,) = await _my_channels(gateway, alice)
    assert mine["last_read_seq"] == 0


@pytest.mark.parametrize("raw", [b"", b'{"seq": 1', b'{"seq": 1}\x00', b"\xff\xfe"])
async def test_malformed_json_is_refused(gateway: TestClient[Any, Any], raw: bytes) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    response = await gateway.put(
        f"/api/v1/channels/{channel_id}/read", data=raw, headers=alice.auth
    )
    assert await error_of(response) == (400, "invalid_json")


async def test_my_channels_most_recently_active_first_with_unread_and_preview(
    make_gateway: MakeGateway, make_settings: Any, pg_pool: asyncpg.Pool
) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    alice = await signup(gateway_a, "alice")
    bob = await signup(gateway_a, "bob")
    quiet = await create_channel(gateway_a, alice, "quiet")  # no message: joined_at counts
    older = await create_channel(gateway_a, bob, "older")
    newer = await create_channel(gateway_a, bob, "newer")
    await join(gateway_a, alice, older)
    await join(gateway_a, alice, newer)
    await _next_millisecond()
    await _send(gateway_a, bob, newer, 2)
    await _next_millisecond()
    # The lowest id of the two, most recent: activity wins over ids.
    ws = await connect(gateway_b, bob, older)
    await send_texts(ws, 3, "o")
    long_text = "é" * (PREVIEW_CHARS + 50)
    await ws.send_str(orjson.dumps({"type": "text", "content": long_text}).decode())
    await receive_until(ws, "ack")
    await ws.close()
    assert await Worker(make_settings(), pool=pg_pool).run_until_idle() == 6
    await _mark(gateway_b, alice, older, 1)

    listed = await _my_channels(gateway_b, alice)
    assert [c["id"] for c in listed] == [older, newer, quiet]
    first, second, third = listed
    assert {k: first[k] for k in ("name", "role", "last_seq", "last_read_seq", "unread_count")} == {
        "name": "older",
        "role": "member",
        "last_seq": 4,
        "last_read_seq": 1,
        "unread_count": 3,
    }
    preview = first["last_message"]
    assert preview["seq"] == 4
    assert preview["type"] == "text"
    assert preview["preview"] == long_text[:PREVIEW_CHARS]
    assert preview["user"] == {
        "id": bob.user_id,
        "name": "Bob",
        "username": "bob",
        "avatar_url": None,
    }
    history = await gateway_a.get(f"/api/v1/channels/{older}/messages?limit=1", headers=bob.auth)
    (stored,) = (await history.json())["data"]["messages"]
    assert (preview["id"], preview["created_at"]) == (stored["id"], stored["created_at"])
    assert (second["last_seq"], second["unread_count"], second["last_message"]["seq"]) == (2, 2, 2)
    assert (third["role"], third["last_seq"], third["last_message"]) == ("owner", 0, None)

    assert [c["id"] for c in await _my_channels(gateway_a, alice, "?limit=2")] == [older, newer]
    assert [c["id"] for c in await _my_channels(gateway_a, alice, "?limit=2&offset=2")] == [quiet]
    assert await _my_channels(gateway_a, alice, "?offset=3") == []
    assert [c["id"] for c in await _my_channels(gateway_a, bob)] == [older, newer]
    bad = await gateway_a.get("/api/v1/me/channels?limit=0", headers=alice.auth)
    assert await error_of(bad) == (422, "invalid_parameter")
    assert await error_of(await gateway_a.get("/api/v1/me/channels")) == (400, "missing_token")


async def test_file_message_previews_its_file_name(
    gateway: TestClient[Any, Any], make_settings: Any, pg_pool: asyncpg.Pool
) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    ws = await connect(gateway, alice, channel_id)
    body = FILE_BODY
    await ws.send_str(orjson.dumps(body).decode())
    await receive_until(ws, "ack")
    assert await Worker(make_settings(), pool=pg_pool).run_until_idle() == 1
    (mine,) = await _my_channels(gateway, alice)
    assert (mine["last_message"]["type"], mine["last_message"]["preview"]) == ("file", "cat.png")


async def test_last_seq_counts_messages_not_yet_persisted(
    gateway: TestClient[Any, Any], make_settings: Any, pg_pool: asyncpg.Pool
) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    await _insert_messages(pg_pool, channel_id, alice.user_id, 4)
    await _send(gateway, alice, channel_id, 3)  # seqs 5-7, in Redis only
    (mine,) = await _my_channels(gateway, alice)
    assert (mine["last_seq"], mine["unread_count"], mine["last_message"]["seq"]) == (7, 7, 4)
    assert await _mark(gateway, alice, channel_id, 6) == 6
    assert await Worker(make_settings(), pool=pg_pool).run_until_idle() == 3
    (mine,) = await _my_channels(gateway, alice)
    assert (mine["last_seq"], mine["unread_count"], mine["last_message"]["seq"]) == (7, 1, 7)


async def test_channel_list_is_one_statement_for_fifty_channels(
    gateway: TestClient[Any, Any], pg_pool: asyncpg.Pool
) -> None:
    """Regression guard: the list must not cost a query per channel."""
    alice = await signup(gateway, "alice")
    channel_ids = [await create_channel(gateway, alice, f"c{n}") for n in range(50)]
    for channel_id in channel_ids:
        await _insert_messages(pg_pool, channel_id, alice.user_id, 3)
    queries: list[str] = []
    async with pg_pool.acquire() as conn:

        def log_query(record: asyncpg.connection.LoggedQuery) -> None:
            queries.append(record.query)

        conn.add_query_logger(log_query)
        try:
            found = await list_my_channels(conn, alice.user_id, limit=100, offset=0)
        finally:
            conn.remove_query_logger(log_query)
    assert len(found) == 50
    assert all(mine.last_message is not None for mine in found)
    assert len(queries) == 1, queries
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        listed = await _my_channels(gateway, alice)
    assert sorted(c["id"] for c in listed) == channel_ids
    assert {c["last_seq"] for c in listed} == {3}


async def test_read_event_reaches_the_users_event_sockets_on_every_gateway(
    make_gateway: MakeGateway, redis_url: str
) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    await _send(gateway_a, alice, channel_id, 3)
    hub = gateway_b.app[HUB]
    # Stand-ins for the multiplexed socket's connections, which take events.
    events = await connect(gateway_b, alice, channel_id)
    await eventually(_has_socket(gateway_b, channel_id, alice))
    (alice_connection,) = hub.members()[(channel_id, alice.user_id, 0)]
    await _take_events(hub, alice_connection)
    plain = await connect(gateway_b, alice, channel_id)  # a Go client's socket
    bob_events = await connect(gateway_b, bob, channel_id)
    await eventually(_has_socket(gateway_b, channel_id, bob))
    (bob_connection,) = hub.members()[(channel_id, bob.user_id, 0)]
    await _take_events(hub, bob_connection)
    await eventually(_has_socket(gateway_b, channel_id, alice, count=2))

    # Malformed events on the topic are dropped without stopping the listener.
    client = redis.Redis.from_url(redis_url)
    try:
        topic = gateway_a.app[KEYS].channel_topic(channel_id)
        for junk in (b'!{"event":"read"}', b'!{"event":"read","user_id":"x"}', b"![1]", b"!{"):
            await client.publish(topic, junk)
    finally:
        await client.aclose()
    assert await _mark(gateway_a, alice, channel_id, 2) == 2
    assert await _next_but_presence(events) == {
        "type": "read",
        "channel_id": channel_id,
        "user_id": alice.user_id,
        "last_read_seq": 2,
    }
    # Neither bob's sockets nor alice's per-channel one get it: the next frame each
    # sees is the message sent after the mark.
    await _send(gateway_a, bob, channel_id, 1)
    for ws in (plain, bob_events, events):
        frame = await _next_but_presence(ws)
        assert (frame["type"], frame["seq"]) == ("message", 4)
    for ws in (plain, bob_events):
        await ws.close()


async def _next_but_presence(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The next frame that is not a `presence` event: the stand-ins take those too (bob's
    socket opening is one), in an order this test does not fix."""
    while (frame := await receive_json(ws))["type"] == "presence":
        pass
    return frame


def _has_socket(
    client: TestClient[Any, Any], channel_id: int, account: Account, *, count: int = 1
) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        found = client.app[HUB].members().get((channel_id, account.user_id, 0), [])
        return len(found) == count

    return probe


async def _take_events(hub: Hub, connection: Connection) -> None:
    """Re-register a per-channel socket's connection as one that takes events, as the
    multiplexed socket creates its own (`Connection(wants_events=True)`)."""
    await hub.leave(connection)
    connection.wants_events = True
    await hub.join(connection)


async def test_read_event_is_published_on_the_channel_topic_only_when_the_marker_moves(
    gateway: TestClient[Any, Any], redis_url: str
) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    await _send(gateway, alice, channel_id, 5)
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(gateway.app[KEYS].channel_topic(channel_id))
        assert await _mark(gateway, alice, channel_id, 3) == 3
        assert await _mark(gateway, alice, channel_id, 1) == 3  # not moved: no event
        assert await _mark(gateway, alice, channel_id, 4) == 4
        payloads = []
        async with asyncio.timeout(RECEIVE_TIMEOUT):
            while len(payloads) < 2:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    payloads.append(message["data"])
    finally:
        await pubsub.aclose()
        await client.aclose()
    assert [p[:1] for p in payloads] == [b"!", b"!"]
    assert [orjson.loads(p[1:]) for p in payloads] == [
        {"event": "read", "user_id": alice.user_id, "last_read_seq": seq} for seq in (3, 4)
    ]


async def test_mark_read_for_the_socket_frame_validates_like_rest(
    gateway: TestClient[Any, Any],
) -> None:
    """`mark_read` is what the multiplexed socket's `read` frame calls."""
    channel_id, (alice, mallory) = await room(gateway, "alice", "mallory")
    outsider = await signup(gateway, "outsider")
    await _send(gateway, alice, channel_id, 2)
    assert await mark_read(gateway.app, mallory.user_id, channel_id, 9) == 2
    assert await mark_read(gateway.app, mallory.user_id, channel_id, 1) == 2
    with pytest.raises(NotAMemberError):
        await mark_read(gateway.app, outsider.user_id, channel_id, 1)
    with pytest.raises(ChannelNotFoundError):
        await mark_read(gateway.app, alice.user_id, 999, 1)


async def _insert_messages(pool: asyncpg.Pool, channel_id: int, user_id: int, count: int) -> None:
    """Messages 1..count of a channel, written as a worker would have (ids unique per channel)."""
    await pool.execute(
        """INSERT INTO messages (id, channel_id, seq, user_id, body, created_at)
           SELECT $1 * 1000000 + s, $1, s, $2, '{"type": "text", "content": "old"}', now()
           FROM generate_series(1, $3::int) AS s""",
        channel_id,
        user_id,
        count,
    )


async def test_unread_counts_messages_not_the_edits_and_reactions_that_take_seqs(
    gateway: TestClient[Any, Any], make_settings: Any, pg_pool: asyncpg.Pool
) -> None:
    """Regression: unread was last_seq - last_read_seq, so a reaction on an old message
    made a read channel unread again."""
    channel_id, (alice, bob) = await room(gateway, "alice", "bob")
    mux = await subscribed(gateway, alice, channel_id)
    first = await send(mux, channel_id, "one")
    await send(mux, channel_id, "two")
    assert await _mark(gateway, bob, channel_id, 2) == 2
    react = {"type": "react", "channel_id": channel_id, "message_id": first["id"]}
    assert (await change(mux, **react, emoji="👍"))["type"] == "ack"
    edit = {"type": "edit", "channel_id": channel_id, "message_id": first["id"]}
    assert (await change(mux, **edit, body={"type": "text", "content": "1"}))["type"] == "ack"
    await send(mux, channel_id, "three")  # seq 5: one unread message after two events

    (pending,) = await _my_channels(gateway, bob)
    # Not persisted yet: the seqs after the stored ones are counted, events included.
    assert (pending["last_seq"], pending["unread_count"]) == (5, 3)
    assert await Worker(make_settings(), pool=pg_pool).run_until_idle() == 5
    (stored,) = await _my_channels(gateway, bob)
    assert (stored["last_seq"], stored["unread_count"]) == (5, 1)


async def test_unread_count_is_capped(
    gateway: TestClient[Any, Any], pg_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shared.db.read_markers.UNREAD_COUNT_MAX", 3)
    monkeypatch.setattr("gateway.api.me.UNREAD_COUNT_MAX", 3)
    channel_id, (alice,) = await room(gateway, "alice")
    await _insert_messages(pg_pool, channel_id, alice.user_id, 5)
    (mine,) = await _my_channels(gateway, alice)
    assert (mine["last_seq"], mine["unread_count"]) == (5, 3)
