"""A real 3-master Valkey cluster on loopback, for the tests that run in cluster mode.

Each test module that needs one starts its own (about 2 s: a new master
waits 2 s before it calls the cluster ok), so a module that kills or
reshards nodes never disturbs another. Nodes keep AOF on, as in production,
so a killed and restarted master comes back with its data.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import redis.asyncio as aioredis
from redis.crc import key_slot

from shared.local_cluster import ValkeyCluster, start_valkey_cluster


def running_cluster() -> Iterator[ValkeyCluster]:
    """Body of a module-scoped fixture: start a cluster, yield it, stop it and its files."""
    root = Path(tempfile.mkdtemp(prefix="chat-cluster-"))
    cluster = start_valkey_cluster(root, masters=3, appendonly=True)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


async def owner_port(cluster: ValkeyCluster, name: str) -> int:
    """The port of the master that serves `name`'s slot now, from the cluster itself."""
    slot = key_slot(name.encode())
    client = aioredis.Redis(host="127.0.0.1", port=cluster.ports[0])
    try:
        for start, end, master, *_ in await client.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(master[1])
    finally:
        await client.aclose()
    raise AssertionError(f"slot {slot} has no master")


async def shard_subscribers(port: int, topic: str) -> int:
    """How many connections (gateways) node `port` has SSUBSCRIBEd to `topic`."""
    client = aioredis.Redis(host="127.0.0.1", port=port)
    try:
        reply = await client.execute_command("PUBSUB", "SHARDNUMSUB", topic)
        return int(reply[1])
    finally:
        await client.aclose()


async def migrate_slot(name: str, source_port: int, target_port: int, ports: list[int]) -> int:
    """Move `name`'s slot, keys included, from one master to another; return the slot.

    The procedure `valkey-cli --cluster reshard` follows: mark the slot
    importing on the target and migrating on the source, MIGRATE its keys,
    then assign it to the target on every master (target and source first).
    """
    slot = key_slot(name.encode())
    source = aioredis.Redis(host="127.0.0.1", port=source_port)
    target = aioredis.Redis(host="127.0.0.1", port=target_port)
    try:
        source_id = (await source.execute_command("CLUSTER", "MYID")).decode()
        target_id = (await target.execute_command("CLUSTER", "MYID")).decode()
        await target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        await source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        while keys := await source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            await source.execute_command(
                "MIGRATE", "127.0.0.1", target_port, "", 0, 5000, "KEYS", *keys
            )
        others = [port for port in ports if port not in (source_port, target_port)]
        for port in (target_port, source_port, *others):
            node = aioredis.Redis(host="127.0.0.1", port=port)
            try:
                await node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
            finally:
                await node.aclose()
    finally:
        await source.aclose()
        await target.aclose()
    return slot
