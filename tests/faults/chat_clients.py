"""Clients that behave as the README tells a real client to, and record what they saw.

A `Member` keeps a socket open and, whenever it closes, reconnects to the next
gateway with `since=<last seq>`. A `Sender` sends numbered messages one at a
time and re-sends a message under the same `client_id` until it is
acknowledged. After the fault, the test compares what every member received
and what PostgreSQL stores with what was acknowledged.

Both speak either socket kind (`SOCKET_KINDS`): the per-channel chat socket,
or the multiplexed one (`/api/v1/ws`), where a member subscribes with
`since` after each reconnect and a sender subscribes before sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from tests.faults.stack import ORIGIN

_REPLY_TIMEOUT_SECONDS = 3.0
# A real client waits a little before reconnecting or re-sending, so a restarting
# server is not hammered; the figure only shapes the traffic, not the outcome.
_RETRY_PAUSE_SECONDS = 0.05


SOCKET_KINDS = ("chat", "mux")


async def open_socket(
    session: aiohttp.ClientSession,
    url: str,
    kind: str,
    account: Account,
    channel_id: int,
    since: int | None = None,
    **kwargs: Any,
) -> aiohttp.ClientWebSocketResponse:
    """A socket of `kind` that receives `channel_id`'s messages (after `since`, if given).

    On the multiplexed socket this sends the subscribe and returns without
    waiting for `subscribed`: the caller reads every frame anyway.
    """
    params = {"token": account.token}
    if kind == "chat":
        if since is not None:
            params["since"] = str(since)
        return await session.ws_connect(
            f"{url}/api/v1/chat/{channel_id}", params=params, origin=ORIGIN, **kwargs
        )
    ws = await session.ws_connect(f"{url}/api/v1/ws", params=params, origin=ORIGIN, **kwargs)
    subscribe: dict[str, object] = {"type": "subscribe", "channel_id": channel_id}
    if since is not None:
        subscribe["since"] = since
    await ws.send_str(orjson.dumps(subscribe).decode())
    return ws


def send_frame(kind: str, channel_id: int, content: str, client_id: str) -> str:
    text = {"type": "text", "content": content}
    if kind == "chat":
        return orjson.dumps({**text, "client_id": client_id}).decode()
    frame = {"type": "send", "channel_id": channel_id, "body": text, "client_id": client_id}
    return orjson.dumps(frame).decode()


@dataclass
class Account:
    user_id: int
    token: str


async def signup(session: aiohttp.ClientSession, base_url: str, username: str) -> Account:
    body = {
        "name": username,
        "username": username,
        "email": f"{username}@example.com",
        "password": "correct horse",
    }
    async with session.post(f"{base_url}/api/v1/auth/signup", json=body) as response:
        assert response.status == 201, await response.text()
        token = (await response.json())["data"]
    headers = {"Authorization": f"Bearer {token}"}
    async with session.get(f"{base_url}/api/v1/auth/me", headers=headers) as response:
        return Account((await response.json())["data"]["id"], token)


async def channel_with(
    session: aiohttp.ClientSession, base_url: str, accounts: list[Account], name: str = "faults"
) -> int:
    """A channel owned by the first account and joined by the others."""
    owner = {"Authorization": f"Bearer {accounts[0].token}"}
    async with session.post(
        f"{base_url}/api/v1/channels/new", json={"name": name}, headers=owner
    ) as response:
        assert response.status == 201, await response.text()
        channel_id: int = (await response.json())["data"]["id"]
    for account in accounts[1:]:
        async with session.post(
            f"{base_url}/api/v1/channels/join",
            json={"channel_id": channel_id},
            headers={"Authorization": f"Bearer {account.token}"},
        ) as response:
            assert response.status == 200, await response.text()
    return channel_id


@dataclass
class _Progress:
    """Lets a test wait for a count to reach a value, without polling."""

    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        self.changed.set()

    async def wait_until(self, done: Callable[[], bool], within: float) -> None:
        async with asyncio.timeout(within):
            while not done():
                self.changed.clear()
                await self.changed.wait()


class Member:
    """Stays in the channel across faults; reconnects with `since`, rotating gateways."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        urls: list[str],
        account: Account,
        channel_id: int,
        kind: str = "chat",
    ) -> None:
        self._session = session
        self._kind = kind
        self._urls = urls
        self._account = account
        self._channel_id = channel_id
        self.seqs: list[int] = []
        self.latencies: list[float] = []
        self.close_codes: list[int | None] = []
        self.errors: list[str] = []
        self.connected = asyncio.Event()
        self._progress = _Progress()
        self._task: asyncio.Task[None] | None = None

    @property
    def last_seq(self) -> int | None:
        return self.seqs[-1] if self.seqs else None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_for_seq(self, seq: int, within: float) -> None:
        await self._progress.wait_until(
            lambda: self.last_seq is not None and self.last_seq >= seq, within
        )

    async def _run(self) -> None:
        attempt = 0
        while True:
            url = self._urls[attempt % len(self._urls)]
            attempt += 1
            try:
                async with await open_socket(
                    self._session, url, self._kind, self._account, self._channel_id, self.last_seq
                ) as ws:
                    if self._kind == "chat":
                        self.connected.set()  # subscribed before the upgrade completed
                    async for message in ws:
                        if message.type is aiohttp.WSMsgType.TEXT:
                            self._on_frame(orjson.loads(message.data))
                    self.close_codes.append(ws.close_code)
            except (aiohttp.ClientError, OSError):
                self.close_codes.append(None)
            await asyncio.sleep(_RETRY_PAUSE_SECONDS)

    def _on_frame(self, frame: dict[str, object]) -> None:
        if frame["type"] == "subscribed":
            self.connected.set()  # messages sent from now on reach this member
        elif frame["type"] == "message":
            seq = frame["seq"]
            assert isinstance(seq, int)
            self.seqs.append(seq)
            body = frame["body"]
            if isinstance(body, dict) and isinstance(body.get("content"), str):
                sent_at = float(body["content"].split()[-1])
                self.latencies.append(time.monotonic() - sent_at)
            self._progress.notify()
        elif frame["type"] == "error":
            self.errors.append(str(frame["code"]))


