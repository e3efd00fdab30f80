"""Command clients for one Redis server or a Redis Cluster, chosen by `REDIS_CLUSTER`.

With `redis_cluster` off, `REDIS_URL` is the server. With it on, `REDIS_URL` is
any node of the cluster (the seed): redis-py's `RedisCluster` discovers the
others, sends each keyed command (scripts included) to the master owning its
slot, and follows MOVED and ASK redirections itself. Every command this
service sends touches one slot, since all keys of one send share the hash tag
of the channel's partition (`shared.redis_keys`).

Pub/sub does not go through these clients: the gateway keeps its own
connections for that (`gateway.subscriber`, `gateway.cluster_subscriber`).
"""

from __future__ import annotations

import logging
from typing import Any

import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.crc import key_slot
from redis.typing import EncodableT

from shared.settings import Settings

_log = logging.getLogger(__name__)

RedisClient = Redis | RedisCluster

# What a Redis outage raises, as opposed to a bad command: a refused, broken
# or timed-out connection, a server still loading its data set, and in a
# cluster a slot whose master is down or moving (CLUSTERDOWN, TRYAGAIN).
REDIS_OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    OSError,
)

# redis-py's cluster default is 100 connections per node, beyond which a
# command fails at once instead of waiting; a single-server pool has no bound.
# A gateway under load or a worker's blocking reads (one per partition) need
# more than 100, and a few thousand sockets per node is still harmless.
_CLUSTER_MAX_CONNECTIONS_PER_NODE = 4096


class _Cluster(RedisCluster):
    """RedisCluster with outages reported as ConnectionError, and XREADGROUP routed locally.

    redis-py raises its bare `RedisClusterException`, which is no `RedisError`,
    when it cannot (re)discover the cluster or a slot has no master. Callers
    treat Redis outages by catching `RedisError`/`ConnectionError`, so those
    two cases become a ConnectionError; any other `RedisClusterException`
    (such as keys of two slots in one command) is a bug and stays as it is.
    """

    _closing = False

    async def aclose(self) -> None:
        # redis-py calls aclose() itself to force a fresh slot map after
        # CLUSTERDOWN, an uncovered slot or repeated MOVED. That closes every
        # connection, also those other tasks are using at that moment, which
        # then fail with RuntimeError or AttributeError instead of a
        # RedisError. Here it only forces the fresh map; `close_redis` closes.
        if self._closing:
            await super().aclose()
        else:
            self._initialize = True

    async def close_connections(self) -> None:
        """Close every connection; the client is not used afterwards."""
        self._closing = True
        await self.aclose()

    async def initialize(self, *args: Any, **kwargs: Any) -> RedisCluster:
        try:
            return await super().initialize(*args, **kwargs)
        except redis.exceptions.RedisClusterException as exc:
            raise redis.exceptions.ConnectionError(f"cluster unreachable: {exc}") from exc

    async def execute_command(self, *args: EncodableT, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except redis.exceptions.SlotNotCoveredError as exc:
            raise redis.exceptions.ConnectionError(str(exc)) from exc

    async def _determine_slot(self, command: str, *args: Any) -> int:
        # XREADGROUP's keys follow its STREAMS argument ("movable keys"), so
        # redis-py would ask a node (COMMAND GETKEYS) before every read, and
        # fail every read while that node is down. The worker reads one
        # stream per call; its slot is computed here.
        if command.upper() == "XREADGROUP":
            # GROUP <group> <consumer> [options] STREAMS <keys> <ids>
            words = [a.upper() if isinstance(a, str | bytes) else a for a in args]
            marks = [i for i, w in enumerate(words) if i >= 3 and w in ("STREAMS", b"STREAMS")]
            if marks:
                rest = args[marks[0] + 1 :]
                keys = rest[: len(rest) // 2]
                slots = {key_slot(k if isinstance(k, bytes) else str(k).encode()) for k in keys}
                if len(slots) == 1:
                    return slots.pop()
        return await super()._determine_slot(command, *args)


async def close_redis(client: RedisClient) -> None:
    """Close a client made by `connect_redis`."""
    if isinstance(client, _Cluster):
        await client.close_connections()
    else:
        await client.aclose()


async def connect_redis(
    settings: Settings,
    *,
    socket_timeout: float,
    retry: Retry | None = None,
    retry_on_error: list[type[Exception]] | None = None,
) -> RedisClient:
    """A client for `REDIS_URL`: a `Redis`, or a `RedisCluster` in cluster mode.

    `retry` sets the attempts after a connection error or timeout (None:
    redis-py's default); in a cluster each attempt starts with a fresh look
    at the slot map. A single-server client connects on its first command.
    A cluster client reads the slot map here: redis-py's asyncio cluster
    client must be initialized before concurrent use (concurrent first
    commands race on its setup). If no node answers, that is logged and the
    client discovers the cluster on first use, as a single-server client
    would connect then. Close the client with `close_redis`.
    """
    url = settings.redis_url.get_secret_value()
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": settings.redis_timeout_seconds,
    }
    if retry is not None:
        options["retry"] = retry
    if retry_on_error is not None:
        options["retry_on_error"] = retry_on_error
    if not settings.redis_cluster:
        return Redis.from_url(url, **options)
    cluster = _Cluster.from_url(url, max_connections=_CLUSTER_MAX_CONNECTIONS_PER_NODE, **options)
    try:
        await cluster.initialize()
    except redis.exceptions.ConnectionError as exc:
        _log.warning("redis cluster unreachable at start", extra={"error": repr(exc)})
    return cluster
