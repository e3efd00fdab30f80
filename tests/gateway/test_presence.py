"""Presence over real gateways sharing one Redis: who is online per channel, per user."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as redis
from aiohttp.test_utils import TestClient
from pydantic import ValidationError

from gateway.app_keys import PRESENCE, SETTINGS
from shared.local_servers import ServerProcess, start_valkey
from shared.redis_keys import RedisKeys
from shared.settings import Settings
from tests.gateway.api_client import (
    Account,
    connect,
    eventually,
    receive_each,
    receive_until,
    room,
    signup,
)
from tests.gateway.conftest import MakeGateway
from tests.gateway.presence_events import presence_events
from tests.gateway.test_mux import open_mux, subscribe

# Long enough that no refresh or expiry happens during a test that does not want one.
_QUIET = {"presence_refresh_seconds": 30.0, "presence_ttl_seconds": 60.0}


async def _presence(
    gateway: TestClient[Any, Any], account: Account, channel_id: int | str
) -> tuple[int, dict[str, Any]]:
    response = await gateway.get(f"/api/v1/channels/{channel_id}/presence", headers=account.auth)
    body: dict[str, Any] = await response.json()
    return response.status, body


async def _online(gateway: TestClient[Any, Any], account: Account, channel_id: int) -> list[int]:
    status, body = await _presence(gateway, account, channel_id)
    assert status == 200, body
    return [user["id"] for user in body["data"]["users"]]


def _events(gateway: TestClient[Any, Any], channel_id: int) -> Any:
    settings = gateway.app[SETTINGS]
    return presence_events(
        settings.redis_url.get_secret_value(),
        settings.redis_key_prefix,
        channel_id,
        settings.redis_partitions,
    )


async def test_a_user_on_two_gateways_with_two_sockets_counts_once(
    make_gateway: MakeGateway,
) -> None:
    gateway_a, gateway_b = await make_gateway(**_QUIET), await make_gateway(**_QUIET)
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    for gateway in (gateway_a, gateway_a, gateway_b):
        await connect(gateway, alice, channel_id)
    await connect(gateway_b, bob, channel_id)

    status, body = await _presence(gateway_b, bob, channel_id)
    assert status == 200
    assert body["data"] == {
        "channel_id": channel_id,
        "online_count": 2,
        "users": [
            {"id": alice.user_id, "name": "Alice", "username": "alice", "avatar_url": None},
            {"id": bob.user_id, "name": "Bob", "username": "bob", "avatar_url": None},
        ],
    }


async def test_online_at_the_first_open_and_offline_only_after_the_last_close(
    make_gateway: MakeGateway,
) -> None:
    gateway_a, gateway_b = await make_gateway(**_QUIET), await make_gateway(**_QUIET)
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    async with _events(gateway_a, channel_id) as events:
        ws_a = await connect(gateway_a, alice, channel_id)
        assert await events.next() == {
            "type": "presence",
            "channel_id": channel_id,
            "user_id": alice.user_id,
            "status": "online",
            "online_count": 1,
        }
        ws_b = await connect(gateway_b, alice, channel_id)
        await ws_a.close()
        # Gateway A's presence calls for a channel run in order: Bob's online event
        # comes after whatever Alice's close on A published, which must be nothing.
        await connect(gateway_a, bob, channel_id)
        event = await events.next()
        assert (event["user_id"], event["status"], event["online_count"]) == (
            bob.user_id,
            "online",
            2,
        )
        assert await _online(gateway_a, bob, channel_id) == [alice.user_id, bob.user_id]

        await ws_b.close()
        event = await events.next()
        assert (event["user_id"], event["status"], event["online_count"]) == (
            alice.user_id,
            "offline",
            1,
        )
    assert await _online(gateway_b, bob, channel_id) == [bob.user_id]


async def test_the_chat_socket_gets_no_presence_frames(make_gateway: MakeGateway) -> None:
    """The per-channel socket serves the Go server's clients, which know no such frame."""
    gateway = await make_gateway(**_QUIET)
    channel_id, (alice, bob) = await room(gateway, "alice", "bob")
    ws_alice = await connect(gateway, alice, channel_id)
    async with _events(gateway, channel_id) as events:
        await connect(gateway, bob, channel_id)
        assert (await events.next())["user_id"] == bob.user_id  # reached the gateway too
    await ws_alice.send_str('{"type": "text", "content": "hi", "client_id": "c-1"}')
    frames = [orjson.loads((await ws_alice.receive(timeout=5)).data) for _ in range(2)]
    assert sorted(frame["type"] for frame in frames) == ["ack", "message"]


