"""Client helpers that speak the public API, for the gateway tests."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import redis.asyncio as redis
from aiohappyeyeballs import AddrInfoType
from aiohttp.test_utils import TestClient

RECEIVE_TIMEOUT = 5.0
PASSWORD = "correct horse"  # every account `signup` makes
# A file message body with every field the Go server's clients send.
FILE_BODY = {
    "type": "file",
    "file_id": "f-1",
    "filename": "cat.png",
    "mime_type": "image/png",
    "url": "https://files.example.com/f-1",
    "size_in_bytes": 2048,
}


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
        "password": PASSWORD,
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


async def room(client: TestClient[Any, Any], *names: str) -> tuple[int, list[Account]]:
    """A channel owned by the first account, joined by the others."""
    accounts = [await signup(client, name) for name in names]
    channel_id = await create_channel(client, accounts[0], "room")
    for account in accounts[1:]:
        await join(client, account, channel_id)
    return channel_id, accounts


@dataclass
class Sent:
    acked_seqs: list[int]
    messages: list[dict[str, Any]]  # message frames the sender's socket got meanwhile


async def send_texts(ws: aiohttp.ClientWebSocketResponse, count: int, tag: str) -> Sent:
    """Send `count` text messages (client ids `<tag>-<n>`) and wait for every ack."""
    for index in range(count):
        await ws.send_str(
            orjson.dumps(
                {"type": "text", "content": f"{tag} {index}", "client_id": f"{tag}-{index}"}
            ).decode()
        )
    sent = Sent([], [])
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        while len(sent.acked_seqs) < count:
            frame = await receive_json(ws)
            if frame["type"] == "ack":
                sent.acked_seqs.append(frame["seq"])
            elif frame["type"] == "message":
                sent.messages.append(frame)
            else:
                raise AssertionError(f"unexpected frame {frame}")
    return sent


async def receive_messages(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    """The next `count` message frames, skipping acks."""
    return [await receive_until(ws, "message") for _ in range(count)]


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


async def receive_each(
    ws: aiohttp.ClientWebSocketResponse, *frame_types: str
) -> list[dict[str, Any]]:
    """The next frame of each type, in the order asked, whatever order they arrive in
    (a sender's ack and its own copy of the message race each other)."""
    found: dict[str, dict[str, Any]] = {}
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        while len(found) < len(frame_types):
            frame = await receive_json(ws)
            kind = frame.get("type")
            if kind in frame_types and kind not in found:
                found[kind] = frame
    return [found[kind] for kind in frame_types]


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


async def subscriber_count(redis_url: str, topic: str) -> int:
    """How many connections (gateways) Redis has subscribed to `topic`."""
    client = redis.Redis.from_url(redis_url)
    try:
        counts = await client.pubsub_numsub(topic)
        return int(counts[0][1])
    finally:
        await client.aclose()


def tiny_receive_buffer(addr_info: AddrInfoType) -> socket.socket:
    """A client socket whose kernel buffer holds almost nothing, so not reading shows fast
    (an `aiohttp.TCPConnector(socket_factory=...)`)."""
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=kind, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock
