"""The chat socket's credential without a token in its URL: a `bearer` subprotocol,
or a single-use ticket from `POST /api/v1/auth/ws-ticket`; `?token=` keeps working."""

from __future__ import annotations

import hashlib
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from shared.redis_keys import RedisKeys
from tests.gateway.api_client import (
    Account,
    error_of,
    expect_refusal,
    receive_until,
    room,
    signup,
)
from tests.gateway.conftest import MakeGateway


async def _ticket(gateway: TestClient[Any, Any], account: Account) -> dict[str, Any]:
    response = await gateway.post("/api/v1/auth/ws-ticket", headers=account.auth)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["message"] == "ticket issued"
    data: dict[str, Any] = body["data"]
    return data


async def _admitted(ws: aiohttp.ClientWebSocketResponse) -> bool:
    await ws.send_str('{"type": "text", "content": "in"}')
    frame = await receive_until(ws, "ack")
    return bool(frame["success"])


async def test_a_ticket_opens_one_socket_on_any_gateway_once(make_gateway: MakeGateway) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    channel_id, (alice,) = await room(gateway_a, "alice")
    ticket = await _ticket(gateway_a, alice)
    assert ticket["expires_in"] == 30
    path = f"/api/v1/chat/{channel_id}?ticket={ticket['ticket']}"

    assert await _admitted(await gateway_b.ws_connect(path))
    frame, code = await expect_refusal(await gateway_a.ws_connect(path))
    assert (frame["code"], code) == ("invalid_token", 4401)


async def test_a_ticket_lives_in_redis_for_its_lifetime_only_as_a_digest(
    make_gateway: MakeGateway, make_settings: Any, redis_url: str
) -> None:
    gateway = await make_gateway(ws_ticket_seconds=7)
    alice = await signup(gateway, "alice")
    ticket = (await _ticket(gateway, alice))["ticket"]
    settings = make_settings()
    keys = RedisKeys(settings.redis_key_prefix, settings.redis_partitions)
    redis = Redis.from_url(redis_url)
    try:
        digest = hashlib.sha256(ticket.encode()).hexdigest()
        assert 0 < await redis.pttl(keys.ws_ticket(digest)) <= 7000
        assert await redis.keys(f"*{ticket}*") == []
    finally:
        await redis.aclose()


@pytest.mark.parametrize(
    "ticket", ["", "x", "A" * 43, "A" * 44, "../" * 15, "%00" * 15, "A" * 42 + "\u00e9"]
)
async def test_unknown_or_malformed_tickets_are_refused(
    gateway: TestClient[Any, Any], ticket: str
) -> None:
    channel_id, _ = await room(gateway, "alice")
    ws = await gateway.ws_connect(f"/api/v1/chat/{channel_id}", params={"ticket": ticket})
    frame, code = await expect_refusal(ws)
    assert (frame["code"], code) == ("invalid_token", 4401)


async def test_a_ticket_needs_a_token(gateway: TestClient[Any, Any]) -> None:
    response = await gateway.post("/api/v1/auth/ws-ticket")
    assert await error_of(response) == (400, "missing_token")


async def test_a_ticket_issued_before_a_logout_is_refused(gateway: TestClient[Any, Any]) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    ticket = (await _ticket(gateway, alice))["ticket"]
    assert (await gateway.post("/api/v1/auth/logout", headers=alice.auth)).status == 200
    ws = await gateway.ws_connect(f"/api/v1/chat/{channel_id}?ticket={ticket}")
    frame, code = await expect_refusal(ws)
    assert (frame["code"], code) == ("invalid_token", 4401)


async def test_the_token_as_a_bearer_subprotocol_is_selected_and_admitted(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway()
    channel_id, (alice,) = await room(gateway, "alice")
    ws = await gateway.ws_connect(f"/api/v1/chat/{channel_id}", protocols=("bearer", alice.token))
    assert ws.protocol == "bearer"
    assert await _admitted(ws)


@pytest.mark.parametrize(
    ("protocols", "code", "close_code"),
    [
        (("bearer",), "missing_token", 4400),
        (("bearer", "not.a.jwt"), "invalid_token", 4401),
    ],
)
async def test_a_refusal_still_selects_the_bearer_subprotocol(
    gateway: TestClient[Any, Any], protocols: tuple[str, ...], code: str, close_code: int
) -> None:
    """A browser fails a 101 that selects none of the subprotocols it offered, and
    then could not read why it was refused."""
    channel_id, _ = await room(gateway, "alice")
    ws = await gateway.ws_connect(f"/api/v1/chat/{channel_id}", protocols=protocols)
    assert ws.protocol == "bearer"
    frame, closed_with = await expect_refusal(ws)
    assert (frame["code"], closed_with) == (code, close_code)


async def test_other_subprotocols_are_not_selected(gateway: TestClient[Any, Any]) -> None:
    channel_id, (alice,) = await room(gateway, "alice")
    ws = await gateway.ws_connect(
        f"/api/v1/chat/{channel_id}?token={alice.token}", protocols=("chat.v2",)
    )
    assert ws.protocol is None
    assert await _admitted(ws)
