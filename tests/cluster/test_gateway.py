"""Gateways and the worker in cluster mode, against a real 3-master Valkey cluster.

Two in-process gateways share the cluster, as two replicas would: a message
sent through one reaches the other only if the send script's SPUBLISH and the
other gateway's SSUBSCRIBE meet on the master that owns the topic's slot.
The slot-migration tests move a channel's slot to another master under live
sockets, which Valkey tells subscribers about with an `sunsubscribe` push (or,
for a gateway that had no subscription there, a MOVED answer to its next
SSUBSCRIBE).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import asyncpg
import orjson
from aiohttp.test_utils import TestClient

from gateway.app_keys import KEYS, PRESENCE, REDIS
from persistence.worker import Worker
from shared.local_cluster import ValkeyCluster
from shared.redis_keys import RedisKeys
from shared.settings import Settings
from tests.cluster.conftest import MakeGateway, SettingsFactory
from tests.cluster.servers import migrate_slot, owner_port, shard_subscribers
from tests.faults import chat_clients
from tests.gateway.api_client import (
    Account,
    connect,
    create_channel,
    eventually,
    join,
    receive_until,
    room,
    send_texts,
    signup,
)
from tests.gateway.test_mux import open_mux, put, subscribe
from tests.gateway.test_mux import receive_json as mux_receive_json
from tests.gateway.test_mux import send_text as mux_send_text

_SETTLE_SECONDS = 20.0


def _topic(settings: Settings, channel_id: int) -> str:
    return RedisKeys(settings.redis_key_prefix, settings.redis_partitions).channel_topic(channel_id)


async def _channels(
    gateway: TestClient[Any, Any], owner: Account, members: list[Account], count: int
) -> list[int]:
    channel_ids = []
    for index in range(count):
        channel_id = await create_channel(gateway, owner, f"room-{index}")
        for member in members:
            await join(gateway, member, channel_id)
        channel_ids.append(channel_id)
    return channel_ids


async def test_message_crosses_gateways_over_sharded_pub_sub(
    make_gateway: MakeGateway, cluster_settings: SettingsFactory, valkey_cluster: ValkeyCluster
) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    ws_alice = await connect(gateway_a, alice, channel_id)
    ws_bob = await connect(gateway_b, bob, channel_id)

    await ws_alice.send_str('{"type": "text", "content": "Hello", "client_id": "c-1"}')

    ack = await receive_until(ws_alice, "ack")
    received = await receive_until(ws_bob, "message")
    assert (ack["id"], ack["seq"]) == (received["id"], 1)
    topic = _topic(cluster_settings(), channel_id)
    # Both gateways hold a sharded subscription, on the master owning the slot.
    assert await shard_subscribers(await owner_port(valkey_cluster, topic), topic) == 2
    for gateway in (gateway_a, gateway_b):
        assert (await gateway.get("/readyz")).status == 200


async def test_channels_on_every_master_keep_their_own_order(
    make_gateway: MakeGateway, cluster_settings: SettingsFactory, valkey_cluster: ValkeyCluster
) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    alice, bob = await signup(gateway_a, "alice"), await signup(gateway_b, "bob")
    channel_ids = await _channels(gateway_a, alice, [bob], 4)
    settings = cluster_settings()
    owners = {await owner_port(valkey_cluster, _topic(settings, c)) for c in channel_ids}
    assert owners == set(valkey_cluster.ports)  # the channels span all three masters
    senders = [await connect(gateway_a, alice, c) for c in channel_ids]
    listeners = [await connect(gateway_b, bob, c) for c in channel_ids]

    sent = await asyncio.gather(*(send_texts(ws, 30, f"c{n}") for n, ws in enumerate(senders)))

    for ws, acks in zip(listeners, sent, strict=True):
        assert acks.acked_seqs == list(range(1, 31))
        frames = [await receive_until(ws, "message") for _ in range(30)]
        assert [frame["seq"] for frame in frames] == list(range(1, 31))
        assert [frame["body"]["content"] for frame in frames] == [
            f"{frames[0]['body']['content'].split()[0]} {n}" for n in range(30)
        ]


async def test_leaving_closes_the_users_sockets_on_the_other_gateway(
    make_gateway: MakeGateway,
) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    channel_id, (_alice, bob) = await room(gateway_a, "alice", "bob")
    ws_bob = await connect(gateway_b, bob, channel_id)

    response = await gateway_a.post(
        "/api/v1/channels/leave", json={"channel_id": channel_id}, headers=bob.auth
    )

    assert response.status == 200
    closing = await ws_bob.receive(timeout=5)
    assert closing.type is aiohttp.WSMsgType.CLOSE
    assert ws_bob.close_code == 4403


async def test_logout_closes_the_users_sockets_in_channels_on_every_master(
    make_gateway: MakeGateway,
) -> None:
    """The revocation's publishes, pipelined, each reach the master owning its topic."""
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    owner = await signup(gateway_a, "owner")
    bob = await signup(gateway_a, "bob")
    channel_ids = await _channels(gateway_a, owner, [bob], 6)
    sockets = [await connect(gateway_b, bob, channel_id) for channel_id in channel_ids]

    assert (await gateway_a.post("/api/v1/auth/logout", headers=bob.auth)).status == 200
    for ws in sockets:
        closing = await ws.receive(timeout=5)
        assert closing.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 4401


