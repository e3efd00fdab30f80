"""A pub/sub connection to one Redis server, owned by one reader task.

redis-py's `PubSub` object is not safe to share between a reader and
concurrent subscribe calls, so this module drives a raw connection itself:
`run()` is the only code that connects, reads and reconnects; `subscribe()`
only writes a SUBSCRIBE under a lock and waits for the reader to see its
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
from collections.abc import Callable, Iterable

from redis.asyncio.connection import Connection, ConnectionPool
from redis.crc import key_slot
from redis.exceptions import RedisError, ResponseError

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
        # No socket timeout: a quiet subscription is normal, not an error. RESP2:
        # under RESP3 (redis-py 8's default) publishes arrive as push frames that
        # `read_response` hands to a push handler instead of returning them.
        self._pool = ConnectionPool.from_url(
            redis_url, socket_timeout=None, socket_connect_timeout=timeout, protocol=2
        )
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
        self._connection: Connection | None = None
        self._write_lock = asyncio.Lock()
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
            await self._write(self._subscribe_command, name)
            async with asyncio.timeout(self._timeout):
                await waiter
        except SlotMovedError:
            self._wanted.discard(name)
            raise
        except (RedisError, OSError, TimeoutError, UnavailableError):
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
            await self._write(self._unsubscribe_command, name)
        except (RedisError, OSError, UnavailableError):
            log.debug("unsubscribe not sent; the reconnect will not resubscribe it")

    async def adopt(self, topics: list[bytes]) -> None:
        """Want `topics` (placed here by a topology change); resync once they are confirmed.

        Never raises: if the connection is down, the reconnect subscribes them
        and resyncs anyway.
        """
        self._wanted.update(topics)
        try:
            async with self._write_lock:
                connection = self._connection
                if connection is None or not connection.is_connected:
                    return
                await self._send_subscribes(connection, topics)
                await self._send_resync_marker(connection, topics)
        except (RedisError, OSError):
            log.debug("adopted topics not sent; the reconnect subscribes them")

    def forget(self, topics: Iterable[bytes]) -> None:
        """Stop wanting `topics` without a command: their slot now lives on another node."""
        self._wanted.difference_update(topics)

    async def _send_resync_marker(self, connection: Connection, topics: list[bytes]) -> None:
        """PING after subscribing `topics`: its reply comes after their confirmations."""
        token = b"%s:%d" % (_RESYNC_TOKEN, next(self._resync_numbers))
        self._resyncs[token] = topics
        await connection.send_command("PING", token, check_health=False)

    async def _write(self, *args: str | bytes) -> None:
        async with self._write_lock:
            connection = self._connection
            # Checked right before the write, with no await in between: a
            # disconnected Connection would otherwise reconnect itself here,
            # behind the reader's back.
            if connection is None or not connection.is_connected:
                raise UnavailableError()
            await connection.send_command(*args, check_health=False)

    async def run(self) -> None:
        """Connect, (re)subscribe, read forever; reconnect on failure. Cancel to stop."""
        while True:
            connection = self._pool.make_connection()  # type: ignore[no-untyped-call]
            pinger: asyncio.Task[None] | None = None
            try:
                await connection.connect()
                async with self._write_lock:
                    self._connection = connection
                    wanted = list(self._wanted)
                    await self._send_subscribes(connection, wanted)
                    await self._send_resync_marker(connection, wanted)
                pinger = asyncio.create_task(self._keep_alive(), name="pubsub-keepalive")
                await self._read(connection)
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("pub/sub connection lost", extra={"error": type(exc).__name__})
            finally:
                if pinger is not None:
                    pinger.cancel()
                self._connection = None
                self._fail_waiters()
                self._resyncs.clear()  # the reconnect sends one marker for everything
                await connection.disconnect(nowait=True)
                self._set_connected(False)
            await self._backoff.sleep()

    async def _send_subscribes(self, connection: Connection, topics: list[bytes]) -> None:
        # SSUBSCRIBE refuses topics of different slots in one command (CROSSSLOT),
        # so sharded topics go in one command per slot: all topics of a
        # partition share one, so this is at most one command per partition.
        groups: dict[int, list[bytes]] = {}
        for topic in topics:
            groups.setdefault(key_slot(topic) if self._sharded else 0, []).append(topic)
        for group in groups.values():
            for start in range(0, len(group), _RESUBSCRIBE_CHUNK):
                chunk = group[start : start + _RESUBSCRIBE_CHUNK]
                await connection.send_command(self._subscribe_command, *chunk, check_health=False)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self._timeout)
            try:
                await self._write("PING", _KEEPALIVE_TOKEN)
            except (RedisError, OSError, UnavailableError):
                return  # the reader sees the same failure and reconnects

    async def _read(self, connection: Connection) -> None:
        message_kind, confirm_kind = self._message_kind, self._confirm_kind
        silence_limit = 2 * self._timeout
        while True:
            try:
                reply = await connection.read_response(disable_decoding=True, timeout=silence_limit)
            except ResponseError as exc:
                # An error reply, read in full: the connection is still usable.
                if not self._sharded:
                    raise
                # It names no topic: give up every topic, in flight or confirmed.
                self._lose(list(self._wanted | self._waiters.keys()), str(exc))
                continue
            if reply is None:
                raise TimeoutError("pub/sub connection silent")
            if isinstance(reply, list) and len(reply) >= 3:
                kind, topic, payload = reply[0], reply[1], reply[2]
                if kind == message_kind:
                    self._on_message(topic, payload)
                elif kind == confirm_kind:
                    for waiter in self._waiters.get(topic, ()):
                        if not waiter.done():
                            waiter.set_result(None)
                elif kind == b"sunsubscribe" and topic in self._wanted:
                    self._lose([topic], "slot moved")
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
        await self._pool.aclose()


def _pong_token(reply: object) -> bytes | None:
    """The argument of a PING's reply: `[pong, token]` when subscribed, `token` when not."""
    if isinstance(reply, list) and len(reply) == 2 and reply[0] == b"pong":
        token = reply[1]
        return token if isinstance(token, bytes) else None
    return reply if isinstance(reply, bytes) else None