class Sender:
    """Sends `count` messages one by one; re-sends each under its client_id until acked."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        urls: list[str],
        account: Account,
        channel_id: int,
        tag: str,
        *,
        content_bytes: int = 0,
        kind: str = "chat",
    ) -> None:
        self._session = session
        self._kind = kind
        self._urls = urls
        self._account = account
        self._channel_id = channel_id
        self._tag = tag
        self._padding = "x" * content_bytes
        self.acked: dict[str, tuple[int, int]] = {}  # client_id -> (message id, seq)
        self.attempts = 0
        self.refusals: list[str] = []
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._attempt = 0
        self._progress = _Progress()

    async def wait_acked(self, count: int, within: float) -> None:
        await self._progress.wait_until(lambda: len(self.acked) >= count, within)

    async def send(self, count: int, pause: float = 0.0) -> None:
        try:
            for index in range(count):
                await self._deliver(f"{self._tag}-{index}")
                if pause:
                    await asyncio.sleep(pause)  # the traffic's pace, not a synchronization
        finally:
            if self._ws is not None:
                await self._ws.close()

    async def _deliver(self, client_id: str) -> None:
        while client_id not in self.acked:
            self.attempts += 1
            try:
                ws = await self._socket()
                content = f"{self._padding}{self._tag} {time.monotonic()}"
                await ws.send_str(send_frame(self._kind, self._channel_id, content, client_id))
                if await self._acked(ws, client_id):
                    self._progress.notify()
                    return
            except (aiohttp.ClientError, OSError, TimeoutError, ConnectionError):
                await self._drop_socket()
            await asyncio.sleep(_RETRY_PAUSE_SECONDS)

    async def _acked(self, ws: aiohttp.ClientWebSocketResponse, client_id: str) -> bool:
        async with asyncio.timeout(_REPLY_TIMEOUT_SECONDS):
            while True:
                message = await ws.receive()
                if message.type is not aiohttp.WSMsgType.TEXT:
                    await self._drop_socket()
                    return False
                frame = orjson.loads(message.data)
                if frame["type"] == "ack" and frame["client_id"] == client_id:
                    self.acked[client_id] = (frame["id"], frame["seq"])
                    return True
                if frame["type"] == "error":
                    self.refusals.append(frame["code"])
                    return False

    async def _socket(self) -> aiohttp.ClientWebSocketResponse:
        if self._ws is None or self._ws.closed:
            url = self._urls[self._attempt % len(self._urls)]
            self._attempt += 1
            self._ws = await open_socket(
                self._session, url, self._kind, self._account, self._channel_id
            )
        return self._ws

    async def _drop_socket(self) -> None:
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
