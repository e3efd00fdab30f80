"""Edits, deletes, reactions and replies over real sockets: two gateways, one Redis,
the persistence worker, PostgreSQL and the history endpoints."""

from __future__ import annotations

from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from gateway.app_keys import KEYS, REDIS
from persistence.worker import Worker
from tests.gateway.api_client import (
    FILE_BODY,
    Account,
    connect,
    create_channel,
    error_of,
    join,
    receive_json,
    receive_until,
    room,
    signup,
)
from tests.gateway.conftest import MakeGateway
from tests.gateway.test_mux import open_mux, put, subscribe
from tests.gateway.test_mux import receive_json as receive_mux

Gateway = TestClient[Any, Any]
Socket = aiohttp.ClientWebSocketResponse


async def subscribed(gateway: Gateway, account: Account, channel_id: int) -> Socket:
    """A multiplexed socket of `account`, subscribed to the channel (live)."""
    ws = await open_mux(gateway, account)
    await subscribe(ws, channel_id)
    return ws


async def send(ws: Socket, channel_id: int, content: str, **extra: Any) -> dict[str, Any]:
    """Send a text on a multiplexed socket; the ack."""
    body = {"type": "text", "content": content}
    await put(ws, type="send", channel_id=channel_id, body=body, **extra)
    return await receive_until(ws, "ack")


async def change(ws: Socket, **frame: Any) -> dict[str, Any]:
    """An edit, delete or react frame; its ack or error frame."""
    await put(ws, **frame)
    while True:
        answer = await receive_mux(ws)
        if answer["type"] in ("ack", "error"):
            return answer


async def kinds(ws: Socket, count: int) -> list[tuple[str, int]]:
    frames = [await receive_mux(ws) for _ in range(count)]
    return [(frame["type"], frame["seq"]) for frame in frames]


async def persist(make_settings: Any, pg_pool: asyncpg.Pool) -> int:
    return await Worker(make_settings(), pool=pg_pool).run_until_idle()


async def history(gateway: Gateway, account: Account, channel_id: int) -> list[dict[str, Any]]:
    response = await gateway.get(f"/api/v1/channels/{channel_id}/messages", headers=account.auth)
    assert response.status == 200, await response.text()
    messages: list[dict[str, Any]] = (await response.json())["data"]["messages"]
    return messages


async def test_an_edit_on_one_gateway_is_seen_live_on_the_other_in_seq_order(
    make_gateway: MakeGateway,
) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    mux_alice, mux_bob = await open_mux(gateway_a, alice), await open_mux(gateway_b, bob)
    chat_bob = await connect(gateway_b, bob, channel_id)
    await subscribe(mux_alice, channel_id)
    await subscribe(mux_bob, channel_id)

    first = await send(mux_alice, channel_id, "helo")
    edit = {"type": "text", "content": "hello"}
    ack = await change(
        mux_alice,
        type="edit",
        channel_id=channel_id,
        message_id=first["id"],
        body=edit,
        client_id="e-1",
    )
    await send(mux_alice, channel_id, "world")

    assert ack["success"] is True
    assert (ack["message_id"], ack["seq"], ack["client_id"]) == (first["id"], 2, "e-1")
    assert await kinds(mux_bob, 3) == [("message", 1), ("message_edited", 2), ("message", 3)]
    # The per-channel socket keeps the Go server's frames: the edit's seq is skipped,
    # without a catch-up or a gap error.
    on_chat = [await receive_json(chat_bob) for _ in range(2)]
    assert [(f["type"], f["seq"]) for f in on_chat] == [("message", 1), ("message", 3)]


