"""A Valkey cluster of real `valkey-server` processes on loopback, for the cluster tests.

Built from `local_servers.start_valkey` nodes: the caller owns every PID, so a
test can kill a master and `restart` it on the same ports and data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from shared.local_servers import ServerProcess, ServerStartError, free_port, start_valkey

_CLUSTER_SLOTS = 16384
# Forming a 3-node cluster on loopback takes well under a second; a restarted
# node rejoins as fast. The deadline only bounds a cluster that never forms.
_CLUSTER_DEADLINE_SECONDS = 30.0
# Pause between polls of CLUSTER INFO; a poll is cheap.
_PROBE_INTERVAL_SECONDS = 0.05


@dataclass
class ValkeyCluster:
    """Valkey masters forming one cluster on 127.0.0.1, owned by the caller, who stops it.

    Node `i` keeps its data, AOF and `nodes.conf` in `root/node-<i>`, so
    `restart(i)` brings it back with the same identity, slots and data.
    """

    root: Path
    nodes: list[ServerProcess]
    bus_ports: list[int]
    appendonly: bool
    # Node i's first and last slot, as the cluster was formed.
    slot_ranges: list[tuple[int, int]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """A seed URL (the first node); clients discover the others from it."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def restart(self, index: int) -> ServerProcess:
        """Start node `index` again on its ports and data; return once the cluster is ok.

        The node must have exited (stopped or killed) first.
        """
        node = start_valkey(
            self.root / f"node-{index}",
            self.nodes[index].port,
            appendonly=self.appendonly,
            cluster_port=self.bus_ports[index],
        )
        self.nodes[index] = node
        _wait_cluster_ok(self.ports)
        return node

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_valkey_cluster(root: Path, *, masters: int = 3, appendonly: bool = True) -> ValkeyCluster:
    """Start `masters` Valkey nodes on free loopback ports and form one cluster, no replicas.

    The slots are split evenly in order. Returns once every node reports the
    cluster ok, knows every node and sees every slot served.

    Raises:
        ServerStartError: a node did not start, or the cluster did not form
            within 30 s. Nodes already started are stopped.
    """
    ports = _distinct_free_ports(2 * masters)
    client_ports, bus_ports = ports[:masters], ports[masters:]
    cluster = ValkeyCluster(root, [], bus_ports, appendonly)
    try:
        for index, (port, bus_port) in enumerate(zip(client_ports, bus_ports, strict=True)):
            cluster.nodes.append(
                start_valkey(
                    root / f"node-{index}", port, appendonly=appendonly, cluster_port=bus_port
                )
            )
        cluster.slot_ranges = _form_cluster(client_ports, bus_ports)
        _wait_cluster_ok(client_ports)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _form_cluster(ports: list[int], bus_ports: list[int]) -> list[tuple[int, int]]:
    """Give each node an even share of the slots and introduce them to the first node.

    What `valkey-cli --cluster create --cluster-replicas 0` does, without its
    fixed one-second waits. Distinct config epochs avoid an epoch collision
    that the nodes would otherwise have to resolve first.
    """
    share = _CLUSTER_SLOTS // len(ports)
    ranges = [
        (index * share, _CLUSTER_SLOTS - 1 if index == len(ports) - 1 else (index + 1) * share - 1)
        for index in range(len(ports))
    ]
    for index, (port, (first, last)) in enumerate(zip(ports, ranges, strict=True)):
        with _valkey_client(port) as client:
            client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
    with _valkey_client(ports[0]) as client:
        for port, bus_port in zip(ports[1:], bus_ports[1:], strict=True):
            client.execute_command("CLUSTER", "MEET", "127.0.0.1", port, bus_port)
    return ranges


def _wait_cluster_ok(ports: list[int]) -> None:
    """Poll until every node says the cluster is ok with every node and slot healthy.

    Cluster gossip signals nothing to an outsider, hence the bounded poll.
    """
    expected = {
        "cluster_state": "ok",
        "cluster_slots_ok": str(_CLUSTER_SLOTS),
        "cluster_known_nodes": str(len(ports)),
    }
    deadline = time.monotonic() + _CLUSTER_DEADLINE_SECONDS
    while True:
        states = [_cluster_info(port) for port in ports]
        if all(expected.items() <= state.items() for state in states):
            return
        if time.monotonic() > deadline:
            raise ServerStartError(
                f"valkey cluster on ports {ports} not ok within"
                f" {_CLUSTER_DEADLINE_SECONDS:.0f} s: {states}"
            )
        time.sleep(_PROBE_INTERVAL_SECONDS)


def _cluster_info(port: int) -> dict[str, str]:
    try:
        with _valkey_client(port) as client:
            text = client.execute_command("CLUSTER", "INFO")
    except redis.exceptions.ConnectionError:
        return {}
    if isinstance(text, bytes):
        text = text.decode()
    return dict(line.split(":", 1) for line in str(text).splitlines() if ":" in line)


def _valkey_client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, socket_connect_timeout=5)
