"""Private channels (hidden from non-members, joined by invitation) and direct messages
(one private two-member channel per pair, created idempotently)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from shared.db import invitations
from tests.gateway.api_client import (
    Account,
    connect,
    error_of,
    expect_refusal,
    send_texts,
    signup,
)
from tests.gateway.governance import act, make_admin, promote, roles
from tests.gateway.test_mux import open_mux, put, receive_until


async def _private(client: TestClient[Any, Any], owner: Account, name: str = "secret") -> int:
    response = await act(client, "POST", "/channels/new", owner, {"name": name, "private": True})
    assert response.status == 201, await response.text()
    data = (await response.json())["data"]
    assert (data["kind"], data["private"]) == ("private", True)
    channel_id: int = data["id"]
    return channel_id


async def _invite(
    client: TestClient[Any, Any], by: Account, channel_id: int, user: Account
) -> tuple[int, str | None]:
    response = await act(
        client, "POST", f"/channels/{channel_id}/invitations", by, {"user_id": user.user_id}
    )
    if response.status == 201:
        return 201, None
    return await error_of(response)


async def test_a_private_channel_is_hidden_from_non_members(gateway: TestClient[Any, Any]) -> None:
    alice, eve = await signup(gateway, "alice"), await signup(gateway, "eve")
    channel_id = await _private(gateway, alice)

    listed_by = {}
    for who in (None, eve, alice):
        response = await act(gateway, "GET", "/channels", who)
        listed_by[who.username if who else None] = [
            c["id"] for c in (await response.json())["data"]
        ]
    assert listed_by == {None: [], "eve": [], "alice": [channel_id]}
    for who in (None, eve):
        assert await error_of(await act(gateway, "GET", f"/channels/{channel_id}", who)) == (
            404,
            "channel_not_found",
        )
    assert await error_of(await act(gateway, "GET", f"/channels/{channel_id}/members", eve)) == (
        404,
        "channel_not_found",
    )
    assert await error_of(await act(gateway, "GET", f"/channels/{channel_id}/messages", eve)) == (
        404,
        "channel_not_found",
    )
    joined = await act(gateway, "POST", "/channels/join", eve, {"channel_id": channel_id})
    assert await error_of(joined) == (404, "channel_not_found")
    frame, code = await expect_refusal(await connect(gateway, eve, channel_id))
    assert (frame["code"], code) == ("channel_not_found", 4404)
    mux = await open_mux(gateway, eve)
    await put(mux, type="subscribe", channel_id=channel_id)
    assert (await receive_until(mux, "error"))["code"] == "channel_not_found"


async def test_invitations_are_made_by_moderators_and_accepted_declined_or_revoked(
    gateway: TestClient[Any, Any], pg_pool: asyncpg.Pool
) -> None:
    alice, bob, carol, dave = [await signup(gateway, n) for n in ("alice", "bob", "carol", "dave")]
    channel_id = await _private(gateway, alice)

    assert await _invite(gateway, alice, channel_id, bob) == (201, None)
    assert await _invite(gateway, alice, channel_id, bob) == (409, "already_invited")
    mine = await act(gateway, "GET", "/me/invitations", bob)
    [invitation] = (await mine.json())["data"]
    assert (invitation["channel"]["id"], invitation["invited_by"]) == (channel_id, alice.user_id)
    accepted = await act(gateway, "POST", f"/me/invitations/{channel_id}/accept", bob)
    assert accepted.status == 200, await accepted.text()
    assert (await roles(pg_pool, channel_id))[bob.user_id] == "member"
    # A member invites nobody; a moderator does.
    assert await _invite(gateway, bob, channel_id, carol) == (403, "forbidden_role")
    await promote(gateway, alice, channel_id, bob)
    assert await _invite(gateway, bob, channel_id, carol) == (201, None)
    declined = await act(gateway, "POST", f"/me/invitations/{channel_id}/decline", carol)
    assert declined.status == 200
    again = await act(gateway, "POST", f"/me/invitations/{channel_id}/accept", carol)
    assert await error_of(again) == (404, "invitation_not_found")
    # The inviter, or a moderator, revokes.
    assert await _invite(gateway, bob, channel_id, dave) == (201, None)
    revoked = await act(
        gateway, "DELETE", f"/channels/{channel_id}/invitations/{dave.user_id}", alice
    )
    assert revoked.status == 200, await revoked.text()
    assert await error_of(
        await act(gateway, "POST", f"/me/invitations/{channel_id}/accept", dave)
    ) == (404, "invitation_not_found")
    # Public channels are joined, not invited to; banned users are not invited.
    public = await act(gateway, "POST", "/channels/new", alice, {"name": "open"})
    public_id = (await public.json())["data"]["id"]
    assert await _invite(gateway, alice, public_id, dave) == (409, "not_private")
    await act(gateway, "POST", f"/channels/{channel_id}/bans", alice, {"user_id": dave.user_id})
    assert await _invite(gateway, alice, channel_id, dave) == (403, "banned")


async def test_pending_invitations_are_bounded_per_invitee(
    gateway: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(invitations, "MAX_PENDING_PER_USER", 2)
    alice, bob = await signup(gateway, "alice"), await signup(gateway, "bob")
    channels = [await _private(gateway, alice, f"secret-{n}") for n in range(3)]

    results = [await _invite(gateway, alice, channel_id, bob) for channel_id in channels]

    assert results == [(201, None), (201, None), (429, "too_many_invitations")]


async def test_a_direct_message_is_one_channel_per_pair_even_when_asked_concurrently(
    gateway: TestClient[Any, Any], pg_pool: asyncpg.Pool
) -> None:
    alice, bob = await signup(gateway, "alice"), await signup(gateway, "bob")

    answers = await asyncio.gather(
        *(
            act(gateway, "POST", "/dm", a, {"user_id": b.user_id})
            for a, b in [(alice, bob), (bob, alice)] * 4
        )
    )

    assert [answer.status for answer in answers] == [200] * 8
    datas = [(await answer.json())["data"] for answer in answers]
    assert len({data["id"] for data in datas}) == 1
    channel_id = datas[0]["id"]
    assert datas[0]["other_user"]["id"] == bob.user_id
    assert datas[1]["other_user"]["id"] == alice.user_id
    assert await roles(pg_pool, channel_id) == {alice.user_id: "member", bob.user_id: "member"}
    assert await pg_pool.fetchval("SELECT count(*) FROM channels WHERE kind = 'dm'") == 1
    mine = await act(gateway, "GET", "/me/channels", alice)
    [listed] = (await mine.json())["data"]
    assert (listed["id"], listed["kind"], listed["other_user"]["id"]) == (
        channel_id,
        "dm",
        bob.user_id,
    )


async def test_nobody_joins_leaves_invites_or_moderates_in_a_direct_message(
    gateway: TestClient[Any, Any], pg_pool: asyncpg.Pool
) -> None:
    alice, bob, eve = [await signup(gateway, n) for n in ("alice", "bob", "eve")]
    root = await signup(gateway, "root")
    await make_admin(pg_pool, root)
    created = await act(gateway, "POST", "/dm", alice, {"user_id": bob.user_id})
    channel_id = (await created.json())["data"]["id"]

    assert await error_of(
        await act(gateway, "POST", "/channels/join", eve, {"channel_id": channel_id})
    ) == (404, "channel_not_found")
    assert await error_of(
        await act(gateway, "POST", "/channels/leave", alice, {"channel_id": channel_id})
    ) == (409, "direct_message")
    assert await _invite(gateway, alice, channel_id, eve) == (409, "direct_message")
    for who in (alice, root):
        kicked = await act(
            gateway, "POST", f"/channels/{channel_id}/kick", who, {"user_id": bob.user_id}
        )
        assert await error_of(kicked) == (409, "direct_message")
    assert await error_of(await act(gateway, "POST", "/dm", alice, {"user_id": alice.user_id})) == (
        409,
        "direct_message",
    )
    assert await error_of(await act(gateway, "POST", "/dm", alice, {"user_id": 999})) == (
        404,
        "user_not_found",
    )
    assert await error_of(await act(gateway, "GET", f"/channels/{channel_id}", eve)) == (
        404,
        "channel_not_found",
    )
    # Both members chat in it.
    ws = await connect(gateway, bob, channel_id)
    sent = await send_texts(ws, 1, "hi")
    assert sent.acked_seqs == [1]