async def test_the_edit_frame_carries_the_new_body(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway()
    channel_id, (alice,) = await room(gateway, "alice")
    mux = await subscribed(gateway, alice, channel_id)
    sent = await send(mux, channel_id, "before")

    body = {"type": "text", "content": "after"}
    await put(mux, type="edit", channel_id=channel_id, message_id=sent["id"], body=body)
    event = await receive_until(mux, "message_edited")

    assert event["body"] == body
    assert (event["message_id"], event["user_id"], event["channel_id"]) == (
        sent["id"],
        alice.user_id,
        channel_id,
    )
    assert event["seq"] == 2
    assert event["id"] > sent["id"]


async def test_resume_replays_edits_deletes_and_reactions_in_order_from_redis_and_postgresql(
    make_gateway: MakeGateway, make_settings: Any, pg_pool: asyncpg.Pool
) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    mux = await subscribed(gateway_a, alice, channel_id)
    one = await send(mux, channel_id, "one")
    two = await send(mux, channel_id, "two")
    await change(
        mux,
        type="edit",
        channel_id=channel_id,
        message_id=one["id"],
        body={"type": "text", "content": "uno"},
    )
    await change(mux, type="react", channel_id=channel_id, message_id=one["id"], emoji="👍")
    await change(mux, type="delete", channel_id=channel_id, message_id=two["id"])
    expected = [
        ("message", 1),
        ("message", 2),
        ("message_edited", 3),
        ("reaction", 4),
        ("message_deleted", 5),
    ]

    from_redis = await open_mux(gateway_b, bob)
    await subscribe(from_redis, channel_id, since=0)
    assert await kinds(from_redis, 5) == expected

    # Redis keeps no recent history now: the same replay, rebuilt from PostgreSQL.
    assert await persist(make_settings, pg_pool) == 5
    await gateway_b.app[REDIS].delete(gateway_b.app[KEYS].channel_recent(channel_id))
    from_postgres = await open_mux(gateway_b, bob)
    await subscribe(from_postgres, channel_id, since=0)
    frames = [await receive_mux(from_postgres) for _ in range(5)]
    assert [(f["type"], f["seq"]) for f in frames] == expected
    assert frames[0]["body"] == {"type": "text", "content": "uno"}  # the latest version
    assert frames[2]["body"] == {"type": "text", "content": "uno"}
    assert (frames[3]["emoji"], frames[3]["count"], frames[3]["op"]) == ("👍", 1, "add")
    assert frames[1]["body"] == {}
    assert "deleted_at" in frames[1]
    assert frames[4]["message_id"] == two["id"]


async def test_history_shows_the_latest_version_the_tombstone_reactions_and_replies(
    make_gateway: MakeGateway, make_settings: Any, pg_pool: asyncpg.Pool
) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    mux_alice = await subscribed(gateway_a, alice, channel_id)
    mux_bob = await subscribed(gateway_b, bob, channel_id)
    parent = await send(mux_alice, channel_id, "parent")
    doomed = await send(mux_alice, channel_id, "secret")
    reply = await send(mux_bob, channel_id, "a reply", reply_to=parent["id"])
    await change(
        mux_alice,
        type="edit",
        channel_id=channel_id,
        message_id=parent["id"],
        body={"type": "text", "content": "parent, edited"},
    )
    await change(mux_alice, type="delete", channel_id=channel_id, message_id=doomed["id"])
    for ws, emoji in ((mux_alice, "👍"), (mux_bob, ":+1:"), (mux_alice, ":tada:")):
        ack = await change(
            ws, type="react", channel_id=channel_id, message_id=parent["id"], emoji=emoji
        )
        assert ack["success"] is True, ack
    assert ack["count"] == 1

    assert await persist(make_settings, pg_pool) == 8
    newest_first = await history(gateway_b, bob, channel_id)

    assert [m["id"] for m in newest_first] == [reply["id"], doomed["id"], parent["id"]]
    replied, tombstone, edited = newest_first
    assert edited["body"] == {"type": "text", "content": "parent, edited"}
    assert "edited_at" in edited
    assert "deleted_at" not in edited
    assert edited["reactions"] == [
        {"emoji": "👍", "count": 2, "me": True},
        {"emoji": "🎉", "count": 1, "me": False},
    ]
    assert edited["reply_count"] == 1
    assert (tombstone["body"], tombstone["reactions"], tombstone["seq"]) == ({}, [], 2)
    assert "deleted_at" in tombstone
    assert replied["reply_to"] == parent["id"]
    replies = await gateway_b.get(
        f"/api/v1/channels/{channel_id}/messages/{parent['id']}/replies", headers=bob.auth
    )
    assert [m["id"] for m in (await replies.json())["data"]["messages"]] == [reply["id"]]


async def test_adding_a_reaction_twice_sends_one_event(make_gateway: MakeGateway) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    mux_alice = await subscribed(gateway_a, alice, channel_id)
    mux_bob = await subscribed(gateway_b, bob, channel_id)
    target = await send(mux_alice, channel_id, "like me")
    react = {"type": "react", "channel_id": channel_id, "message_id": target["id"]}

    first = await change(mux_alice, **react, emoji="👍")
    again = await change(mux_alice, **react, emoji=":thumbsup:")  # the same emoji
    removed_nothing = await change(mux_alice, **react, emoji="🎉", op="remove")
    await send(mux_alice, channel_id, "after")

    assert (first["seq"], first["count"]) == (2, 1)
    assert again == {**again, "id": None, "seq": None, "unchanged": True, "count": 1}
    assert removed_nothing["unchanged"] is True
    assert removed_nothing["count"] == 0
    assert await kinds(mux_bob, 3) == [("message", 1), ("reaction", 2), ("message", 3)]


async def test_reactions_are_bounded_per_user_and_per_message(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(reaction_max_per_user=2, reaction_max_emojis=3)
    channel_id, (alice, bob) = await room(gateway, "alice", "bob")
    mux_alice = await subscribed(gateway, alice, channel_id)
    mux_bob = await subscribed(gateway, bob, channel_id)
    target = await send(mux_alice, channel_id, "popular")
    react = {"type": "react", "channel_id": channel_id, "message_id": target["id"]}

    assert (await change(mux_alice, **react, emoji="😀"))["type"] == "ack"
    assert (await change(mux_alice, **react, emoji="😁"))["type"] == "ack"
    over_user = await change(mux_alice, **react, emoji="😂")
    assert (await change(mux_bob, **react, emoji="🤣"))["type"] == "ack"
    over_message = await change(mux_bob, **react, emoji="😃")

    assert over_user["code"] == over_message["code"] == "too_many_reactions"
    assert over_user["channel_id"] == channel_id
    # An emoji the message has already is no new distinct one.
    assert (await change(mux_bob, **react, emoji="😀"))["count"] == 2


async def test_changes_not_allowed_are_refused_with_their_code(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway()
    channel_id, (owner, alice, bob) = await room(gateway, "owner", "alice", "bob")
    other_channel = await create_channel(gateway, bob, "elsewhere")
    mux_alice, mux_bob = await open_mux(gateway, alice), await open_mux(gateway, bob)
    mux_owner = await open_mux(gateway, owner)
    for ws in (mux_alice, mux_bob, mux_owner):
        await subscribe(ws, channel_id)
    await subscribe(mux_bob, other_channel)
    mine = await send(mux_alice, channel_id, "alice's")
    await put(mux_alice, type="send", channel_id=channel_id, body=FILE_BODY)
    a_file = await receive_until(mux_alice, "ack")
    elsewhere = await send(mux_bob, other_channel, "in another channel")
    text = {"type": "text", "content": "x"}

    async def code(ws: Socket, **frame: Any) -> str:
        answer = await change(ws, channel_id=channel_id, **frame)
        assert answer["type"] == "error", answer
        assert answer["channel_id"] == channel_id
        return str(answer["code"])

    assert await code(mux_bob, type="edit", message_id=mine["id"], body=text) == "not_your_message"
    assert await code(mux_bob, type="delete", message_id=mine["id"]) == "not_your_message"
    # Even an owner edits only their own messages.
    assert await code(mux_owner, type="edit", message_id=mine["id"], body=text) == (
        "not_your_message"
    )
    assert await code(mux_alice, type="edit", message_id=a_file["id"], body=text) == "not_editable"
    # The body's schema is text: a file body is no edit at all (refused as it is read).
    refused = await change(
        mux_alice, type="edit", channel_id=channel_id, message_id=mine["id"], body=FILE_BODY
    )
    assert refused["code"] == "invalid_body"
    for frame in (
        {"type": "react", "message_id": elsewhere["id"], "emoji": "👍"},
        {"type": "delete", "message_id": elsewhere["id"]},
        {"type": "edit", "message_id": elsewhere["id"], "body": text},
        {"type": "react", "message_id": 2**53, "emoji": "👍"},
    ):
        assert await code(mux_bob, **frame) == "message_not_found"
    # The owner deletes anyone's message; after that, nothing changes it.
    assert (await change(mux_owner, type="delete", channel_id=channel_id, message_id=mine["id"]))[
        "type"
    ] == "ack"
    assert await code(mux_alice, type="edit", message_id=mine["id"], body=text) == (
        "message_deleted"
    )
    assert await code(mux_alice, type="delete", message_id=mine["id"]) == "message_deleted"
    assert await code(mux_bob, type="react", message_id=mine["id"], emoji="👍") == (
        "message_deleted"
    )


async def test_reply_to_a_message_of_another_channel_is_refused(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway()
    channel_id, (alice, bob) = await room(gateway, "alice", "bob")
    other_channel = await create_channel(gateway, bob, "elsewhere")
    mux_bob = await subscribed(gateway, bob, channel_id)
    await subscribe(mux_bob, other_channel)
    elsewhere = await send(mux_bob, other_channel, "elsewhere")
    chat_alice = await connect(gateway, alice, channel_id)

    await put(
        mux_bob,
        type="send",
        channel_id=channel_id,
        body={"type": "text", "content": "re"},
        reply_to=elsewhere["id"],
    )
    on_mux = await receive_until(mux_bob, "error")
    await chat_alice.send_json({"type": "text", "content": "re", "reply_to": elsewhere["id"]})
    on_chat = await receive_until(chat_alice, "error")
    await chat_alice.send_json({"type": "text", "content": "ok"})
    ok = await receive_until(chat_alice, "message")

    assert on_mux["code"] == on_chat["code"] == "message_not_found"
    assert on_mux["errors"] == [{"field": "reply_to"}]
    assert ok["seq"] == 1  # the refused replies spent no seq


# Each as JSON text: a lone surrogate cannot be encoded by a JSON library.
@pytest.mark.parametrize(
    "emoji",
    [
        '""',
        '"a"',
        '"👍👍"',
        '":nope:"',
        '"::"',
        '":' + "a" * 80 + ':"',
        '"👍\\u0000"',
        '"\\ud83d"',
        '"' + "👍" * 70 + '"',
        "1",
        "null",
        '["👍"]',
        '{"emoji": "👍"}',
    ],
)
async def test_a_reaction_that_is_not_one_emoji_is_refused(
    make_gateway: MakeGateway, emoji: str
) -> None:
    gateway = await make_gateway()
    channel_id, (alice,) = await room(gateway, "alice")
    mux = await subscribed(gateway, alice, channel_id)
    target = await send(mux, channel_id, "x")

    await mux.send_str(
        f'{{"type":"react","channel_id":{channel_id},"message_id":{target["id"]},"emoji":{emoji}}}'
    )
    answer = await receive_until(mux, "error")
    rest = await gateway.post(
        f"/api/v1/channels/{channel_id}/messages/{target['id']}/reactions",
        data=f'{{"emoji":{emoji}}}'.encode(),
        headers={**alice.auth, "Content-Type": "application/json"},
    )

    assert answer["code"] == "invalid_body"
    assert await error_of(rest) == (422, "invalid_body")


async def test_hostile_edits_are_refused_and_change_nothing(
    make_gateway: MakeGateway, make_settings: Any, pg_pool: asyncpg.Pool
) -> None:
    gateway = await make_gateway()
    channel_id, (alice,) = await room(gateway, "alice")
    mux = await subscribed(gateway, alice, channel_id)
    target = await send(mux, channel_id, "original")
    edit = {"type": "edit", "channel_id": channel_id, "message_id": target["id"]}

    huge = await change(mux, **edit, body={"type": "text", "content": "x" * 20_000})
    nul = await change(mux, **edit, body={"type": "text", "content": "a\u0000b"})
    blank = await change(mux, **edit, body={"type": "text", "content": "   "})
    nested = await change(mux, **edit, body={"type": "text", "content": {"a": [1]}})
    sneaky = await change(mux, **edit, body={"type": "text", "content": "x", "client_id": "c"})
    bad_id = await change(
        mux,
        type="edit",
        channel_id=channel_id,
        message_id=-1,
        body={"type": "text", "content": "x"},
    )
    path = f"/api/v1/channels/{channel_id}/messages/{target['id']}"
    rest_nul = await gateway.patch(
        path, json={"body": {"type": "text", "content": "\u0000"}}, headers=alice.auth
    )
    rest_huge = await gateway.patch(
        path, json={"body": {"type": "text", "content": "x" * 100_000}}, headers=alice.auth
    )

    assert huge["code"] == "message_too_large"
    assert [f["code"] for f in (nul, blank, nested, sneaky, bad_id)] == ["invalid_body"] * 5
    assert await error_of(rest_nul) == (422, "invalid_body")
    assert await error_of(rest_huge) == (413, "payload_too_large")
    assert await persist(make_settings, pg_pool) == 1
    [stored] = await history(gateway, alice, channel_id)
    assert stored["body"]["content"] == "original"
    assert "edited_at" not in stored


async def test_rest_changes_answer_once_durable_and_reach_subscribers(
    make_gateway: MakeGateway, make_settings: Any, pg_pool: asyncpg.Pool
) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    channel_id, (alice, bob, carol) = await room(gateway_a, "alice", "bob", "carol")
    mux_bob = await subscribed(gateway_b, bob, channel_id)
    chat_alice = await connect(gateway_a, alice, channel_id)
    await chat_alice.send_json({"type": "text", "content": "typo"})
    sent = await receive_until(chat_alice, "ack")
    path = f"/api/v1/channels/{channel_id}/messages/{sent['id']}"

    # Not persisted yet: the message is found in the recent stream.
    edited = await gateway_a.patch(
        path, json={"body": {"type": "text", "content": "fixed"}}, headers=alice.auth
    )
    reacted = await gateway_a.post(path + "/reactions", json={"emoji": "🎉"}, headers=bob.auth)
    by_other = await gateway_a.delete(path, headers=carol.auth)
    outsider = await signup(gateway_a, "mallory")
    not_member = await gateway_a.post(
        path + "/reactions", json={"emoji": "🎉"}, headers=outsider.auth
    )
    deleted = await gateway_a.delete(path, headers=alice.auth)

    assert edited.status == 200, await edited.text()
    data = (await edited.json())["data"]
    assert data == {**data, "channel_id": channel_id, "message_id": sent["id"], "seq": 2}
    assert data["id"] > sent["id"]
    assert (await reacted.json())["data"]["count"] == 1
    assert await error_of(by_other) == (403, "not_your_message")
    assert await error_of(not_member) == (403, "not_a_member")
    assert (await deleted.json())["data"]["seq"] == 4
    assert await kinds(mux_bob, 4) == [
        ("message", 1),
        ("message_edited", 2),
        ("reaction", 3),
        ("message_deleted", 4),
    ]
    assert await persist(make_settings, pg_pool) == 4
    [tombstone] = await history(gateway_b, bob, channel_id)
    assert tombstone["body"] == {}
    assert tombstone["reactions"] == []


async def test_an_admin_deletes_in_a_channel_they_are_not_in(
    make_gateway: MakeGateway, pg_pool: asyncpg.Pool
) -> None:
    gateway = await make_gateway()
    channel_id, (alice,) = await room(gateway, "alice")
    admin = await signup(gateway, "admin")
    await pg_pool.execute("UPDATE users SET role = 'admin' WHERE id = $1", admin.user_id)
    chat = await connect(gateway, alice, channel_id)
    await chat.send_json({"type": "text", "content": "spam"})
    sent = await receive_until(chat, "ack")

    response = await gateway.delete(
        f"/api/v1/channels/{channel_id}/messages/{sent['id']}", headers=admin.auth
    )

    assert response.status == 200, await response.text()


async def test_a_moderator_deletes_a_members_message(
    make_gateway: MakeGateway, pg_pool: asyncpg.Pool
) -> None:
    gateway = await make_gateway()
    channel_id, (owner, moderator, member) = await room(gateway, "owner", "mod", "member")
    await pg_pool.execute(
        "UPDATE memberships SET role = 'moderator' WHERE user_id = $1", moderator.user_id
    )
    chat = await connect(gateway, member, channel_id)
    await chat.send_json({"type": "text", "content": "rude"})
    sent = await receive_until(chat, "ack")
    path = f"/api/v1/channels/{channel_id}/messages/{sent['id']}"

    assert (await gateway.delete(path, headers=moderator.auth)).status == 200
    assert await error_of(await gateway.delete(path, headers=owner.auth)) == (
        409,
        "message_deleted",
    )


async def test_the_chat_socket_resumes_across_event_seqs_without_a_gap(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway()
    channel_id, (alice,) = await room(gateway, "alice")
    mux = await subscribed(gateway, alice, channel_id)
    one = await send(mux, channel_id, "one")
    await change(mux, type="react", channel_id=channel_id, message_id=one["id"], emoji="👍")
    await send(mux, channel_id, "two")

    chat = await connect(gateway, alice, channel_id, params={"since": 0})
    replayed = [await receive_json(chat) for _ in range(2)]
    await send(mux, channel_id, "three")
    live = await receive_json(chat)

    assert [(f["type"], f["seq"]) for f in [*replayed, live]] == [
        ("message", 1),
        ("message", 3),
        ("message", 4),
    ]


async def test_members_only_and_paging_of_replies(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway()
    channel_id, (alice,) = await room(gateway, "alice")
    outsider = await signup(gateway, "eve")
    path = f"/api/v1/channels/{channel_id}/messages/1/replies"

    assert await error_of(await gateway.get(path, headers=outsider.auth)) == (403, "not_a_member")
    assert await error_of(await gateway.get(path)) == (400, "missing_token")
    unknown = await gateway.get("/api/v1/channels/999999/messages/1/replies", headers=alice.auth)
    assert await error_of(unknown) == (404, "channel_not_found")
    bad = await gateway.get(path + "?limit=0", headers=alice.auth)
    assert await error_of(bad) == (422, "invalid_parameter")
    await join(gateway, outsider, channel_id)
    empty = await gateway.get(path, headers=outsider.auth)
    assert (await empty.json())["data"] == {"messages": [], "next_cursor": None}


async def test_a_channel_lists_its_last_message_not_the_last_event(
    make_gateway: MakeGateway, make_settings: Any, pg_pool: asyncpg.Pool
) -> None:
    """The channel list's `last_message` was the newest row, which a reaction is."""
    gateway = await make_gateway()
    channel_id, (alice,) = await room(gateway, "alice")
    mux = await subscribed(gateway, alice, channel_id)
    sent = await send(mux, channel_id, "the last word")
    await change(mux, type="react", channel_id=channel_id, message_id=sent["id"], emoji="👍")
    assert await persist(make_settings, pg_pool) == 2

    response = await gateway.get("/api/v1/me/channels", headers=alice.auth)

    [mine] = (await response.json())["data"]
    assert mine["last_message"]["id"] == sent["id"]
    assert mine["last_message"]["preview"] == "the last word"


async def test_a_lost_reaction_state_is_seeded_again_from_postgresql(
    make_gateway: MakeGateway, make_settings: Any, pg_pool: asyncpg.Pool
) -> None:
    gateway = await make_gateway()
    channel_id, (alice, bob) = await room(gateway, "alice", "bob")
    mux_alice = await subscribed(gateway, alice, channel_id)
    mux_bob = await subscribed(gateway, bob, channel_id)
    target = await send(mux_alice, channel_id, "old news")
    react = {"type": "react", "channel_id": channel_id, "message_id": target["id"]}
    await change(mux_alice, **react, emoji="👍")
    assert await persist(make_settings, pg_pool) == 2
    # Expired after a week without a change, or lost with Redis data.
    app = gateway.app
    await app[REDIS].delete(app[KEYS].message_state(channel_id, target["id"]))

    by_bob = await change(mux_bob, **react, emoji="👍")
    again = await change(mux_alice, **react, emoji="👍")

    assert (by_bob["seq"], by_bob["count"]) == (3, 2)
    assert again["unchanged"] is True
    assert again["count"] == 2


async def test_search_finds_the_latest_version_and_no_tombstone(
    make_gateway: MakeGateway, make_settings: Any, pg_pool: asyncpg.Pool
) -> None:
    gateway = await make_gateway()
    channel_id, (alice,) = await room(gateway, "alice")
    mux = await subscribed(gateway, alice, channel_id)
    edited = await send(mux, channel_id, "colour")
    deleted = await send(mux, channel_id, "zebra secret")
    await change(
        mux,
        type="edit",
        channel_id=channel_id,
        message_id=edited["id"],
        body={"type": "text", "content": "color"},
    )
    await change(mux, type="delete", channel_id=channel_id, message_id=deleted["id"])
    assert await persist(make_settings, pg_pool) == 4

    async def found(query: str) -> list[int]:
        response = await gateway.get(f"/api/v1/search?q={query}", headers=alice.auth)
        assert response.status == 200, await response.text()
        return [m["id"] for m in (await response.json())["data"]["messages"]]

    assert await found("color") == [edited["id"]]
    assert await found("colour") == []
    assert await found("zebra") == []
