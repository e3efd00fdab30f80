"""A pub/sub connection to one Redis server, read in its protocol callback, kept up by one task.

redis-py's `PubSub` object is not safe to share between a reader and
concurrent subscribe calls, so this module drives a raw connection itself (an
asyncio protocol fed by hiredis, see `gateway.resp`): `run()` is the only code
that connects and reconnects, replies are handled in the protocol's callback
as they arrive, and `subscribe()` only writes a SUBSCRIBE (a write is one
synchronous call, so commands never interleave) and waits for its
confirmation. After the confirmation, every later publish to that topic is
delivered, which is the promise the hub's `Subscriptions` port makes.

On a lost connection the reader reconnects with capped, jittered backoff and
resubscribes every topic still wanted: the set of wanted topics, kept here and
mirroring the hub, is the source of truth. A PING sent after the resubscribe
is answered after every confirmation, so its reply is the moment from which
no publish is missed; `on_resync` then lets the hub replay what was published
while the link was down.

A quiet subscription sends nothing, so a link that died without a reset (a
paused or partitioned Redis) would look healthy forever: the connection is
pinged every `timeout` seconds and dropped when nothing arrives for twice that.

With one Redis server, the gateway has one `Subscriber` (`sharded=False`).
In a Redis Cluster each master gets one (`sharded=True`, SSUBSCRIBE), run by
`gateway.cluster_subscriber`, which places every topic on the link of the
master owning its slot. There a node can drop topics on its own: it answers
an SSUBSCRIBE with an error (MOVED: the slot is served elsewhere) or pushes
`sunsubscribe` (the slot migrated away). The link then stops wanting those
topics (all of them for an error, which names no topic) and hands them to
`on_lost`, so they are placed again from a fresh slot map.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, cast

import hiredis
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from gateway.resp import Arg, log_in, open_connection, settle, url_options
from shared.backoff import Backoff
from shared.errors import UnavailableError

log = logging.getLogger(__name__)

# Subscribing is chunked so one reconnect never builds a multi-megabyte command.
_RESUBSCRIBE_CHUNK = 1000

MessageHandler = Callable[[bytes, bytes], None]
LostHandler = Callable[[list[bytes]], None]

_RESYNC_TOKEN = b"resync"
_KEEPALIVE_TOKEN = b"keepalive"


class SlotMovedError(Exception):
    """A cluster node dropped or refused the subscription: place the topic again."""


class Subscriber:
    """Per-topic subscriptions over one connection, with confirmations and reconnects.

    `connected` is set once the connection is up and every wanted topic is
    confirmed, and cleared when it drops. `on_state` (optional) is called
    after each change of `connected`; `on_lost` (sharded only) as described
    in the module docstring.
    """

    def __init__(
        self,
        redis_url: str,
        on_message: MessageHandler,
        on_resync: Callable[[list[bytes]], None],
        *,
        timeout: float,
        sharded: bool,
        on_lost: LostHandler | None = None,
        on_state: Callable[[], None] | None = None,
    ) -> None:
        self._options = url_options(redis_url)
        self._on_message = on_message
        self._on_resync = on_resync
        # Resync markers in flight: the PING token -> the topics it confirms.
        self._resyncs: dict[bytes, list[bytes]] = {}
        self._resync_numbers = itertools.count()
        self._on_lost = on_lost
        self._on_state = on_state
        self._timeout = timeout
        self._sharded = sharded
        self._subscribe_command = "SSUBSCRIBE" if sharded else "SUBSCRIBE"
        self._unsubscribe_command = "SUNSUBSCRIBE" if sharded else "UNSUBSCRIBE"
        self._message_kind = b"smessage" if sharded else b"message"
        self._confirm_kind = b"ssubscribe" if sharded else b"subscribe"
        self._wanted: set[bytes] = set()
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._link: _Link | None = None
        self._backoff = Backoff()
        self.connected = asyncio.Event()

    async def subscribe(self, topic: str) -> None:
        """Return once publishes to `topic` reach the handler.

        Raises SlotMovedError when a cluster node refused or dropped the topic
        meanwhile, else UnavailableError on any failure.
        """
        name = topic.encode()
        self._wanted.add(name)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(name, []).append(waiter)
        try:
            self._write(self._subscribe_command, name)
            async with asyncio.timeout(self._timeout):
                await waiter
        except SlotMovedError:
            self._wanted.discard(name)
            raise
        except (RedisError, TimeoutError, UnavailableError):
            self._wanted.discard(name)
            raise UnavailableError() from None
        finally:
            waiters = self._waiters.get(name, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiters.pop(name, None)

    async def unsubscribe(self, topic: str) -> None:
        """Stop wanting `topic`. Never raises: a lost connection forgets it anyway."""
        name = topic.encode()
        self._wanted.discard(name)
        try:
            self._write(self._unsubscribe_command, name)
        except UnavailableError:
            log.debug("unsubscribe not sent; the reconnect will not resubscribe it")

    def adopt(self, topics: list[bytes]) -> None:
        """Want `topics` (placed here by a topology change); resync once they are confirmed.

        If the connection is down, the reconnect subscribes them and resyncs anyway.
        """
        self._wanted.update(topics)
        link = self._link
        if link is not None and not link.lost:
            self._send_subscribes(link, topics)
            self._send_resync_marker(link, topics)

    def forget(self, topics: Iterable[bytes]) -> None:
        """Stop wanting `topics` without a command: their slot now lives on another node."""
        self._wanted.difference_update(topics)

    def _send_resync_marker(self, link: _Link, topics: list[bytes]) -> None:
        """PING after subscribing `topics`: its reply comes after their confirmations."""
        token = b"%s:%d" % (_RESYNC_TOKEN, next(self._resync_numbers))
        self._resyncs[token] = topics
        link.write(("PING", token))

    def _write(self, *args: Arg) -> None:
        link = self._link
        if link is None or link.lost:
            raise UnavailableError()
        link.write(args)

    async def run(self) -> None:
        """Connect, (re)subscribe, read forever; reconnect on failure. Cancel to stop."""
        while True:
            link: _Link | None = None
            pinger: asyncio.Task[None] | None = None
            try:
                link = await self._open()
                self._link = link
                wanted = list(self._wanted)
                self._send_subscribes(link, wanted)
                self._send_resync_marker(link, wanted)
                pinger = asyncio.create_task(self._keep_alive(), name="pubsub-keepalive")
                raise await link.ended
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("pub/sub connection lost", extra={"error": type(exc).__name__})
            finally:
                if pinger is not None:
                    pinger.cancel()
                self._link = None
                self._fail_waiters()
                self._resyncs.clear()  # the reconnect sends one marker for everything
                if link is not None:
                    link.abort()
                self._set_connected(False)
            await self._backoff.sleep()

    async def _open(self) -> _Link:
        options, timeout = self._options, self._timeout
        link: _Link | None = None
        try:
            async with asyncio.timeout(timeout):
                link = await open_connection(
                    options, lambda: _Link(self._on_reply, silence_limit=2 * timeout)
                )
                await log_in(options, link.call)
        except BaseException:
            if link is not None:
                link.abort()
            raise
        return link

    def _send_subscribes(self, link: _Link, topics: list[bytes]) -> None:
        # SSUBSCRIBE refuses topics of different slots in one command (CROSSSLOT),
        # so sharded topics go in one command per slot: all topics of a
        # partition share one, so this is at most one command per partition.
        groups: dict[int, list[bytes]] = {}
        for topic in topics:
            groups.setdefault(key_slot(topic) if self._sharded else 0, []).append(topic)
        for group in groups.values():
            for start in range(0, len(group), _RESUBSCRIBE_CHUNK):
                chunk = group[start : start + _RESUBSCRIBE_CHUNK]
                link.write((self._subscribe_command, *chunk))

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self._timeout)
            try:
                self._write("PING", _KEEPALIVE_TOKEN)
            except UnavailableError:
                return  # the reader sees the same failure and reconnects

    def _on_reply(self, link: _Link, reply: Any) -> None:
        if isinstance(reply, list) and len(reply) >= 3:
            kind, topic, payload = reply[0], reply[1], reply[2]
            if kind == self._message_kind:
                self._on_message(topic, payload)
            elif kind == self._confirm_kind:
                for waiter in self._waiters.get(topic, ()):
                    if not waiter.done():
                        waiter.set_result(None)
            elif kind == b"sunsubscribe" and topic in self._wanted:
                self._lose([topic], "slot moved")
        elif isinstance(reply, ResponseError):
            if not self._sharded:
                link.fail(reply)
                return
            # It names no topic: give up every topic, in flight or confirmed.
            self._lose(list(self._wanted | self._waiters.keys()), str(reply))
        elif (token := _pong_token(reply)) is not None and token in self._resyncs:
            self._backoff = Backoff()
            self._set_connected(True)
            self._on_resync(self._resyncs.pop(token))

    def _lose(self, topics: list[bytes], reason: str) -> None:
        """The node no longer serves `topics` to us: stop wanting them and report them."""
        log.info("pub/sub topics dropped by the node", extra={"topics": len(topics), "why": reason})
        self._wanted.difference_update(topics)
        for topic in topics:
            for waiter in self._waiters.get(topic, ()):
                if not waiter.done():
                    waiter.set_exception(SlotMovedError())
        if self._on_lost is not None:
            self._on_lost(topics)

    def _set_connected(self, up: bool) -> None:
        if up:
            self.connected.set()
        else:
            self.connected.clear()
        if self._on_state is not None:
            self._on_state()

    def _fail_waiters(self) -> None:
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(UnavailableError())

    async def aclose(self) -> None:
        if self._link is not None:
            self._link.abort()


def _pong_token(reply: object) -> bytes | None:
    """The argument of a PING's reply: `[pong, token]` when subscribed, `token` when not."""
    if isinstance(reply, list) and len(reply) == 2 and reply[0] == b"pong":
        token = reply[1]
        return token if isinstance(token, bytes) else None
    return reply if isinstance(reply, bytes) else None


