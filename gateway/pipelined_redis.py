"""One Redis connection shared by every concurrent send, pipelined automatically.

Commands issued during one turn of the event loop leave in a single write,
and their replies, which Redis returns in order, resolve the callers' futures
in order. Compared with a pooled client this saves, per message, a pool
checkout, a write syscall of its own and the client's retry and event
machinery, which is most of what a send costs the gateway.

It speaks to one node (a single Redis or Valkey server). Errors surface as
redis-py's exception types so callers treat both clients alike: a lost or
refused connection is `ConnectionError` (every command still waiting fails
with it, the next call reconnects), an error reply `ResponseError`. A reply
later than `timeout` means the connection is no longer trusted: every command
still waiting fails with `TimeoutError`, and the connection is dropped. One
timer per connection watches the oldest waiting command, so a command costs
no timer of its own. Nothing is ever re-sent here.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any, cast

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = str | bytes | int


class PipelinedRedis:
    def __init__(self, url: str, *, timeout: float) -> None:
        self._options = parse_url(url)
        self._timeout = timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None

    async def call(self, *args: Arg) -> Any:
        """Send one command and return its reply."""
        protocol = self._protocol
        if protocol is None or protocol.lost:
            protocol = await self._connect()
        return await protocol.call(args)

    async def _connect(self) -> _Protocol:
        # Single flight: concurrent callers share one connection attempt.
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._open())
        try:
            protocol = await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None
        self._protocol = protocol
        return protocol

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        options = self._options
        try:
            async with asyncio.timeout(self._timeout):
                if "path" in options:
                    _, protocol = await loop.create_unix_connection(
                        lambda: _Protocol(self._timeout), options["path"]
                    )
                else:
                    tls = (
                        ssl.create_default_context()
                        if options.get("connection_class") is SSLConnection
                        else None
                    )
                    _, protocol = await loop.create_connection(
                        lambda: _Protocol(self._timeout),
                        options.get("host", "localhost"),
                        options.get("port", 6379),
                        ssl=tls,
                    )
                await self._handshake(protocol)
        except (OSError, TimeoutError, ResponseError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {type(exc).__name__}") from exc
        return protocol

    async def _handshake(self, protocol: _Protocol) -> None:
        password = self._options.get("password")
        if password:
            username = self._options.get("username")
            await protocol.call(("AUTH", username, password) if username else ("AUTH", password))
        db = int(self._options.get("db") or 0)
        if db:
            await protocol.call(("SELECT", db))

    def close(self) -> None:
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None


class _Protocol(asyncio.Protocol):
    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._sent_at: deque[float] = deque()  # loop time of each waiting command
        self._watchdog: asyncio.TimerHandle | None = None
        self._outgoing: list[bytes] = []
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not subclass asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)

    def call(self, args: tuple[Arg, ...]) -> asyncio.Future[Any]:
        if self.lost or self._transport is None:
            raise RedisConnectionError("Redis connection lost")
        loop = self._loop
        future: asyncio.Future[Any] = loop.create_future()
        now = loop.time()
        self._waiting.append(future)
        self._sent_at.append(now)
        if self._watchdog is None:
            self._watchdog = loop.call_at(now + self._timeout, self._check_oldest)
        if not self._outgoing:
            loop.call_soon(self._flush)
        # hiredis's stub types the argument as a 1-tuple; it takes any length.
        self._outgoing.append(hiredis.pack_command(args))  # type: ignore[arg-type]
        return future

    def _flush(self) -> None:
        if self._transport is not None and not self.lost and self._outgoing:
            self._transport.write(b"".join(self._outgoing))
        self._outgoing = []

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            future = self._waiting.popleft()
            self._sent_at.popleft()
            if future.done():
                continue  # its caller was cancelled; the reply is dropped in order
            if isinstance(reply, ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def _check_oldest(self) -> None:
        self._watchdog = None
        if not self._sent_at:
            return  # the next call arms the watchdog again
        deadline = self._sent_at[0] + self._timeout
        if self._loop.time() < deadline:
            self._watchdog = self._loop.call_at(deadline, self._check_oldest)
            return
        self._fail_waiting(RedisTimeoutError("Redis did not answer in time"))
        if self._transport is not None:
            self._transport.abort()

    def _fail_waiting(self, error: Exception) -> None:
        self.lost = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._sent_at.clear()
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_waiting(RedisConnectionError("Redis connection lost"))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
