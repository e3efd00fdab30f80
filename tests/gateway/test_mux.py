"""The multiplexed socket (`WS /api/v1/ws`) over real WebSockets, two gateways, one Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import asyncpg
import orjson
from aiohttp.test_utils import TestClient

from gateway.app import drain
from gateway.app_keys import HUB, METRICS
from tests.gateway import api_client
from tests.gateway.api_client import (
    RECEIVE_TIMEOUT,
    Account,
    connect,
    create_channel,
    expect_refusal,
    join,
    receive_each,
    receive_until,
    room,
    send_texts,
    signup,
)
from tests.gateway.conftest import MakeGateway
from tests.gateway.raw_websocket import TEXT, RawSocket
from tests.gateway.test_chat import MESSAGE_FIELDS


async def receive_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The next frame that is not a `presence` event: those come as members
    subscribe and close, and `tests/gateway/test_presence.py` checks them."""
    while True:
        frame = await api_client.receive_json(ws)
        if frame["type"] != "presence":
            return frame


async def open_mux(
    client: TestClient[Any, Any], account: Account, **kwargs: Any
) -> aiohttp.ClientWebSocketResponse:
    return await client.ws_connect(f"/api/v1/ws?token={account.token}", **kwargs)


async def put(ws: aiohttp.ClientWebSocketResponse, **frame: Any) -> None:
    await ws.send_str(orjson.dumps(frame).decode())


async def subscribe(
    ws: aiohttp.ClientWebSocketResponse, channel_id: int, since: int | None = None
) -> dict[str, Any]:
    if since is None:
        await put(ws, type="subscribe", channel_id=channel_id)
    else:
        await put(ws, type="subscribe", channel_id=channel_id, since=since)
    frame = await receive_until(ws, "subscribed")
    assert frame == {"type": "subscribed", "channel_id": channel_id, "last_seq": frame["last_seq"]}
    return frame


async def send_text(
    ws: aiohttp.ClientWebSocketResponse, channel_id: int, content: str, client_id: str
) -> None:
    await put(
        ws,
        type="send",
        channel_id=channel_id,
        body={"type": "text", "content": content},
        client_id=client_id,
    )


