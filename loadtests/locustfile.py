"""Locust scenarios for the chat server: two socket users and a REST user.

    locust -f loadtests/locustfile.py --headless -u 50 -r 10 -t 1m --host http://127.0.0.1:4000

`MuxSocketUser` (weight 3) signs up, creates or joins `LOCUST_ROOMS_PER_USER`
of a few shared rooms, opens ONE multiplexed socket (`/api/v1/ws`),
subscribes each room and sends messages at `LOCUST_WS_RATE` per second, into
its rooms in turn, each after a `typing` frame, as an app would. Its
requests are of type `MUX`. `ChatSocketUser` (weight 1) is the Go server's
client: one room, the per-channel chat socket, type `WS`. Each socket is read
by a greenlet, which reports to locust:

- `connect`: time to open the socket (admission included);
- `subscribe` (MUX only): a `subscribe` frame -> its `subscribed` frame;
- `ack`: send -> the sender's ack (the message is durable in Redis);
- `message`: send -> the sender's own copy of the message arriving;
- `delivery`: send -> arrival of another user's message, from the send time in
  its content (meaningful when all locust processes share one clock);
- a failure named `message` when no copy arrived within `LOCUST_ECHO_TIMEOUT` s,
  and one named `error` for every error frame or unexpected close.

`RestUser` (weight 1) signs up and joins a room; then each visit logs in,
lists channels and reads the room's history, and every tenth visit also
registers a new account.

Environment knobs: LOCUST_WS_RATE (messages/s per socket user, default 1),
LOCUST_ROOMS (shared rooms, default 5), LOCUST_ROOMS_PER_USER (rooms of a
multiplexed socket user, default 3, at most LOCUST_ROOMS), LOCUST_ECHO_TIMEOUT (s, default 10),
LOCUST_REST_WAIT ("min,max" seconds between REST tasks, default "0.5,2"),
LOCUST_RUN_ID (prefix of the accounts and rooms, default random per process).

The server's per-IP HTTP rate limit (10 per 30 s by default) would refuse
most of this from one machine: start the stack with `RATE_LIMIT_REQUESTS=0`
(and `LOGIN_MAX_FAILURES_PER_IP=0`: log-ins in flight count against it).
Locust runs on gevent, so this file uses blocking clients (requests through
HttpUser, websocket-client) and never asyncio.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import time
from typing import Any

import gevent  # type: ignore[import-untyped]
import websocket
from gevent.lock import Semaphore  # type: ignore[import-untyped]
from locust import HttpUser, between, constant_throughput, task
from locust.exception import StopUser

_RUN = os.environ.get("LOCUST_RUN_ID") or secrets.token_hex(3)
_ROOMS = max(1, int(os.environ.get("LOCUST_ROOMS", "5")))
_ROOMS_PER_USER = min(_ROOMS, max(1, int(os.environ.get("LOCUST_ROOMS_PER_USER", "3"))))
_WS_RATE = float(os.environ.get("LOCUST_WS_RATE", "1"))
_ECHO_TIMEOUT = float(os.environ.get("LOCUST_ECHO_TIMEOUT", "10"))
_REST_WAIT = [float(part) for part in os.environ.get("LOCUST_REST_WAIT", "0.5,2").split(",")]
_PASSWORD = "locust password"
_CONNECT_TIMEOUT = 10.0
# A REST visit registers a new account every this many visits (argon2 makes it costly).
_REGISTER_EVERY = 10

_accounts = itertools.count(1)
_room_picks = itertools.count()
# Room number -> channel id; the first user to need a room creates it, under the lock.
_rooms: dict[int, int] = {}
_rooms_lock = Semaphore()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _register(user: HttpUser) -> tuple[str, str] | None:
    """Register a fresh account; return its username and token (None: reported as failed)."""
    username = f"lc{_RUN}n{next(_accounts)}"
    body = {
        "name": "Locust User",
        "username": username,
        "email": f"{username}@locust.example",
        "password": _PASSWORD,
    }
    with user.client.post("/api/v1/auth/signup", json=body, catch_response=True) as response:
        if response.status_code != 201:
            response.failure(f"sign-up answered {response.status_code}: {response.text[:200]}")
            return None
        token: str = response.json()["data"]
    return username, token


def _sign_up(user: HttpUser) -> tuple[str, str]:
    """A user's own account; a user that cannot get one stops."""
    account = _register(user)
    if account is None:
        raise StopUser()
    return account


