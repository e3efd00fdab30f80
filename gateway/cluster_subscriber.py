"""Sharded pub/sub over a Redis Cluster: one link per master, each topic on its slot's owner.

In cluster mode the send script publishes with SPUBLISH, which reaches only
the subscribers of the master owning the topic's slot. So this node keeps one
sharded `Subscriber` link per master and places every wanted topic on the
link of its owner, read from the slot map (`CLUSTER SLOTS`, asked of any
reachable node, the `REDIS_URL` seed included). It offers the same interface
as the single-server `Subscriber`: `subscribe` returns once publishes to the
topic arrive, `unsubscribe` never raises, `connected` is the readiness signal
(set while the slot map is known and every master's link is up), and
`on_resync` fires whenever publishes may have been missed.

The topology changes under us in three ways, and each requests a refresh of
the slot map:

- a link loses its connection (its master died, is restarting, or failed
  over to a replica at another address);
- a node answers SSUBSCRIBE with an error (MOVED: our map was stale);
- a node pushes `sunsubscribe` for a topic (its slot migrated away).

A refresh starts links for new masters, stops the links of nodes that are no
longer masters, and moves every topic whose owner changed (or that a link
lost) to its owner's link. That link subscribes the topics and, once the node
has confirmed them, calls `on_resync`, so the hub replays what was published
while they had no subscription: no gap, and the hub drops what it already
delivered. A link that reconnects to the same master resubscribes its topics
and resyncs by itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio.connection import ConnectionPool
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from gateway.subscriber import MessageHandler, SlotMovedError, Subscriber
from shared.backoff import Backoff
from shared.errors import UnavailableError

log = logging.getLogger(__name__)

Address = tuple[str, int]

# Refreshes closer together than this mean the topology is still moving (or a
# node keeps refusing): they back off instead of hammering the cluster.
_CALM_SECONDS = 1.0


class ClusterSubscriber:
    """Per-topic sharded subscriptions over one connection per cluster master."""

    def __init__(
        self,
        seed_url: str,
        on_message: MessageHandler,
        on_resync: Callable[[list[bytes]], None],
        *,
        timeout: float,
    ) -> None:
        self._seed_url = seed_url
        self._seed = _address_of(seed_url)
        self._on_message = on_message
        self._on_resync = on_resync
        self._timeout = timeout
        self._wanted: set[bytes] = set()
        self._placement: dict[bytes, Address] = {}
        # Slot -> address of its master; empty until the first map is read.
        self._owners: list[Address | None] = []
        self._links: dict[Address, Subscriber] = {}
        self._link_tasks: dict[Address, asyncio.Task[None]] = {}
        self._refresh_requested = asyncio.Event()
        self._refresh_requested.set()
        # Replaced after every refresh attempt, so a waiter sees the next one.
        self._refreshed = asyncio.Event()
        self._map_ready = asyncio.Event()
        self.connected = asyncio.Event()

    async def subscribe(self, topic: str) -> None:
        """Return once publishes to `topic` reach the handler; else UnavailableError.

        A subscription refused because the slot moved is retried on the new
        owner after a refresh, within the same `timeout`.
        """
        name = topic.encode()
        self._wanted.add(name)
        try:
            async with asyncio.timeout(self._timeout):
                while True:
                    await self._map_ready.wait()
                    refreshed = self._refreshed
                    link = self._link_for(name)
                    if link is None:
                        raise UnavailableError()  # the slot has no master
                    try:
                        await link.subscribe(topic)
                    except SlotMovedError:
                        self._refresh_requested.set()
                        await refreshed.wait()
                    except UnavailableError:
                        if any(current is link for current in self._links.values()):
                            raise
                        # A refresh stopped that link (its node is no longer a
                        # master) while we waited: the topic has a new owner.
                    else:
                        return
        except (TimeoutError, UnavailableError):
            self._wanted.discard(name)
            # A refresh may have placed it on a link meanwhile: take it back.
            address = self._placement.pop(name, None)
            if address is not None and address in self._links:
                self._links[address].forget([name])
            raise UnavailableError() from None

    async def unsubscribe(self, topic: str) -> None:
        """Stop wanting `topic`. Never raises."""
        name = topic.encode()
        self._wanted.discard(name)
        address = self._placement.pop(name, None)
        link = None if address is None else self._links.get(address)
        if link is not None:
            await link.unsubscribe(topic)

    def _link_for(self, name: bytes) -> Subscriber | None:
        address = self._placement.get(name)
        if address is None or address not in self._links:
            address = self._owner_of(name)
            if address is None:
                return None
            self._placement[name] = address
        return self._links.get(address)

    def _owner_of(self, name: bytes) -> Address | None:
        return self._owners[key_slot(name)] if self._owners else None

    async def run(self) -> None:
        """Keep the slot map and the links current until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            await self._maintain(tasks)

    async def _maintain(self, tasks: asyncio.TaskGroup) -> None:
        loop = asyncio.get_running_loop()
        backoff = Backoff()
        last_refresh = -_CALM_SECONDS
        while True:
            await self._refresh_requested.wait()
            if loop.time() - last_refresh < _CALM_SECONDS:
                await backoff.sleep()
            else:
                backoff = Backoff()
            self._refresh_requested.clear()
            try:
                await self._refresh(tasks)
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("cluster slot map unavailable", extra={"error": repr(exc)})
                self._refresh_requested.set()
            last_refresh = loop.time()
            done, self._refreshed = self._refreshed, asyncio.Event()
            done.set()

    async def _refresh(self, tasks: asyncio.TaskGroup) -> None:
        """Read the slot map, then make the links and the topics' placement follow it."""
        owners = await self._read_slot_map()
        masters = {address for address in owners if address is not None}
        self._owners = owners
        for address in masters - self._links.keys():
            self._start_link(address, tasks)
        for address in self._links.keys() - masters:
            await self._stop_link(address)
        moves: dict[Address, list[bytes]] = {}
        for name in list(self._wanted):
            owner = self._owner_of(name)
            current = self._placement.get(name)
            if owner == current:
                continue
            if current is not None and current in self._links:
                self._links[current].forget([name])
            if owner is None:
                self._placement.pop(name, None)
                self._refresh_requested.set()  # try again until the slot has a master
                continue
            self._placement[name] = owner
            moves.setdefault(owner, []).append(name)
        self._map_ready.set()
        self._update_connected()
        for address, names in moves.items():
            log.info("pub/sub topics moved", extra={"node": _name(address), "topics": len(names)})
            self._links[address].adopt(names)

    def _start_link(self, address: Address, tasks: asyncio.TaskGroup) -> None:
        link = Subscriber(
            node_url(self._seed_url, address),
            self._on_message,
            self._on_resync,
            timeout=self._timeout,
            sharded=True,
            on_lost=lambda names: self._on_lost(address, names),
            on_state=lambda: self._on_link_state(address),
        )
        self._links[address] = link
        self._link_tasks[address] = tasks.create_task(link.run(), name=f"pubsub-{_name(address)}")

    async def _stop_link(self, address: Address) -> None:
        link = self._links.pop(address)
        task = self._link_tasks.pop(address)
        task.cancel()
        await asyncio.wait({task})
        await link.aclose()

    def _on_lost(self, address: Address, names: list[bytes]) -> None:
        for name in names:
            if self._placement.get(name) == address:
                del self._placement[name]
        self._refresh_requested.set()

    def _on_link_state(self, address: Address) -> None:
        link = self._links.get(address)
        if link is not None and not link.connected.is_set():
            self._refresh_requested.set()
        self._update_connected()

    def _update_connected(self) -> None:
        links = self._links.values()
        if self._map_ready.is_set() and links and all(link.connected.is_set() for link in links):
            self.connected.set()
        else:
            self.connected.clear()

    async def _read_slot_map(self) -> list[Address | None]:
        """The owner of every slot, from the first node that answers (live links first)."""
        candidates = [a for a, link in self._links.items() if link.connected.is_set()]
        candidates += [self._seed, *self._links]
        last_error: Exception | None = None
        for address in dict.fromkeys(candidates):
            try:
                async with asyncio.timeout(self._timeout):
                    return await self._ask_slot_map(address)
            except (RedisError, OSError, TimeoutError) as exc:
                last_error = exc
        raise RedisConnectionError("no cluster node answered CLUSTER SLOTS") from last_error

    async def _ask_slot_map(self, address: Address) -> list[Address | None]:
        pool = ConnectionPool.from_url(
            node_url(self._seed_url, address),
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            protocol=2,
        )
        connection = pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.connect()
            await connection.send_command("CLUSTER", "SLOTS")
            reply = await connection.read_response(disable_decoding=True)
        finally:
            await connection.disconnect()
            await pool.aclose()
        return parse_slot_map(reply, address)

    async def aclose(self) -> None:
        for link in self._links.values():
            await link.aclose()