@pytest.mark.parametrize(
    ("path", "auth", "expected"),
    [
        ("/api/v1/channels/{channel}/presence", None, (400, "missing_token")),
        ("/api/v1/channels/{channel}/presence", "bad", (401, "invalid_token")),
        ("/api/v1/channels/{channel}/presence", "outsider", (403, "not_a_member")),
        ("/api/v1/channels/999999/presence", "member", (404, "channel_not_found")),
        ("/api/v1/channels/0/presence", "member", (422, "invalid_parameter")),
        ("/api/v1/channels/-1/presence", "member", (404, "route_not_found")),
        ("/api/v1/channels/9007199254740993/presence", "member", (422, "invalid_parameter")),
        ("/api/v1/channels/1e3/presence", "member", (404, "route_not_found")),
    ],
)
async def test_presence_needs_a_token_and_membership(
    make_gateway: MakeGateway, path: str, auth: str | None, expected: tuple[int, str]
) -> None:
    gateway = await make_gateway(**_QUIET)
    channel_id, (member,) = await room(gateway, "member")
    outsider = await signup(gateway, "outsider")
    headers = {
        None: {},
        "bad": {"Authorization": "Bearer not.a.token"},
        "outsider": outsider.auth,
        "member": member.auth,
    }[auth]
    response = await gateway.get(path.format(channel=channel_id), headers=headers)
    body = await response.json()
    assert (response.status, body["code"]) == expected
    assert body["data"] is None


async def test_above_the_listed_size_presence_reports_counts_only(
    make_gateway: MakeGateway,
) -> None:
    gateway_a = await make_gateway(presence_max_listed=1, **_QUIET)
    gateway_b = await make_gateway(presence_max_listed=1, **_QUIET)
    channel_id, (alice, bob, carol) = await room(gateway_a, "alice", "bob", "carol")
    async with _events(gateway_a, channel_id) as events:
        await connect(gateway_a, alice, channel_id)
        assert (await events.next())["status"] == "online"
        ws_bob = await connect(gateway_b, bob, channel_id)
        assert await events.next() == {
            "type": "presence",
            "channel_id": channel_id,
            "online_count": 2,
        }
        status, body = await _presence(gateway_b, alice, channel_id)
        assert (status, body["data"]["online_count"], body["data"]["users"]) == (200, 2, None)

        # Within the throttle (one counts-only event per refresh interval) a change
        # publishes nothing: the next event is Bob leaving, which lists again.
        ws_carol = await connect(gateway_a, carol, channel_id)
        await ws_carol.close()
        await eventually(_entries_are(gateway_a, 1))
        await ws_bob.close()
        event = await events.next()
        assert (event["user_id"], event["status"], event["online_count"]) == (
            bob.user_id,
            "offline",
            1,
        )