def _enter_room(user: HttpUser, token: str, number: int | None = None) -> int:
    """Create or join one of the shared rooms (the next in turn, or `number`); return
    its channel id."""
    if number is None:
        number = next(_room_picks) % _ROOMS
    with _rooms_lock:
        if number not in _rooms:
            body = {"name": f"locust-{_RUN}-{number}", "description": "locust room"}
            with user.client.post(
                "/api/v1/channels/new", json=body, headers=_auth(token), catch_response=True
            ) as response:
                if response.status_code != 201:
                    response.failure(f"create answered {response.status_code}: {response.text}")
                    raise StopUser()
                _rooms[number] = response.json()["data"]["id"]
            return _rooms[number]  # the creator is already the owner
        channel_id = _rooms[number]
    with user.client.post(
        "/api/v1/channels/join",
        json={"channel_id": channel_id},
        headers=_auth(token),
        catch_response=True,
    ) as response:
        if response.status_code != 200:
            response.failure(f"join answered {response.status_code}: {response.text[:200]}")
            raise StopUser()
    return channel_id


class _SocketUser(HttpUser):
    """Chats over a WebSocket: sends at a steady rate and times what comes back. The
    socket kinds differ in their path, their frames and the type they report as."""

    abstract = True
    wait_time = constant_throughput(_WS_RATE)
    request_type = "WS"

    def _enter_rooms(self) -> list[int]:
        raise NotImplementedError

    def _path(self) -> str:
        raise NotImplementedError

    def _subscribe(self) -> None:
        """After the socket opened: nothing, or the frames that subscribe its rooms."""

    def _frames(self, client_id: str, content: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def on_start(self) -> None:
        self.username, self.token = _sign_up(self)
        self.channel_ids = self._enter_rooms()
        self.sent = 0
        self.pending_echo: dict[str, float] = {}
        self.pending_ack: dict[str, float] = {}
        self.pending_subscribe: dict[int, float] = {}
        self.stopping = False
        base = (self.host or "").replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        url = f"{base.rstrip('/')}{self._path()}"
        started = time.perf_counter()
        try:
            # No Origin header, like any native client; browsers' origins are checked.
            self.ws = websocket.create_connection(
                url, timeout=_CONNECT_TIMEOUT, suppress_origin=True
            )
        except (websocket.WebSocketException, OSError) as exc:
            self._report("connect", started, exc)
            raise StopUser() from exc
        self._report("connect", started)
        self.ws.settimeout(None)  # reads block the greenlet only; gevent runs the others
        self.reader = gevent.spawn(self._read)
        self._subscribe()

    def on_stop(self) -> None:
        self.stopping = True
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        reader = getattr(self, "reader", None)
        if reader is not None:
            reader.kill(block=True, timeout=2)

    @task
    def send_message(self) -> None:
        self.sent += 1
        client_id = f"{self.username}.{self.sent}"
        now = time.perf_counter()
        self.pending_echo[client_id] = now
        self.pending_ack[client_id] = now
        try:
            for frame in self._frames(client_id, f"locust {time.time():.6f} {self.sent}"):
                self.ws.send(json.dumps(frame))
        except (websocket.WebSocketException, OSError) as exc:
            self._report("send", now, exc)
            raise StopUser() from exc
        self._expire(now)

    def _read(self) -> None:
        while True:
            try:
                raw = self.ws.recv()
            except (websocket.WebSocketException, OSError) as exc:
                if not self.stopping:
                    self._report("error", time.perf_counter(), exc)
                return
            if not raw:  # the server closed the socket
                if not self.stopping:
                    self._report("error", time.perf_counter(), ConnectionError("socket closed"))
                return
            self._on_frame(json.loads(raw), len(raw))

    def _on_frame(self, frame: dict[str, Any], size: int) -> None:
        kind = frame.get("type")
        client_id = frame.get("client_id")
        if kind == "subscribed" and frame.get("channel_id") in self.pending_subscribe:
            self._report("subscribe", self.pending_subscribe.pop(frame["channel_id"]))
        elif kind == "ack" and client_id in self.pending_ack:
            self._report("ack", self.pending_ack.pop(client_id), length=size)
        elif kind == "message" and client_id in self.pending_echo:
            self._report("message", self.pending_echo.pop(client_id), length=size)
        elif kind == "message":
            self._report_delivery(frame, size)
        elif kind == "error":
            self._report("error", time.perf_counter(), RuntimeError(frame.get("code")))

    def _report_delivery(self, frame: dict[str, Any], size: int) -> None:
        content = str(frame.get("body", {}).get("content", ""))
        parts = content.split()
        if len(parts) < 2 or parts[0] != "locust":
            return
        latency_ms = max(0.0, (time.time() - float(parts[1])) * 1000)
        self.environment.events.request.fire(
            request_type=self.request_type,
            name="delivery",
            response_time=latency_ms,
            response_length=size,
            exception=None,
            context={},
        )

    def _expire(self, now: float) -> None:
        """Report messages whose own copy never came back as failures."""
        for client_id, sent_at in list(self.pending_echo.items()):
            if now - sent_at > _ECHO_TIMEOUT:
                del self.pending_echo[client_id]
                self.pending_ack.pop(client_id, None)
                self._report("message", sent_at, TimeoutError(f"no echo in {_ECHO_TIMEOUT} s"))

    def _report(
        self, name: str, started: float, exception: BaseException | None = None, length: int = 0
    ) -> None:
        self.environment.events.request.fire(
            request_type=self.request_type,
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=exception,
            context={},
        )


class MuxSocketUser(_SocketUser):
    """An app's user: one multiplexed socket for `LOCUST_ROOMS_PER_USER` rooms."""

    weight = 3
    request_type = "MUX"

    def _enter_rooms(self) -> list[int]:
        first = next(_room_picks)
        return [
            _enter_room(self, self.token, (first + offset) % _ROOMS)
            for offset in range(_ROOMS_PER_USER)
        ]

    def _path(self) -> str:
        return f"/api/v1/ws?token={self.token}"

    def _subscribe(self) -> None:
        for channel_id in self.channel_ids:
            self.pending_subscribe[channel_id] = time.perf_counter()
            self.ws.send(json.dumps({"type": "subscribe", "channel_id": channel_id}))

    def _frames(self, client_id: str, content: str) -> list[dict[str, Any]]:
        channel_id = self.channel_ids[self.sent % len(self.channel_ids)]
        return [
            {"type": "typing", "channel_id": channel_id},
            {
                "type": "send",
                "channel_id": channel_id,
                "body": {"type": "text", "content": content},
                "client_id": client_id,
            },
        ]


class ChatSocketUser(_SocketUser):
    """The Go server's client: the per-channel chat socket, one room."""

    weight = 1

    def _enter_rooms(self) -> list[int]:
        return [_enter_room(self, self.token)]

    def _path(self) -> str:
        return f"/api/v1/chat/{self.channel_ids[0]}?token={self.token}"

    def _frames(self, client_id: str, content: str) -> list[dict[str, Any]]:
        return [{"type": "text", "content": content, "client_id": client_id}]


class RestUser(HttpUser):
    """Uses the REST API: each visit logs in, lists channels and reads a room's history."""

    weight = 1
    wait_time = between(_REST_WAIT[0], _REST_WAIT[-1])

    def on_start(self) -> None:
        self.username, self.token = _sign_up(self)
        self.channel_id = _enter_room(self, self.token)
        self.visits = 0

    @task
    def visit(self) -> None:
        """One visit, in a fixed order so every endpoint is measured in every run."""
        self.visits += 1
        if self.visits % _REGISTER_EVERY == 0:
            _register(self)  # someone new registers now and then
        body = {"identity": self.username, "password": _PASSWORD}
        with self.client.post("/api/v1/auth/login", json=body, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"log-in answered {response.status_code}")
                return
            self.token = response.json()["data"]
        self.client.get("/api/v1/channels?limit=50", name="/api/v1/channels")
        self.client.get(
            f"/api/v1/channels/{self.channel_id}/messages?limit=50",
            headers=_auth(self.token),
            name="/api/v1/channels/[id]/messages",
        )