def _url(gateway: TestClient[Any, Any]) -> str:
    return str(gateway.make_url("")).rstrip("/")


async def test_subscriptions_follow_a_slot_migrated_under_traffic(
    make_gateway: MakeGateway, cluster_settings: SettingsFactory, valkey_cluster: ValkeyCluster
) -> None:
    gateways = [await make_gateway(), await make_gateway()]
    urls = [_url(gateway) for gateway in gateways]
    accounts = [await signup(gateways[0], name) for name in ("alice", "bob", "carol")]
    channel_id = (await _channels(gateways[0], accounts[0], accounts[1:], 1))[0]
    topic = _topic(cluster_settings(), channel_id)
    source = await owner_port(valkey_cluster, topic)
    target = next(port for port in valkey_cluster.ports if port != source)
    clients = [chat_clients.Account(a.user_id, a.token) for a in accounts]
    async with aiohttp.ClientSession() as session:
        members = [
            chat_clients.Member(session, [urls[n % 2]], account, channel_id)
            for n, account in enumerate(clients[1:])
        ]
        for member in members:
            member.start()
            await asyncio.wait_for(member.connected.wait(), _SETTLE_SECONDS)
        sender = chat_clients.Sender(session, urls, clients[0], channel_id, "m")
        sending = asyncio.create_task(sender.send(60, pause=0.01))
        await sender.wait_acked(20, _SETTLE_SECONDS)

        await migrate_slot(topic, source, target, valkey_cluster.ports)

        async with asyncio.timeout(_SETTLE_SECONDS):
            await sending
        for member in members:
            await member.wait_for_seq(60, _SETTLE_SECONDS)
        # Each gateway moved its subscription to the new master.
        assert await owner_port(valkey_cluster, topic) == target
        assert await shard_subscribers(target, topic) == 2
        assert await shard_subscribers(source, topic) == 0
        for member in members:
            await member.stop()

    assert sorted(seq for _, seq in sender.acked.values()) == list(range(1, 61))
    for member in members:
        assert member.seqs == list(range(1, 61)), member.close_codes
    assert member.close_codes == []  # nobody had to reconnect


async def test_subscribing_after_an_unseen_slot_move_follows_the_redirect(
    make_gateway: MakeGateway, cluster_settings: SettingsFactory, valkey_cluster: ValkeyCluster
) -> None:
    """The gateway's slot map is stale (it held no subscription there, so it got
    no `sunsubscribe`): its SSUBSCRIBE is answered MOVED, and it must re-place
    the topic instead of refusing the socket."""
    gateway = await make_gateway()
    alice = await signup(gateway, "alice")
    settings = cluster_settings()
    by_owner: dict[int, list[int]] = {}
    for channel_id in await _channels(gateway, alice, [], 8):
        port = await owner_port(valkey_cluster, _topic(settings, channel_id))
        by_owner.setdefault(port, []).append(channel_id)
    # Two channels (two slots) on one master: the MOVED answer names no topic,
    # so the gateway re-places every topic of that link, the steady one too.
    source, (moved, steady, *_) = next((p, c) for p, c in by_owner.items() if len(c) >= 2)
    target = next(port for port in valkey_cluster.ports if port != source)
    ws_steady = await connect(gateway, alice, steady)
    topic = _topic(settings, moved)
    await migrate_slot(topic, source, target, valkey_cluster.ports)

    ws_moved = await connect(gateway, alice, moved)
    await ws_moved.send_str(orjson.dumps({"type": "text", "content": "after the move"}).decode())
    await ws_steady.send_str(orjson.dumps({"type": "text", "content": "elsewhere"}).decode())

    assert (await receive_until(ws_moved, "message"))["seq"] == 1
    assert (await receive_until(ws_steady, "message"))["seq"] == 1
    assert await shard_subscribers(target, topic) == 1


