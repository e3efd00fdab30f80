"""Channels: create, list, get, join, leave, members."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from tests.gateway.api_client import create_channel, error_of, join, signup

CHANNEL_FIELDS = {"id", "name", "description", "image_url", "created_at", "kind", "private"}


async def test_creator_becomes_owner(gateway: TestClient[Any, Any]) -> None:
    owner = await signup(gateway, "alice")
    channel_id = await create_channel(gateway, owner, "general")
    response = await gateway.get(f"/api/v1/channels/{channel_id}", headers=owner.auth)
    data = (await response.json())["data"]
    assert set(data) == CHANNEL_FIELDS | {"members"}
    assert [(m["id"], m["role"]) for m in data["members"]] == [(owner.user_id, "owner")]


async def test_channel_names_are_unique(gateway: TestClient[Any, Any]) -> None:
    owner = await signup(gateway, "alice")
    await create_channel(gateway, owner, "general")
    response = await gateway.post(
        "/api/v1/channels/new", json={"name": "GENERAL", "description": ""}, headers=owner.auth
    )
    assert await error_of(response) == (409, "channel_name_taken")


async def test_create_requires_a_name_and_a_token(gateway: TestClient[Any, Any]) -> None:
    owner = await signup(gateway, "alice")
    invalid = await gateway.post(
        "/api/v1/channels/new", json={"name": " ", "description": ""}, headers=owner.auth
    )
    anonymous = await gateway.post("/api/v1/channels/new", json={"name": "x"})
    assert await error_of(invalid) == (422, "invalid_body")
    assert await error_of(anonymous) == (400, "missing_token")


async def test_create_refuses_a_description_postgres_cannot_store(
    gateway: TestClient[Any, Any], pg_pool: asyncpg.Pool
) -> None:
    """Regression: U+0000 in a description reached PostgreSQL, which refuses it (500)."""
    owner = await signup(gateway, "alice")
    response = await gateway.post(
        "/api/v1/channels/new",
        json={"name": "general", "description": "a\u0000b"},
        headers=owner.auth,
    )
    assert await error_of(response) == (422, "invalid_body")
    assert [error["field"] for error in (await response.json())["errors"]] == ["description"]
    assert await pg_pool.fetchval("SELECT count(*) FROM channels") == 0


async def test_list_channels(gateway: TestClient[Any, Any]) -> None:
    owner = await signup(gateway, "alice")
    await create_channel(gateway, owner, "general")
    await create_channel(gateway, owner, "random")
    response = await gateway.get("/api/v1/channels")
    data = (await response.json())["data"]
    assert [channel["name"] for channel in data] == ["general", "random"]
    assert all(set(channel) == CHANNEL_FIELDS for channel in data)


async def test_unknown_channel_is_404(gateway: TestClient[Any, Any]) -> None:
    assert await error_of(await gateway.get("/api/v1/channels/42")) == (404, "channel_not_found")


async def test_join_then_members_lists_the_member(gateway: TestClient[Any, Any]) -> None:
    owner = await signup(gateway, "alice")
    bob = await signup(gateway, "bob")
    channel_id = await create_channel(gateway, owner, "general")
    await join(gateway, bob, channel_id)
    response = await gateway.get(f"/api/v1/channels/{channel_id}/members", headers=bob.auth)
    members = (await response.json())["data"]
    assert [(m["username"], m["role"]) for m in members] == [("alice", "owner"), ("bob", "member")]
    assert all("email" not in m for m in members)


async def test_join_twice_is_409(gateway: TestClient[Any, Any]) -> None:
    owner = await signup(gateway, "alice")
    channel_id = await create_channel(gateway, owner, "general")
    response = await gateway.post(
        "/api/v1/channels/join", json={"channel_id": channel_id}, headers=owner.auth
    )
    assert await error_of(response) == (409, "already_member")


async def test_join_unknown_channel_is_404(gateway: TestClient[Any, Any]) -> None:
    bob = await signup(gateway, "bob")
    response = await gateway.post(
        "/api/v1/channels/join", json={"channel_id": 999}, headers=bob.auth
    )
    assert await error_of(response) == (404, "channel_not_found")


async def test_join_refuses_a_string_channel_id(gateway: TestClient[Any, Any]) -> None:
    bob = await signup(gateway, "bob")
    response = await gateway.post(
        "/api/v1/channels/join", json={"channel_id": "1"}, headers=bob.auth
    )
    assert await error_of(response) == (422, "invalid_body")


async def test_leave_removes_membership(gateway: TestClient[Any, Any]) -> None:
    owner = await signup(gateway, "alice")
    bob = await signup(gateway, "bob")
    channel_id = await create_channel(gateway, owner, "general")
    await join(gateway, bob, channel_id)
    response = await gateway.post(
        "/api/v1/channels/leave", json={"channel_id": channel_id}, headers=bob.auth
    )
    assert response.status == 200
    members = await gateway.get(f"/api/v1/channels/{channel_id}/members", headers=owner.auth)
    assert [m["username"] for m in (await members.json())["data"]] == ["alice"]


async def test_leave_by_non_member_is_403(gateway: TestClient[Any, Any]) -> None:
    owner = await signup(gateway, "alice")
    bob = await signup(gateway, "bob")
    channel_id = await create_channel(gateway, owner, "general")
    response = await gateway.post(
        "/api/v1/channels/leave", json={"channel_id": channel_id}, headers=bob.auth
    )
    assert await error_of(response) == (403, "not_a_member")


async def test_members_need_a_token(gateway: TestClient[Any, Any]) -> None:
    """Who is in a channel is not public: the list, and the `members` of the channel."""
    owner = await signup(gateway, "alice")
    channel_id = await create_channel(gateway, owner, "general")
    members = f"/api/v1/channels/{channel_id}/members"
    assert await error_of(await gateway.get(members)) == (400, "missing_token")
    forged = {"Authorization": "Bearer forged"}
    assert await error_of(await gateway.get(members, headers=forged)) == (401, "invalid_token")

    anonymous = await gateway.get(f"/api/v1/channels/{channel_id}")
    assert set((await anonymous.json())["data"]) == CHANNEL_FIELDS
    bad = await gateway.get(f"/api/v1/channels/{channel_id}", headers=forged)
    assert await error_of(bad) == (401, "invalid_token")
