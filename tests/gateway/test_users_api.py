"""User listings (for signed-in users) and the caller's profile edit."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from tests.gateway.api_client import error_of, signup

PUBLIC_FIELDS = {"id", "name", "username", "avatar_url", "created_at"}


async def test_user_list_shows_public_fields_only(gateway: TestClient[Any, Any]) -> None:
    alice = await signup(gateway, "alice")
    await signup(gateway, "bob", avatar_url="https://cdn.example.com/bob.png")
    response = await gateway.get("/api/v1/users", headers=alice.auth)
    body = await response.json()
    assert body["status"] == "success"
    assert [user["username"] for user in body["data"]] == ["alice", "bob"]
    assert all(set(user) == PUBLIC_FIELDS for user in body["data"])
    assert body["data"][1]["avatar_url"] == "https://cdn.example.com/bob.png"


async def test_user_list_pages(gateway: TestClient[Any, Any]) -> None:
    alice, *_ = [await signup(gateway, name) for name in ("alice", "bob", "carol")]
    response = await gateway.get("/api/v1/users?limit=1&offset=1", headers=alice.auth)
    assert [user["username"] for user in (await response.json())["data"]] == ["bob"]


async def test_user_list_refuses_bad_paging(gateway: TestClient[Any, Any]) -> None:
    alice = await signup(gateway, "alice")
    response = await gateway.get("/api/v1/users?limit=0", headers=alice.auth)
    assert await error_of(response) == (422, "invalid_parameter")


async def test_get_user_by_id_hides_email(gateway: TestClient[Any, Any]) -> None:
    account = await signup(gateway, "alice")
    bob = await signup(gateway, "bob")
    response = await gateway.get(f"/api/v1/users/{account.user_id}", headers=bob.auth)
    assert set((await response.json())["data"]) == PUBLIC_FIELDS


async def test_get_unknown_user_is_404(gateway: TestClient[Any, Any]) -> None:
    alice = await signup(gateway, "alice")
    response = await gateway.get("/api/v1/users/999", headers=alice.auth)
    assert await error_of(response) == (404, "user_not_found")


async def test_a_non_numeric_user_id_is_no_route(gateway: TestClient[Any, Any]) -> None:
    alice = await signup(gateway, "alice")
    response = await gateway.get("/api/v1/users/abc", headers=alice.auth)
    assert await error_of(response) == (404, "route_not_found")


async def test_an_out_of_range_user_id_is_422(gateway: TestClient[Any, Any]) -> None:
    alice = await signup(gateway, "alice")
    response = await gateway.get(f"/api/v1/users/{2**53 + 1}", headers=alice.auth)
    assert await error_of(response) == (422, "invalid_parameter")


async def test_edit_updates_the_callers_profile(gateway: TestClient[Any, Any]) -> None:
    account = await signup(gateway, "alice")
    body = {"name": "Alice Liddell", "username": "alice2", "email": "liddell@example.com"}
    response = await gateway.put("/api/v1/users/edit", json=body, headers=account.auth)
    data = (await response.json())["data"]
    assert (data["name"], data["username"], data["email"]) == (
        "Alice Liddell",
        "alice2",
        "liddell@example.com",
    )
    me = await gateway.get("/api/v1/auth/me", headers=account.auth)
    assert (await me.json())["data"]["username"] == "alice2"


async def test_edit_refuses_a_taken_username(gateway: TestClient[Any, Any]) -> None:
    await signup(gateway, "bob")
    account = await signup(gateway, "alice")
    body = {"name": "A", "username": "Bob", "email": "alice@example.com"}
    response = await gateway.put("/api/v1/users/edit", json=body, headers=account.auth)
    assert await error_of(response) == (409, "username_taken")


async def test_edit_requires_a_token(gateway: TestClient[Any, Any]) -> None:
    body = {"name": "A", "username": "alice", "email": "alice@example.com"}
    response = await gateway.put("/api/v1/users/edit", json=body)
    assert await error_of(response) == (400, "missing_token")


async def test_unknown_route_and_method_use_the_envelope(gateway: TestClient[Any, Any]) -> None:
    assert await error_of(await gateway.get("/api/v1/nope")) == (404, "route_not_found")
    assert await error_of(await gateway.delete("/api/v1/users")) == (405, "method_not_allowed")


async def test_admins_see_emails_and_roles_in_listings(
    gateway: TestClient[Any, Any], pg_pool: asyncpg.Pool
) -> None:
    admin = await signup(gateway, "root")
    member = await signup(gateway, "alice")
    await pg_pool.execute("UPDATE users SET role = 'admin' WHERE id = $1", admin.user_id)
    as_admin = await gateway.get("/api/v1/users", headers=admin.auth)
    as_member = await gateway.get("/api/v1/users", headers=member.auth)
    one_as_admin = await gateway.get(f"/api/v1/users/{member.user_id}", headers=admin.auth)
    assert [u["email"] for u in (await as_admin.json())["data"]] == [
        "root@example.com",
        "alice@example.com",
    ]
    assert (await one_as_admin.json())["data"]["role"] == "user"
    assert all(set(u) == PUBLIC_FIELDS for u in (await as_member.json())["data"])


async def test_listing_with_a_bad_token_is_401(gateway: TestClient[Any, Any]) -> None:
    response = await gateway.get("/api/v1/users", headers={"Authorization": "Bearer forged"})
    assert await error_of(response) == (401, "invalid_token")


async def test_listings_need_a_token(gateway: TestClient[Any, Any]) -> None:
    """Who has signed up is not public (the Go server listed every user to anyone)."""
    account = await signup(gateway, "alice")
    for path in ("/api/v1/users", f"/api/v1/users/{account.user_id}", "/api/v1/users/999"):
        assert await error_of(await gateway.get(path)) == (400, "missing_token"), path
        forged = await gateway.get(path, headers={"Authorization": "Bearer forged"})
        assert await error_of(forged) == (401, "invalid_token"), path