async def test_worker_persists_every_partition_in_cluster_mode(
    make_gateway: MakeGateway,
    cluster_settings: SettingsFactory,
    pg_pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    settings = cluster_settings(redis_partitions=4)
    gateway = await make_gateway(redis_partitions=4)
    alice = await signup(gateway, "alice")
    channel_ids = await _channels(gateway, alice, [], 4)  # partitions 1, 2, 3 and 0
    acked: dict[int, list[int]] = {}
    for channel_id in channel_ids:
        ws = await connect(gateway, alice, channel_id)
        await send_texts(ws, 25, f"c{channel_id}")
        acked[channel_id] = list(range(1, 26))
        await ws.close()

    persisted = await Worker(settings).run_until_idle()

    assert persisted == 100
    rows = await pg_pool.fetch("SELECT channel_id, seq FROM messages ORDER BY channel_id, seq")
    stored: dict[int, list[int]] = {}
    for row in rows:
        stored.setdefault(row["channel_id"], []).append(row["seq"])
    assert stored == acked
    assert await Worker(settings).run_until_idle() == 0  # everything was acked


async def test_presence_across_gateways_on_every_master(make_gateway: MakeGateway) -> None:
    """Presence scripts run on each channel's master, and the refresh (one call per
    channel, spread over the masters) keeps entries alive past their first expiry."""
    settings = {"presence_refresh_seconds": 0.2, "presence_ttl_seconds": 0.6}
    gateway_a, gateway_b = await make_gateway(**settings), await make_gateway(**settings)
    alice, bob = await signup(gateway_a, "alice"), await signup(gateway_a, "bob")
    channel_ids = await _channels(gateway_a, alice, [bob], 3)  # partitions 1-3
    for channel_id in channel_ids:
        await connect(gateway_a, alice, channel_id)
        await connect(gateway_b, bob, channel_id)
    app = gateway_a.app
    redis, keys = app[REDIS], app[KEYS]
    entry = f"{alice.user_id}:{app[PRESENCE].node_id}"
    first_expiry = [await redis.zscore(keys.presence_entries(c), entry) for c in channel_ids]
    assert None not in first_expiry

    async def refreshed_everywhere() -> bool:
        expiries = [await redis.zscore(keys.presence_entries(c), entry) for c in channel_ids]
        pairs = zip(expiries, first_expiry, strict=True)
        return all(new is not None and new > old for new, old in pairs)

    await eventually(refreshed_everywhere)
    for channel_id in channel_ids:
        response = await gateway_b.get(f"/api/v1/channels/{channel_id}/presence", headers=bob.auth)
        data = (await response.json())["data"]
        assert [user["id"] for user in data["users"]] == [alice.user_id, bob.user_id]


async def test_typing_is_limited_per_user_on_every_master(make_gateway: MakeGateway) -> None:
    """The typing script (marker and SPUBLISH, one slot) runs on each channel's master."""
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    alice, bob = await signup(gateway_a, "alice"), await signup(gateway_a, "bob")
    channel_ids = await _channels(gateway_a, alice, [bob], 3)  # partitions 1-3
    phone, laptop = await open_mux(gateway_a, alice), await open_mux(gateway_b, alice)
    watcher = await open_mux(gateway_b, bob)
    for channel_id in channel_ids:
        for ws in (phone, laptop, watcher):
            await subscribe(ws, channel_id)

    for channel_id in channel_ids:
        await put(phone, type="typing", channel_id=channel_id)
        typing = await receive_until(watcher, "typing")
        assert (typing["channel_id"], typing["user_id"]) == (channel_id, alice.user_id)
        await put(laptop, type="typing", channel_id=channel_id)  # within the interval
        await mux_send_text(laptop, channel_id, "typed", f"c-{channel_id}")
        assert (await mux_receive_json(watcher))["type"] == "message"
