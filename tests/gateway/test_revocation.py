"""Log-out and password changes revoke a user's earlier tokens on every gateway and
close the sockets opened with them; a key rotation keeps the previous key's tokens."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestClient

from tests.gateway.api_client import (
    RECEIVE_TIMEOUT,
    Account,
    connect,
    error_of,
    expect_refusal,
    receive_until,
    room,
    signup,
)
from tests.gateway.conftest import MakeGateway

_NEW_PASSWORD = "battery staple"


async def _login(gateway: TestClient[Any, Any], username: str, password: str) -> Account:
    response = await gateway.post(
        "/api/v1/auth/login", json={"identity": username, "password": password}
    )
    assert response.status == 200, await response.text()
    me = await gateway.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {(await response.json())['data']}"}
    )
    data = (await me.json())["data"]
    return Account(user_id=data["id"], username=username, token=(await response.json())["data"])


async def _me_status(gateway: TestClient[Any, Any], account: Account) -> int:
    return (await gateway.get("/api/v1/auth/me", headers=account.auth)).status


async def _close_code(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Read until the socket closes (frames before the close are skipped)."""
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        while (await ws.receive()).type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            pass
    return ws.close_code


async def _change_password(gateway: TestClient[Any, Any], account: Account) -> None:
    response = await gateway.put(
        "/api/v1/auth/change-password",
        json={"old_password": "correct horse", "new_password": _NEW_PASSWORD},
        headers=account.auth,
    )
    assert response.status == 200, await response.text()


async def test_logout_revokes_every_earlier_token_on_every_gateway(
    make_gateway: MakeGateway,
) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    from_signup = await signup(gateway_a, "alice")
    from_login = await _login(gateway_b, "alice", "correct horse")

    response = await gateway_a.post("/api/v1/auth/logout", headers=from_signup.auth)
    assert response.status == 200
    assert (await response.json())["data"] is None
    for gateway in (gateway_a, gateway_b):
        for account in (from_signup, from_login):
            response = await gateway.get("/api/v1/auth/me", headers=account.auth)
            assert await error_of(response) == (401, "invalid_token")
    again = await gateway_b.post("/api/v1/auth/logout", headers=from_login.auth)
    assert await error_of(again) == (401, "invalid_token")


async def test_a_token_issued_right_after_logout_is_valid(make_gateway: MakeGateway) -> None:
    """Within the same second as the revocation, too: revocation is a generation
    number, not a time, so a token's 1 s `iat` cannot make it ambiguous."""
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    alice = await signup(gateway_a, "alice")
    for _ in range(3):
        assert (await gateway_a.post("/api/v1/auth/logout", headers=alice.auth)).status == 200
        alice = await _login(gateway_b, "alice", "correct horse")
        assert await _me_status(gateway_a, alice) == 200
        assert await _me_status(gateway_b, alice) == 200


async def test_logout_closes_the_users_sockets_on_every_gateway(
    make_gateway: MakeGateway,
) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    second_channel = (
        await (
            await gateway_a.post(
                "/api/v1/channels/new", json={"name": "second"}, headers=alice.auth
            )
        ).json()
    )["data"]["id"]
    sockets = [
        await connect(gateway_a, alice, channel_id),
        await connect(gateway_b, alice, channel_id),
        await connect(gateway_b, alice, second_channel),
    ]
    ws_bob = await connect(gateway_b, bob, channel_id)

    assert (await gateway_a.post("/api/v1/auth/logout", headers=alice.auth)).status == 200
    assert [await _close_code(ws) for ws in sockets] == [4401, 4401, 4401]
    await ws_bob.send_str('{"type": "text", "content": "still here"}')
    assert (await receive_until(ws_bob, "ack"))["seq"] == 1


