"""Client helpers that speak the public API, for the gateway tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp.test_utils import TestClient

RECEIVE_TIMEOUT = 5.0


@dataclass
class Account:
    user_id: int
    username: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def signup(client: TestClient[Any, Any], username: str, **fields: Any) -> Account:
    body = {
        "name": username.title(),
        "username": username,
        "email": f"{username}@example.com",
        "password": "correct horse",
        **fields,
    }
    response = await client.post("/api/v1/auth/signup", json=body)
    assert response.status == 201, await response.text()
    token = (await response.json())["data"]
    me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    return Account(user_id=(await me.json())["data"]["id"], username=username, token=token)


async def create_channel(client: TestClient[Any, Any], owner: Account, name: str) -> int:
    response = await client.post(
        "/api/v1/channels/new", json={"name": name, "description": "test"}, headers=owner.auth
    )
    assert response.status == 201, await response.text()
    channel_id: int = (await response.json())["data"]["id"]
    return channel_id


async def join(client: TestClient[Any, Any], account: Account, channel_id: int) -> None:
    response = await client.post(
        "/api/v1/channels/join", json={"channel_id": channel_id}, headers=account.auth
    )
    assert response.status == 200, await response.text()


async def connect(
    client: TestClient[Any, Any], account: Account | None, channel_id: int | str, **kwargs: Any
) -> aiohttp.ClientWebSocketResponse:
    query = f"?token={account.token}" if account is not None else ""
    return await client.ws_connect(f"/api/v1/chat/{channel_id}{query}", **kwargs)


async def receive_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message = await ws.receive(timeout=RECEIVE_TIMEOUT)
    assert message.type is aiohttp.WSMsgType.TEXT, message
    frame: dict[str, Any] = orjson.loads(message.data)
    return frame


async def receive_until(ws: aiohttp.ClientWebSocketResponse, frame_type: str) -> dict[str, Any]:
    """The next frame of `frame_type`, skipping others (acks and messages interleave)."""
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        while True:
            frame = await receive_json(ws)
            if frame.get("type") == frame_type:
                return frame


async def expect_refusal(ws: aiohttp.ClientWebSocketResponse) -> tuple[dict[str, Any], int]:
    """The error frame and the close code of a refused socket."""
    frame = await receive_json(ws)
    closing = await ws.receive(timeout=RECEIVE_TIMEOUT)
    assert closing.type is aiohttp.WSMsgType.CLOSE, closing
    assert ws.close_code is not None
    return frame, ws.close_code


async def error_of(response: aiohttp.ClientResponse) -> tuple[int, str]:
    """Status and `code` of an error envelope, checking the envelope's shape."""
    body = await response.json()
    assert body["status"] == "error"
    assert body["data"] is None
    assert isinstance(body["message"], str)
    return response.status, body["code"]


async def eventually(
    probe: Callable[[], Awaitable[bool]], *, within: float = RECEIVE_TIMEOUT
) -> None:
    """Wait until `probe()` holds, for state another component changes on its own time
    (Redis dropping a subscription after a close) with no event to await. Bounded;
    fails the test on timeout."""
    async with asyncio.timeout(within):
        while not await probe():  # noqa: ASYNC110 - no event exists for this state
            await asyncio.sleep(0.01)