async def close_code_of(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    closing = await ws.receive(timeout=RECEIVE_TIMEOUT)
    while (
        closing.type is aiohttp.WSMsgType.TEXT and orjson.loads(closing.data)["type"] == "presence"
    ):
        closing = await ws.receive(timeout=RECEIVE_TIMEOUT)
    assert closing.type is aiohttp.WSMsgType.CLOSE, closing
    return ws.close_code


async def next_error(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    frame = await receive_json(ws)
    assert frame["type"] == "error", frame
    assert frame["success"] is False
    return frame


async def test_send_on_one_gateway_reaches_subscribers_on_the_other(
    make_gateway: MakeGateway,
) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    mux_alice = await open_mux(gateway_a, alice)
    mux_bob = await open_mux(gateway_b, bob)
    chat_bob = await connect(gateway_b, bob, channel_id)
    assert (await subscribe(mux_alice, channel_id))["last_seq"] == 0
    await subscribe(mux_bob, channel_id)

    await send_text(mux_alice, channel_id, "hello", "c-1")

    ack, own = await receive_each(mux_alice, "ack", "message")
    assert ack["channel_id"] == channel_id
    assert ack["client_id"] == "c-1"
    assert ack["success"] is True
    assert ack["seq"] == 1
    on_mux = await receive_json(mux_bob)
    on_chat = await receive_json(chat_bob)
    # The same frame as the chat socket's, field for field.
    assert on_mux == on_chat == own
    assert set(on_mux) == MESSAGE_FIELDS
    assert on_mux["body"] == {"type": "text", "content": "hello"}
    assert on_mux["channel_id"] == channel_id


async def test_subscribe_with_since_replays_then_goes_live(make_gateway: MakeGateway) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    chat_alice = await connect(gateway_a, alice, channel_id)
    await send_texts(chat_alice, 5, "old")
    mux_bob = await open_mux(gateway_b, bob)

    assert (await subscribe(mux_bob, channel_id, since=2))["last_seq"] == 5
    await send_texts(chat_alice, 1, "new")

    seqs = [(await receive_json(mux_bob))["seq"] for _ in range(4)]
    assert seqs == [3, 4, 5, 6]


async def test_twenty_subscribes_in_one_burst_each_resume_without_gap_or_duplicate(
    make_gateway: MakeGateway,
) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    alice = await signup(gateway_a, "alice")
    bob = await signup(gateway_a, "bob")
    channels = []
    for index in range(20):
        channel_id = await create_channel(gateway_a, alice, f"room-{index}")
        await join(gateway_a, bob, channel_id)
        channels.append(channel_id)
    mux_alice = await open_mux(gateway_a, alice)
    for channel_id in channels:
        await subscribe(mux_alice, channel_id)
    for index, channel_id in enumerate(channels):
        for n in range(3):
            await send_text(mux_alice, channel_id, f"m{n}", f"c-{index}-{n}")
    for _ in range(20 * 3):
        await receive_until(mux_alice, "ack")
    mux_bob = await open_mux(gateway_b, bob)

    # One burst, each with a since; messages keep arriving meanwhile.
    for channel_id in channels:
        await put(mux_bob, type="subscribe", channel_id=channel_id, since=1)
    for index, channel_id in enumerate(channels):
        await send_text(mux_alice, channel_id, "live", f"live-{index}")

    seen: dict[int, list[int]] = {channel_id: [] for channel_id in channels}
    subscribed: set[int] = set()
    async with asyncio.timeout(RECEIVE_TIMEOUT * 2):
        while sum(map(len, seen.values())) < 20 * 3:
            frame = await receive_json(mux_bob)
            if frame["type"] == "subscribed":
                subscribed.add(frame["channel_id"])
                continue
            assert frame["type"] == "message", frame
            assert frame["channel_id"] in subscribed  # never before its `subscribed`
            seen[frame["channel_id"]].append(frame["seq"])
    assert all(seqs == [2, 3, 4] for seqs in seen.values()), seen


async def test_refusals_are_error_frames_with_the_channel_and_the_socket_stays_open(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway()
    channel_id, (alice, _) = await room(gateway, "alice", "bob")
    carol = await signup(gateway, "carol")
    other = await create_channel(gateway, carol, "carols")
    mux = await open_mux(gateway, alice)

    await put(mux, type="subscribe", channel_id=other)
    assert (await next_error(mux))["code"] == "not_a_member"
    await put(mux, type="subscribe", channel_id=10**9)
    refused = await next_error(mux)
    assert (refused["code"], refused["channel_id"]) == ("channel_not_found", 10**9)
    await send_text(mux, channel_id, "early", "c-0")
    refused = await next_error(mux)
    assert (refused["code"], refused["channel_id"]) == ("not_subscribed", channel_id)
    await put(mux, type="typing", channel_id=channel_id)
    assert (await next_error(mux))["code"] == "not_subscribed"
    await put(mux, type="subscribe", channel_id=channel_id, since=99)
    ahead = await next_error(mux)
    assert (ahead["code"], ahead["channel_id"]) == ("since_ahead", channel_id)
    assert (await receive_json(mux))["type"] == "subscribed"
    await put(mux, type="subscribe", channel_id=other)
    refused = await next_error(mux)
    assert (refused["code"], refused["channel_id"]) == ("not_a_member", other)

    await send_text(mux, channel_id, "still open", "c-1")
    ack, _ = await receive_each(mux, "ack", "message")
    assert ack["seq"] == 1


async def test_hostile_frames_are_refused_and_change_nothing(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(ws_max_body_bytes=4096)
    channel_id, (alice,) = await room(gateway, "alice")
    mux = await open_mux(gateway, alice)
    await subscribe(mux, channel_id)
    hostile = [
        ("{not json", "invalid_json"),
        ('{"type":"dance","channel_id":1}', "invalid_body"),
        ('{"channel_id":1}', "invalid_body"),
        ("[]", "invalid_body"),
        ('"subscribe"', "invalid_body"),
        ('{"type":"subscribe","channel_id":"1"}', "invalid_body"),
        ('{"type":"subscribe","channel_id":0}', "invalid_body"),
        ('{"type":"subscribe","channel_id":1e300}', "invalid_body"),
        ('{"type":"subscribe","channel_id":1,"since":-1}', "invalid_body"),
        ('{"type":"subscribe","channel_id":1,"since":true}', "invalid_body"),
        ('{"type":"subscribe","channel_id":1,"extra":1}', "invalid_body"),
        ('{"type":"send","channel_id":1,"body":"hi"}', "invalid_body"),
        ('{"type":"send","channel_id":1,"body":{"type":"text","content":""}}', "invalid_body"),
        (
            '{"type":"send","channel_id":1,"body":{"type":"text","content":"x","client_id":"a"}}',
            "invalid_body",
        ),
        (
            '{"type":"send","channel_id":1,"client_id":"bad id",'
            '"body":{"type":"text","content":"x"}}',
            "invalid_body",
        ),
        ('{"type":"typing","channel_id":[1]}', "invalid_body"),
        ("[" * 3000 + "]" * 3000, "message_too_large"),
        ('{"a":' * 500 + "1" + "}" * 500, "invalid_json"),  # over the parser's depth
        ('{"a":' * 50 + "1" + "}" * 50, "invalid_body"),
        (
            orjson.dumps(
                {
                    "type": "send",
                    "channel_id": channel_id,
                    "body": {"type": "text", "content": "x" * 5000},
                }
            ).decode(),
            "message_too_large",
        ),
    ]
    for payload, code in hostile:
        await mux.send_str(payload)
        assert (await next_error(mux))["code"] == code, payload[:100]

    await send_text(mux, channel_id, "after", "c-1")
    ack, message = await receive_each(mux, "ack", "message")
    assert ack["seq"] == message["seq"] == 1  # nothing hostile was stored

    await mux.send_bytes(b'{"type":"subscribe","channel_id":1}')
    assert await close_code_of(mux) == 1003


async def test_subscriptions_beyond_the_limit_are_refused(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(ws_max_subscriptions=3)
    alice = await signup(gateway, "alice")
    channels = [await create_channel(gateway, alice, f"room-{n}") for n in range(5)]
    mux = await open_mux(gateway, alice)
    for channel_id in channels:
        await put(mux, type="subscribe", channel_id=channel_id)
    for channel_id in channels[:3]:
        assert (await receive_json(mux))["channel_id"] == channel_id
    for channel_id in channels[3:]:
        refused = await next_error(mux)
        assert (refused["code"], refused["channel_id"]) == ("too_many_subscriptions", channel_id)
    # Re-subscribing a subscribed channel replaces it and is not refused.
    await subscribe(mux, channels[0])
    await put(mux, type="unsubscribe", channel_id=channels[1])
    assert await receive_json(mux) == {"type": "unsubscribed", "channel_id": channels[1]}
    await subscribe(mux, channels[4])


async def _bob_in_two_channels(
    gateway_a: TestClient[Any, Any], gateway_b: TestClient[Any, Any]
) -> tuple[int, int, Account, Account, aiohttp.ClientWebSocketResponse]:
    """Two channels of alice's, both joined by bob, whose socket on B subscribes both."""
    first, (alice, bob) = await room(gateway_a, "alice", "bob")
    second = await create_channel(gateway_a, alice, "second")
    await join(gateway_a, bob, second)
    mux_bob = await open_mux(gateway_b, bob)
    await subscribe(mux_bob, first)
    await subscribe(mux_bob, second)
    return first, second, alice, bob, mux_bob


async def test_nothing_of_a_channel_follows_its_unsubscribed(make_gateway: MakeGateway) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    first, second, alice, _, mux_bob = await _bob_in_two_channels(gateway_a, gateway_b)
    chat_first = await connect(gateway_a, alice, first)
    chat_second = await connect(gateway_a, alice, second)

    # The hub's lock on the channel, held, keeps the connection in the hub after
    # `unsubscribed` (as a busy hub would for a moment): it must take nothing more.
    async with gateway_b.app[HUB]._locks[first]:
        await put(mux_bob, type="unsubscribe", channel_id=first)
        assert await receive_json(mux_bob) == {"type": "unsubscribed", "channel_id": first}
        await send_texts(chat_first, 3, "gone")
        await send_texts(chat_second, 1, "kept")

        frame = await receive_json(mux_bob)
        assert (frame["type"], frame["channel_id"]) == ("message", second)
    # Unsubscribing again is answered the same.
    await put(mux_bob, type="unsubscribe", channel_id=first)
    assert await receive_json(mux_bob) == {"type": "unsubscribed", "channel_id": first}


async def _alone_in_two_channels(
    gateway: TestClient[Any, Any],
) -> tuple[int, int, aiohttp.ClientWebSocketResponse]:
    first, (alice,) = await room(gateway, "alice")
    second = await create_channel(gateway, alice, "second")
    mux = await open_mux(gateway, alice)
    await subscribe(mux, first)
    await subscribe(mux, second)
    return first, second, mux


async def test_a_resent_client_id_is_acked_once_per_channel(make_gateway: MakeGateway) -> None:
    first, second, mux = await _alone_in_two_channels(await make_gateway())

    await send_text(mux, first, "once", "same")
    original, _ = await receive_each(mux, "ack", "message")
    await send_text(mux, first, "once", "same")
    again = await receive_json(mux)
    await send_text(mux, second, "other channel", "same")
    other, _ = await receive_each(mux, "ack", "message")

    assert again["type"] == "ack"
    assert again["duplicate"] is True
    assert (again["id"], again["seq"]) == (original["id"], original["seq"])
    assert other["channel_id"] == second
    assert "duplicate" not in other


async def test_sends_across_channels_are_acked_in_the_order_sent(
    make_gateway: MakeGateway,
) -> None:
    first, second, mux = await _alone_in_two_channels(await make_gateway())
    order = [first, second] * 10
    for index, channel_id in enumerate(order):
        await send_text(mux, channel_id, "m", f"c-{index}")
    acks = []
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        while len(acks) < len(order):
            frame = await receive_json(mux)
            if frame["type"] == "ack":
                acks.append(frame)
    assert [ack["client_id"] for ack in acks] == [f"c-{n}" for n in range(len(order))]
    assert [ack["channel_id"] for ack in acks] == order
    assert [ack["seq"] for ack in acks if ack["channel_id"] == first] == list(range(1, 11))


async def test_typing_reaches_event_sockets_on_every_gateway_once_per_interval(
    make_gateway: MakeGateway,
) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway(ws_typing_interval_seconds=30)
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    mux_alice = await open_mux(gateway_a, alice)
    chat_alice = await connect(gateway_a, alice, channel_id)
    mux_bob = await open_mux(gateway_b, bob)
    await subscribe(mux_alice, channel_id)
    await subscribe(mux_bob, channel_id)

    await put(mux_bob, type="typing", channel_id=channel_id)
    await put(mux_bob, type="typing", channel_id=channel_id)  # within the interval: dropped
    await send_text(mux_bob, channel_id, "typed", "c-1")

    typing = await receive_json(mux_alice)
    assert typing == {
        "type": "typing",
        "channel_id": channel_id,
        "user_id": bob.user_id,
        "expires_in_ms": 5000,
    }
    assert (await receive_json(mux_alice))["type"] == "message"  # one typing, not two
    # The chat socket (the Go server's clients) never gets event frames.
    assert (await receive_json(chat_alice))["type"] == "message"


async def test_removal_ends_that_subscription_only(make_gateway: MakeGateway) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    first, second, _, bob, mux_bob = await _bob_in_two_channels(gateway_a, gateway_b)

    left = await gateway_a.post(
        "/api/v1/channels/leave", json={"channel_id": first}, headers=bob.auth
    )
    assert left.status == 200, await left.text()

    removed = await next_error(mux_bob)
    assert (removed["code"], removed["channel_id"]) == ("not_a_member", first)
    await send_text(mux_bob, first, "after removal", "c-1")
    assert (await next_error(mux_bob))["code"] == "not_subscribed"
    await send_text(mux_bob, second, "still here", "c-2")
    ack, _ = await receive_each(mux_bob, "ack", "message")
    assert ack["channel_id"] == second


async def test_logout_closes_the_socket_4401(make_gateway: MakeGateway) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    channel_id, (alice,) = await room(gateway_a, "alice")
    mux = await open_mux(gateway_b, alice)
    await subscribe(mux, channel_id)

    response = await gateway_a.post("/api/v1/auth/logout", headers=alice.auth)
    assert response.status == 200

    assert await close_code_of(mux) == 4401


async def test_admission_is_the_chat_sockets(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(ws_max_sockets_per_user=2)
    alice = await signup(gateway, "alice")
    channels = [await create_channel(gateway, alice, f"room-{n}") for n in range(3)]

    no_token = await gateway.ws_connect("/api/v1/ws")
    assert (await expect_refusal(no_token))[0]["code"] == "missing_token"
    bad = await gateway.ws_connect("/api/v1/ws?token=nope")
    assert await expect_refusal(bad) == (
        {
            "success": False,
            "message": "Invalid or expired JWT",
            "type": "error",
            "code": "invalid_token",
        },
        4401,
    )
    foreign = await gateway.ws_connect(
        f"/api/v1/ws?token={alice.token}", headers={"Origin": "https://evil.example"}
    )
    assert (await expect_refusal(foreign))[1] == 4403
    as_protocol = await gateway.ws_connect("/api/v1/ws", protocols=("bearer", alice.token))
    # A socket with many subscriptions counts once against the per-user cap.
    for channel_id in channels:
        await subscribe(as_protocol, channel_id)
    second = await open_mux(gateway, alice)
    await subscribe(second, channels[0])
    third = await open_mux(gateway, alice)
    assert (await expect_refusal(third))[0]["code"] == "too_many_sockets"


async def test_the_membership_audit_ends_a_subscription_no_event_removed(
    make_gateway: MakeGateway, pg_pool: asyncpg.Pool
) -> None:
    gateway = await make_gateway(membership_recheck_seconds=0.3)
    first, (_, bob) = await room(gateway, "alice", "bob")
    mux = await open_mux(gateway, bob)
    await subscribe(mux, first)

    status = await pg_pool.execute(
        "DELETE FROM memberships WHERE channel_id = $1 AND user_id = $2", first, bob.user_id
    )
    assert status == "DELETE 1"

    removed = await next_error(mux)
    assert (removed["code"], removed["channel_id"]) == ("not_a_member", first)
    assert gateway.app[METRICS].membership_revocations.value == 1
    await put(mux, type="typing", channel_id=first)
    assert (await next_error(mux))["code"] == "not_subscribed"  # the socket is still open


async def test_drain_closes_a_socket_without_subscriptions_with_1012(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(drain_delay_seconds=0)
    alice = await signup(gateway, "alice")
    mux = await open_mux(gateway, alice)
    # A frame answered proves the socket is admitted before the drain starts.
    await put(mux, type="unsubscribe", channel_id=1)
    assert (await receive_json(mux))["type"] == "unsubscribed"

    draining = asyncio.create_task(drain(gateway.app))

    assert await close_code_of(mux) == 1012
    await draining


async def test_a_read_frame_moves_the_marker_and_reaches_the_users_sockets(
    make_gateway: MakeGateway,
) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    phone = await open_mux(gateway_a, alice)
    laptop = await open_mux(gateway_b, alice)
    mux_bob = await open_mux(gateway_b, bob)
    for ws in (phone, laptop, mux_bob):
        await subscribe(ws, channel_id)
    for n in range(3):
        await send_text(phone, channel_id, "m", f"c-{n}")

    await put(phone, type="read", channel_id=channel_id, seq=2)

    event = {"type": "read", "channel_id": channel_id, "user_id": alice.user_id}
    assert await receive_until(laptop, "read") == {**event, "last_read_seq": 2}
    assert await receive_until(phone, "read") == {**event, "last_read_seq": 2}
    await put(phone, type="read", channel_id=10**9, seq=1)
    refused = await next_error(phone)
    assert (refused["code"], refused["channel_id"]) == ("channel_not_found", 10**9)
    # Bob's socket got the messages and nothing of alice's marker.
    await send_text(phone, channel_id, "last", "c-last")
    seqs = [(await receive_json(mux_bob))["seq"] for _ in range(4)]
    assert seqs == [1, 2, 3, 4]


async def test_invalid_utf8_closes_1007_and_sends_nothing(
    make_gateway: MakeGateway, pg_pool: asyncpg.Pool
) -> None:
    gateway = await make_gateway()
    channel_id, (alice,) = await room(gateway, "alice")
    socket, _ = await RawSocket.connect(gateway.server, f"/api/v1/ws?token={alice.token}")
    subscribe_frame = orjson.dumps({"type": "subscribe", "channel_id": channel_id})
    socket.send(socket.frame(TEXT, subscribe_frame))
    assert (await socket.read_json())["type"] == "subscribed"
    send = b'{"type":"send","channel_id":%d,"body":{"type":"text","content":"\xc0\xaf"}}'
    socket.send(socket.frame(TEXT, send % channel_id))
    assert await socket.read_close() == 1007
    stored = await pg_pool.fetchval(
        "SELECT count(*) FROM messages WHERE channel_id = $1", channel_id
    )
    assert stored == 0