def parse_slot_map(reply: object, asked: Address) -> list[Address | None]:
    """Slot -> master address from a raw RESP2 `CLUSTER SLOTS` reply.

    Each range is `[start, end, [host, port, id, ...], replicas...]`; an empty
    host means the node we asked. Raises RedisError for any other shape.
    """
    owners: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
    if not isinstance(reply, list):
        raise RedisError(f"unexpected CLUSTER SLOTS reply: {reply!r:.200}")
    try:
        for item in reply:
            start, end, master = int(item[0]), int(item[1]), item[2]
            if not 0 <= start <= end < REDIS_CLUSTER_HASH_SLOTS:
                raise ValueError(f"slot range {start}-{end}")
            host = master[0].decode() or asked[0]
            port = int(master[1])
            owners[start : end + 1] = [(host, port)] * (end - start + 1)
    except (IndexError, TypeError, ValueError, AttributeError) as exc:
        raise RedisError(f"unexpected CLUSTER SLOTS reply: {reply!r:.200}") from exc
    return owners


def node_url(seed_url: str, address: Address) -> str:
    """`seed_url` (scheme, credentials, options) pointed at another node."""
    parts = urlsplit(seed_url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    host, port = address
    host_port = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host_port}"))


def _address_of(url: str) -> Address:
    parts = urlsplit(url)
    return (parts.hostname or "127.0.0.1", parts.port or 6379)


def _name(address: Address) -> str:
    return f"{address[0]}:{address[1]}"