async def test_a_throttled_count_is_published_by_the_next_refresh(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(
        presence_max_listed=1, presence_refresh_seconds=1.0, presence_ttl_seconds=5.0
    )
    channel_id, (alice, bob, carol) = await room(gateway, "alice", "bob", "carol")
    async with _events(gateway, channel_id) as events:
        await connect(gateway, alice, channel_id)
        await connect(gateway, bob, channel_id)
        await connect(gateway, carol, channel_id)
        counts = [(await events.next()).get("online_count") for _ in range(3)]
    # Alice listed; Bob's count at once; Carol's, throttled, at a later refresh.
    assert counts == [1, 2, 3]


def _entries_are(gateway: TestClient[Any, Any], count: int) -> Any:
    async def probe() -> bool:
        return bool(gateway.app[PRESENCE].entry_count == count)

    return probe


async def test_a_redis_outage_never_breaks_a_socket_and_the_refresh_restores_presence(
    make_gateway: MakeGateway, own_valkey: ServerProcess, tmp_path: Path
) -> None:
    url = f"redis://127.0.0.1:{own_valkey.port}/0"
    gateway = await make_gateway(
        redis_url=url,
        redis_timeout_seconds=0.5,
        presence_refresh_seconds=0.2,
        presence_ttl_seconds=0.6,
    )
    channel_id, (alice, bob) = await room(gateway, "alice", "bob")
    ws_alice = await connect(gateway, alice, channel_id)
    ws_bob = await connect(gateway, bob, channel_id)
    ws_bob_too = await connect(gateway, bob, channel_id)

    own_valkey.stop()
    await ws_bob.close()  # the last-but-one socket: nothing to tell Redis
    await ws_bob_too.close()  # the last: its removal fails
    await eventually(_entries_are(gateway, 1))
    assert not ws_alice.closed
    status, body = await _presence(gateway, alice, channel_id)
    assert (status, body["code"]) == (503, "unavailable")

    # Restarted empty (its data folder is new): only the refresh can put Alice back.
    restarted = start_valkey(tmp_path / "valkey-empty", own_valkey.port, appendonly=True)
    try:

        async def alice_alone() -> bool:
            status, body = await _presence(gateway, alice, channel_id)
            return status == 200 and [u["id"] for u in body["data"]["users"]] == [alice.user_id]

        await eventually(alice_alone, within=10)
        await ws_alice.send_str('{"type": "text", "content": "still here", "client_id": "c-1"}')
        ack, _ = await receive_each(ws_alice, "ack", "message")
        assert ack["success"] is True
        assert not ws_alice.closed
    finally:
        restarted.stop()


async def test_presence_of_a_channel_nobody_is_in_is_empty(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(**_QUIET)
    channel_id, (alice,) = await room(gateway, "alice")
    status, body = await _presence(gateway, alice, channel_id)
    assert (status, body["data"]) == (
        200,
        {"channel_id": channel_id, "online_count": 0, "users": []},
    )


async def test_the_last_close_leaves_no_presence_keys(
    make_gateway: MakeGateway, redis_url: str
) -> None:
    """Counts only from the first user on, so the counts-only state is made too."""
    gateway = await make_gateway(presence_max_listed=0, **_QUIET)
    channel_id, (alice,) = await room(gateway, "alice")
    prefix = gateway.app[SETTINGS].redis_key_prefix
    raw = redis.Redis.from_url(redis_url)
    try:

        async def presence_keys() -> int:
            return len([key async for key in raw.scan_iter(f"{prefix}:*presence*")])

        async with _events(gateway, channel_id) as events:
            ws = await connect(gateway, alice, channel_id)
            assert (await events.next())["online_count"] == 1
            assert await presence_keys() == 3
            await ws.close()
            assert (await events.next())["status"] == "offline"
        assert await presence_keys() == 0
    finally:
        await raw.aclose()


async def test_a_failing_presence_call_leaves_the_socket_working(
    make_gateway: MakeGateway, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Presence fails (a key of the wrong type) while Redis serves everything else:
    sockets open and send, the failure is logged once and nothing else is, and
    the refresh restores presence once it can."""
    gateway = await make_gateway(presence_refresh_seconds=0.2, presence_ttl_seconds=5.0)
    channel_id, (alice, bob) = await room(gateway, "alice", "bob")
    settings = gateway.app[SETTINGS]
    entries = RedisKeys(settings.redis_key_prefix, settings.redis_partitions).presence_entries(
        channel_id
    )
    raw = redis.Redis.from_url(redis_url)
    try:
        await raw.set(entries, "not a sorted set")
        with caplog.at_level(logging.WARNING):
            ws = await connect(gateway, alice, channel_id)
            await connect(gateway, bob, channel_id)
            await ws.send_str('{"type": "text", "content": "hi", "client_id": "c-1"}')
            ack, message = await receive_each(ws, "ack", "message")
            assert (ack["seq"], message["seq"]) == (1, 1)
            status, body = await _presence(gateway, alice, channel_id)
            assert (status, body["code"]) == (503, "unavailable")
        logged = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
        assert logged == [
            ("gateway.presence", "WARNING", "presence updates paused until Redis answers")
        ]

        await raw.delete(entries)

        async def alice_online() -> bool:
            status, body = await _presence(gateway, alice, channel_id)
            return status == 200 and body["data"]["online_count"] == 2

        await eventually(alice_online)
        assert not ws.closed
    finally:
        await raw.aclose()


async def test_multiplexed_sockets_on_every_gateway_get_presence_changes(
    make_gateway: MakeGateway,
) -> None:
    """topic -> broker -> Hub.deliver_event -> the multiplexed sockets of the channel,
    on another gateway than the one whose user came and went."""
    gateway_a, gateway_b = await make_gateway(**_QUIET), await make_gateway(**_QUIET)
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    watcher = await open_mux(gateway_a, alice)
    await subscribe(watcher, channel_id)
    assert await receive_until(watcher, "presence") == {
        "type": "presence",
        "channel_id": channel_id,
        "user_id": alice.user_id,
        "status": "online",
        "online_count": 1,
    }

    bob_socket = await open_mux(gateway_b, bob)
    await subscribe(bob_socket, channel_id)
    online = await receive_until(watcher, "presence")
    await bob_socket.close()
    offline = await receive_until(watcher, "presence")

    assert online == {
        "type": "presence",
        "channel_id": channel_id,
        "user_id": bob.user_id,
        "status": "online",
        "online_count": 2,
    }
    assert offline == online | {"status": "offline", "online_count": 1}


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"presence_refresh_seconds": 10.0, "presence_ttl_seconds": 19.9}, "PRESENCE_TTL_SECONDS"),
        ({"presence_refresh_seconds": 0.0}, "presence_refresh_seconds"),
        ({"presence_refresh_seconds": -1.0}, "presence_refresh_seconds"),
        ({"presence_max_listed": -1}, "presence_max_listed"),
        ({"presence_max_listed": 10_001}, "presence_max_listed"),
    ],
)
def test_presence_settings_out_of_bounds_are_refused(values: dict[str, Any], named: str) -> None:
    """A TTL under two refresh intervals would let one late refresh expire a live user."""
    with pytest.raises(ValidationError, match=named):
        Settings(jwt_secret="s" * 40, **values)