class _Link(asyncio.Protocol):
    """One pub/sub connection. Every reply goes to `on_reply`, in order, except
    those a `call` awaits (the login, before any subscription).

    `ended` resolves to the exception that ended the connection: lost, failed
    by the reply handler, or silent for `silence_limit` seconds (one timer per
    connection, re-armed from the time of the last data).
    """

    def __init__(self, on_reply: Callable[[_Link, Any], None], *, silence_limit: float) -> None:
        self._on_reply = on_reply
        self._silence_limit = silence_limit
        self._loop = asyncio.get_running_loop()
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._transport: asyncio.Transport | None = None
        self._calls: deque[asyncio.Future[Any]] = deque()
        self._heard_at = self._loop.time()
        self._silence_timer: asyncio.TimerHandle | None = None
        self.ended: asyncio.Future[Exception] = self._loop.create_future()

    @property
    def lost(self) -> bool:
        return self.ended.done()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not subclass asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)
        self._silence_timer = self._loop.call_at(
            self._heard_at + self._silence_limit, self._check_silence
        )

    def write(self, args: tuple[Arg, ...]) -> None:
        if self.lost or self._transport is None:
            raise UnavailableError()
        # hiredis's stub types the argument as a 1-tuple; it takes any length.
        self._transport.write(hiredis.pack_command(args))  # type: ignore[arg-type]

    async def call(self, args: tuple[Arg, ...]) -> Any:
        future: asyncio.Future[Any] = self._loop.create_future()
        try:
            self.write(args)
        except UnavailableError:
            raise RedisConnectionError("pub/sub connection lost") from None
        self._calls.append(future)
        return await future

    def data_received(self, data: bytes) -> None:
        self._heard_at = self._loop.time()
        reader = self._reader
        reader.feed(data)
        while not self.lost and (reply := reader.gets()) is not False:
            if self._calls:
                settle(self._calls.popleft(), reply)
            else:
                self._on_reply(self, reply)

    def _check_silence(self) -> None:
        deadline = self._heard_at + self._silence_limit
        if self._loop.time() < deadline:
            self._silence_timer = self._loop.call_at(deadline, self._check_silence)
        else:
            self.fail(TimeoutError("pub/sub connection silent"))

    def fail(self, error: Exception) -> None:
        """End the connection with `error` (the first reason wins)."""
        if not self.ended.done():
            self.ended.set_result(error)
        if self._silence_timer is not None:
            self._silence_timer.cancel()
            self._silence_timer = None
        while self._calls:
            call = self._calls.popleft()
            if not call.done():  # a login that timed out was cancelled
                call.set_exception(RedisConnectionError("pub/sub connection lost"))
        self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError("pub/sub connection lost"))