async def test_a_revoked_token_cannot_open_a_socket(make_gateway: MakeGateway) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    channel_id, (alice,) = await room(gateway_a, "alice")
    assert (await gateway_a.post("/api/v1/auth/logout", headers=alice.auth)).status == 200
    frame, code = await expect_refusal(await connect(gateway_b, alice, channel_id))
    assert (frame["code"], code) == ("invalid_token", 4401)


async def test_a_password_change_revokes_earlier_tokens_and_closes_their_sockets(
    make_gateway: MakeGateway,
) -> None:
    gateway_a, gateway_b = await make_gateway(), await make_gateway()
    channel_id, (alice,) = await room(gateway_a, "alice")
    other_device = await _login(gateway_b, "alice", "correct horse")
    ws = await connect(gateway_b, other_device, channel_id)

    await _change_password(gateway_a, alice)
    assert await _close_code(ws) == 4401
    for gateway in (gateway_a, gateway_b):
        for account in (alice, other_device):
            assert await _me_status(gateway, account) == 401
    fresh = await _login(gateway_b, "alice", _NEW_PASSWORD)
    assert await _me_status(gateway_a, fresh) == 200
    ws = await connect(gateway_a, fresh, channel_id)
    await ws.send_str('{"type": "text", "content": "back"}')
    assert (await receive_until(ws, "ack"))["seq"] == 1


async def test_revocation_guards_every_authenticated_route(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway()
    channel_id, (alice, bob) = await room(gateway, "alice", "bob")
    assert (await gateway.post("/api/v1/auth/logout", headers=alice.auth)).status == 200
    calls = [
        gateway.get("/api/v1/users", headers=alice.auth),
        gateway.get(f"/api/v1/users/{bob.user_id}", headers=alice.auth),
        gateway.get(f"/api/v1/channels/{channel_id}", headers=alice.auth),
        gateway.get(f"/api/v1/channels/{channel_id}/members", headers=alice.auth),
        gateway.get(f"/api/v1/channels/{channel_id}/messages", headers=alice.auth),
        gateway.post("/api/v1/channels/new", json={"name": "x"}, headers=alice.auth),
        gateway.post("/api/v1/channels/leave", json={"channel_id": channel_id}, headers=alice.auth),
        gateway.post("/api/v1/auth/ws-ticket", headers=alice.auth),
        gateway.put(
            "/api/v1/users/edit",
            json={"name": "A", "username": "alice", "email": "alice@example.com"},
            headers=alice.auth,
        ),
    ]
    for call in calls:
        assert await error_of(await call) == (401, "invalid_token")
    assert (await gateway.get("/api/v1/users", headers=bob.auth)).status == 200


@pytest.mark.parametrize("rotated", [True, False])
async def test_a_token_of_the_previous_key_is_accepted_only_while_it_is_configured(
    make_gateway: MakeGateway, rotated: bool
) -> None:
    old_secret = "old-secret-" + "9" * 32
    previous = {"jwt_secret_previous": old_secret} if rotated else {}
    gateway = await make_gateway(**previous)
    channel_id, (alice,) = await room(gateway, "alice")
    exp = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    old_token = jwt.encode({"user_id": alice.user_id, "username": "alice", "exp": exp}, old_secret)
    old = Account(alice.user_id, "alice", old_token)

    status = await _me_status(gateway, old)
    ws = await connect(gateway, old, channel_id)
    if rotated:
        assert status == 200
        await ws.send_str('{"type": "text", "content": "old key"}')
        assert (await receive_until(ws, "ack"))["seq"] == 1
    else:
        assert status == 401
        frame, code = await expect_refusal(ws)
        assert (frame["code"], code) == ("invalid_token", 4401)


async def test_new_tokens_are_signed_with_the_current_key_during_a_rotation(
    make_gateway: MakeGateway, make_settings: Any
) -> None:
    gateway = await make_gateway(jwt_secret_previous="old-secret-" + "9" * 32)
    alice = await signup(gateway, "alice")
    current = make_settings().jwt_secret.get_secret_value()
    assert jwt.decode(alice.token, current, algorithms=["HS256"])["gen"] == 0
