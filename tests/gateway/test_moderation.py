"""Roles and moderation: who may promote, transfer, kick, ban and mute whom; a kick or ban
closes the user's sockets on every gateway; a mute stops sends on both sockets on every
gateway at once, and the membership audit applies one no gateway heard of."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient

from gateway.app_keys import HUB
from tests.gateway.api_client import (
    Account,
    connect,
    error_of,
    eventually,
    join,
    receive_until,
    room,
    send_texts,
    signup,
)
from tests.gateway.conftest import MakeGateway
from tests.gateway.governance import act, make_admin, promote, roles
from tests.gateway.test_membership_audit import _close_code
from tests.gateway.test_mux import open_mux, put, subscribe

_RECHECK_SECONDS = 0.3


async def _governed_room(
    client: TestClient[Any, Any],
) -> tuple[int, Account, Account, Account, Account]:
    """alice owns it, bob and carol moderate it, dave is a member."""
    channel_id, (alice, bob, carol, dave) = await room(client, "alice", "bob", "carol", "dave")
    await promote(client, alice, channel_id, bob)
    await promote(client, alice, channel_id, carol)
    return channel_id, alice, bob, carol, dave


async def _code(response: aiohttp.ClientResponse) -> tuple[int, str]:
    return await error_of(response)


async def test_a_moderator_acts_on_members_only(gateway: TestClient[Any, Any]) -> None:
    channel_id, alice, bob, carol, dave = await _governed_room(gateway)
    kick = f"/channels/{channel_id}/kick"

    assert await _code(await act(gateway, "POST", kick, bob, {"user_id": carol.user_id})) == (
        403,
        "forbidden_role",
    )
    assert await _code(await act(gateway, "POST", kick, bob, {"user_id": alice.user_id})) == (
        403,
        "forbidden_role",
    )
    assert await _code(await act(gateway, "POST", kick, bob, {"user_id": bob.user_id})) == (
        403,
        "forbidden_role",
    )
    assert await _code(await act(gateway, "POST", kick, dave, {"user_id": bob.user_id})) == (
        403,
        "forbidden_role",
    )
    # Only the owner changes roles.
    role = f"/channels/{channel_id}/members/{dave.user_id}/role"
    assert await _code(await act(gateway, "PUT", role, bob, {"role": "moderator"})) == (
        403,
        "forbidden_role",
    )
    muted = await act(
        gateway,
        "POST",
        f"/channels/{channel_id}/mutes",
        bob,
        {"user_id": dave.user_id, "duration_seconds": 60},
    )
    assert muted.status == 200, await muted.text()
    assert (await act(gateway, "POST", kick, bob, {"user_id": dave.user_id})).status == 200


async def test_the_owner_promotes_and_demotes_and_nobody_moderates_the_owner(
    gateway: TestClient[Any, Any], pg_pool: asyncpg.Pool
) -> None:
    channel_id, alice, bob, carol, _ = await _governed_room(gateway)
    demote = await act(
        gateway,
        "PUT",
        f"/channels/{channel_id}/members/{carol.user_id}/role",
        alice,
        {"role": "member"},
    )
    assert demote.status == 200, await demote.text()
    assert (await roles(pg_pool, channel_id))[carol.user_id] == "member"
    root = await signup(gateway, "root")
    await make_admin(pg_pool, root)

    # An admin, not even a member, moderates anyone below admin, but not the owner.
    kicked = await act(
        gateway, "POST", f"/channels/{channel_id}/kick", root, {"user_id": bob.user_id}
    )
    assert kicked.status == 200, await kicked.text()
    banned = await act(
        gateway, "POST", f"/channels/{channel_id}/bans", root, {"user_id": alice.user_id}
    )
    assert await _code(banned) == (403, "forbidden_role")
    assert (await roles(pg_pool, channel_id))[alice.user_id] == "owner"


async def test_ownership_moves_atomically_and_only_once_under_concurrency(
    gateway: TestClient[Any, Any], pg_pool: asyncpg.Pool
) -> None:
    channel_id, alice, bob, carol, _ = await _governed_room(gateway)
    path = f"/channels/{channel_id}/transfer-ownership"

    answers = await asyncio.gather(
        *(act(gateway, "POST", path, alice, {"user_id": to.user_id}) for to in [bob, carol] * 4)
    )

    # The first one wins; alice is no longer the owner for the others.
    assert sorted(answer.status for answer in answers) == [200] + [403] * 7
    found = await roles(pg_pool, channel_id)
    assert list(found.values()).count("owner") == 1
    assert found[alice.user_id] == "moderator"
    new_owner = bob if found[bob.user_id] == "owner" else carol
    # The old owner is a moderator now: no more role changes.
    again = await act(gateway, "POST", path, alice, {"user_id": new_owner.user_id})
    assert await _code(again) == (403, "forbidden_role")


async def test_kick_on_one_gateway_closes_the_users_sockets_on_the_other(
    make_gateway: MakeGateway,
) -> None:
    gateway_a = await make_gateway()
    gateway_b = await make_gateway()
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    chat_bob = await connect(gateway_b, bob, channel_id)
    mux_bob = await open_mux(gateway_b, bob)
    await subscribe(mux_bob, channel_id)

    kicked = await act(
        gateway_a, "POST", f"/channels/{channel_id}/kick", alice, {"user_id": bob.user_id}
    )
    assert kicked.status == 200, await kicked.text()

    assert await _close_code(chat_bob) == 4403
    lost = await receive_until(mux_bob, "error")
    assert (lost["code"], lost["channel_id"]) == ("not_a_member", channel_id)
    await join(gateway_a, bob, channel_id)  # a kick is not a ban


async def test_a_banned_user_cannot_rejoin_until_the_ban_ends_or_is_lifted(
    make_gateway: MakeGateway, pg_pool: asyncpg.Pool
) -> None:
    gateway_a = await make_gateway()
    gateway_b = await make_gateway()
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    chat_bob = await connect(gateway_b, bob, channel_id)
    bans = f"/channels/{channel_id}/bans"

    banned = await act(
        gateway_a, "POST", bans, alice, {"user_id": bob.user_id, "duration_seconds": 3600}
    )
    assert banned.status == 200, await banned.text()
    assert (await banned.json())["data"]["until"] is not None

    assert await _close_code(chat_bob) == 4403
    rejoin = await act(gateway_b, "POST", "/channels/join", bob, {"channel_id": channel_id})
    assert await _code(rejoin) == (403, "banned")
    listed = await act(gateway_a, "GET", bans, alice)
    assert [ban["user_id"] for ban in (await listed.json())["data"]] == [bob.user_id]
    # The ban's time is up: joining works again.
    await pg_pool.execute("UPDATE channel_bans SET until = now() - interval '1 second'")
    await join(gateway_a, bob, channel_id)
    # A ban without end, lifted.
    assert (await act(gateway_a, "POST", bans, alice, {"user_id": bob.user_id})).status == 200
    assert await _code(
        await act(gateway_a, "POST", "/channels/join", bob, {"channel_id": channel_id})
    ) == (403, "banned")
    lifted = await act(gateway_a, "DELETE", f"{bans}/{bob.user_id}", alice)
    assert lifted.status == 200, await lifted.text()
    await join(gateway_a, bob, channel_id)


async def _send_chat(ws: aiohttp.ClientWebSocketResponse, tag: str) -> dict[str, Any]:
    await ws.send_str(orjson.dumps({"type": "text", "content": tag, "client_id": tag}).decode())
    return await receive_until(ws, "error")


async def test_a_mute_set_on_one_gateway_stops_sends_on_both_sockets_on_the_other_at_once(
    make_gateway: MakeGateway,
) -> None:
    gateway_a = await make_gateway()
    gateway_b = await make_gateway()
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    chat_bob = await connect(gateway_b, bob, channel_id)
    mux_bob = await open_mux(gateway_b, bob)
    await subscribe(mux_bob, channel_id)
    await send_texts(chat_bob, 1, "before")

    muted = await act(
        gateway_a,
        "POST",
        f"/channels/{channel_id}/mutes",
        alice,
        {"user_id": bob.user_id, "duration_seconds": 600},
    )
    assert muted.status == 200, await muted.text()
    # The event that set the mute on gateway B's connections, as bob's mux socket sees it.
    told = await receive_until(mux_bob, "muted")
    assert (told["channel_id"], told["user_id"]) == (channel_id, bob.user_id)
    assert told["until_ms"] > 0

    refused = await _send_chat(chat_bob, "during")
    assert refused["code"] == "muted"
    assert refused["errors"][0]["until"] == (await muted.json())["data"]["until"]
    await put(
        mux_bob,
        type="send",
        channel_id=channel_id,
        body={"type": "text", "content": "x"},
        client_id="m-1",
    )
    refused_mux = await receive_until(mux_bob, "error")
    assert (refused_mux["code"], refused_mux["channel_id"]) == ("muted", channel_id)
    await put(mux_bob, type="typing", channel_id=channel_id)
    assert (await receive_until(mux_bob, "error"))["code"] == "muted"

    unmuted = await act(gateway_a, "DELETE", f"/channels/{channel_id}/mutes/{bob.user_id}", alice)
    assert unmuted.status == 200, await unmuted.text()
    assert (await receive_until(mux_bob, "muted"))["until_ms"] == 0
    await send_texts(chat_bob, 1, "after")


async def test_a_mute_no_gateway_heard_of_holds_within_the_recheck_interval(
    make_gateway: MakeGateway, pg_pool: asyncpg.Pool
) -> None:
    gateway = await make_gateway(membership_recheck_seconds=_RECHECK_SECONDS)
    channel_id, (_, bob) = await room(gateway, "alice", "bob")
    chat_bob = await connect(gateway, bob, channel_id)
    await send_texts(chat_bob, 1, "before")
    hub = gateway.server.app[HUB]

    # A mute written straight into PostgreSQL: no event.
    await pg_pool.execute(
        """INSERT INTO channel_mutes (channel_id, user_id, until)
           VALUES ($1, $2, now() + interval '1 hour')""",
        channel_id,
        bob.user_id,
    )

    async def muted() -> bool:
        return all(
            c.muted_until > 0
            for cs in hub.members().values()
            for c in cs
            if c.user_id == bob.user_id
        )

    await eventually(muted)
    assert (await _send_chat(chat_bob, "during"))["code"] == "muted"


async def test_a_muted_member_is_muted_from_the_first_frame_of_a_new_socket(
    gateway: TestClient[Any, Any],
) -> None:
    channel_id, (alice, bob) = await room(gateway, "alice", "bob")
    muted = await act(
        gateway,
        "POST",
        f"/channels/{channel_id}/mutes",
        alice,
        {"user_id": bob.user_id, "duration_seconds": 600},
    )
    assert muted.status == 200
    # Leaving and rejoining does not shed it.
    await act(gateway, "POST", "/channels/leave", bob, {"channel_id": channel_id})
    await join(gateway, bob, channel_id)

    chat_bob = await connect(gateway, bob, channel_id)
    assert (await _send_chat(chat_bob, "new"))["code"] == "muted"


@pytest.mark.parametrize(
    ("path", "method", "body"),
    [
        ("mutes", "POST", {"user_id": 2, "duration_seconds": 0}),
        ("mutes", "POST", {"user_id": 2, "duration_seconds": -5}),
        ("mutes", "POST", {"user_id": 2, "duration_seconds": 365 * 24 * 3600 + 1}),
        ("mutes", "POST", {"user_id": 2, "duration_seconds": 2**70}),
        ("mutes", "POST", {"user_id": 2, "duration_seconds": 1.5}),
        ("mutes", "POST", {"user_id": 2, "duration_seconds": "60"}),
        ("mutes", "POST", {"user_id": 2, "duration_seconds": True}),
        ("mutes", "POST", {"user_id": 2, "duration_seconds": None}),
        ("mutes", "POST", {"user_id": 2, "duration_seconds": {"$gt": 1}}),
        ("mutes", "POST", {"user_id": 2}),
        ("bans", "POST", {"user_id": 2, "duration_seconds": 10 * 365 * 24 * 3600 + 1}),
        ("bans", "POST", {"user_id": 2, "duration_seconds": 0}),
        ("bans", "POST", {"user_id": 2, "until": "2999-01-01T00:00:00Z"}),
        ("bans", "POST", {"user_id": 0}),
        ("bans", "POST", {"user_id": 2**60}),
        ("bans", "POST", {"user_id": "2\u0000"}),
        ("bans", "POST", [{"user_id": 2}]),
        ("kick", "POST", {"user_id": [2]}),
        ("kick", "POST", {"user_id": 2, "extra": 1}),
        ("transfer-ownership", "POST", {"user_id": -2}),
        ("members/2/role", "PUT", {"role": "owner"}),
        ("members/2/role", "PUT", {"role": "MODERATOR"}),
        ("members/2/role", "PUT", {"role": "moderator\u0000"}),
    ],
)
async def test_hostile_bodies_are_refused_and_change_nothing(
    gateway: TestClient[Any, Any], pg_pool: asyncpg.Pool, path: str, method: str, body: object
) -> None:
    channel_id, (alice, _) = await room(gateway, "alice", "bob")
    before = await roles(pg_pool, channel_id)

    response = await act(gateway, method, f"/channels/{channel_id}/{path}", alice, body)

    assert await _code(response) == (422, "invalid_body")
    assert await roles(pg_pool, channel_id) == before
    assert await pg_pool.fetchval("SELECT count(*) FROM channel_bans") == 0
    assert await pg_pool.fetchval("SELECT count(*) FROM channel_mutes") == 0


async def test_malformed_json_and_invalid_utf8_are_refused(gateway: TestClient[Any, Any]) -> None:
    channel_id, (alice, _) = await room(gateway, "alice", "bob")
    for raw in (b'{"user_id": 2', b'{"user_id": "\xff\xfe"}', b"[" * 10000):
        response = await gateway.post(
            f"/api/v1/channels/{channel_id}/bans",
            data=raw,
            headers={**alice.auth, "Content-Type": "application/json"},
        )
        assert (await _code(response))[0] in (400, 422)
