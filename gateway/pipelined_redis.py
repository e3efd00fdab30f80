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
from collections import deque
from typing import Any, cast

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.resp import Arg, log_in, open_connection, settle, url_options


class PipelinedRedis:
    def __init__(self, url: str, *, timeout: float) -> None:
        self._options = url_options(url)
        self._timeout = timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None

    async def call(self, *args: Arg) -> Any:
        """Send one command and return its reply."""
        # hiredis's stub types the argument as a 1-tuple; it takes any length.
        return await self.send(hiredis.pack_command(args))  # type: ignore[arg-type]

    async def send(self, command: bytes) -> Any:
        """Send one command, already RESP-encoded, and return its reply."""
        protocol = self._protocol
        if protocol is None or protocol.lost:
            protocol = await self._connect()
        return await protocol.send(command)

    def send_nowait(self, command: bytes) -> asyncio.Future[Any] | None:
        """Send one command, already RESP-encoded, now if the connection is up: its
        reply's future, else None."""
        protocol = self._protocol
        if protocol is None or protocol.lost:
            return None
        return protocol.send(command)

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
        options, timeout = self._options, self._timeout
        protocol: _Protocol | None = None
        try:
            async with asyncio.timeout(timeout):
                protocol = await open_connection(options, lambda: _Protocol(timeout))
                await log_in(options, protocol.call)
        except (OSError, TimeoutError, ResponseError) as exc:
            if protocol is not None:
                protocol.close()
            raise RedisConnectionError(f"cannot connect to Redis: {type(exc).__name__}") from exc
        return protocol

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
        # hiredis's stub types the argument as a 1-tuple; it takes any length.
        return self.send(hiredis.pack_command(args))  # type: ignore[arg-type]

    def send(self, command: bytes) -> asyncio.Future[Any]:
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
        self._outgoing.append(command)
        return future

    def _flush(self) -> None:
        if self._transport is not None and not self.lost and self._outgoing:
            self._transport.write(b"".join(self._outgoing))
        self._outgoing = []

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            self._sent_at.popleft()
            settle(self._waiting.popleft(), reply)  # in order, even for a cancelled caller

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
