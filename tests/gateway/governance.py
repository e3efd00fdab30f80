"""Helpers for the governance tests: roles, moderation, private channels."""

from __future__ import annotations

from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestClient

from tests.gateway.api_client import Account


async def make_admin(pg_pool: asyncpg.Pool, account: Account) -> None:
    """Give the global `admin` role (there is no route for it: an operator's SQL)."""
    await pg_pool.execute("UPDATE users SET role = 'admin' WHERE id = $1", account.user_id)


async def act(
    client: TestClient[Any, Any],
    method: str,
    path: str,
    account: Account | None,
    body: object = None,
) -> aiohttp.ClientResponse:
    """One governance request, `path` under /api/v1."""
    headers = {} if account is None else account.auth
    return await client.request(method, f"/api/v1{path}", json=body, headers=headers)


async def promote(
    client: TestClient[Any, Any], owner: Account, channel_id: int, member: Account
) -> None:
    response = await act(
        client,
        "PUT",
        f"/channels/{channel_id}/members/{member.user_id}/role",
        owner,
        {"role": "moderator"},
    )
    assert response.status == 200, await response.text()


async def roles(pg_pool: asyncpg.Pool, channel_id: int) -> dict[int, str]:
    rows = await pg_pool.fetch(
        "SELECT user_id, role FROM memberships WHERE channel_id = $1", channel_id
    )
    return {row["user_id"]: row["role"] for row in rows}
