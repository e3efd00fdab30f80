"""A cluster master killed (kill -9) and restarted under traffic, with real processes.

Two gateway processes and a worker process run in cluster mode against a
3-master cluster (no replicas, AOF on). Traffic flows in three channels, two
of them on the master that gets killed. Until it restarts on the same port
and data, its slots have no server: sends there get `unavailable` and the
senders re-send by `client_id`, while the channel on another master keeps
going. Afterwards the usual fault checks hold for every channel: every
acknowledged message is stored once, and every member got seqs 1..N once each
and in order.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from shared.local_cluster import ValkeyCluster
from shared.local_servers import ServerProcess
from shared.redis_keys import RedisKeys
from tests.cluster.servers import owner_port
from tests.faults.stack import Servers, Stack
from tests.faults.traffic import Report, finish, start_traffic

pytestmark = pytest.mark.timeout(120)

_MESSAGES_PER_SENDER = 200
_SEND_PAUSE_SECONDS = 0.005
_SETTLE_SECONDS = 30.0
_OUTAGE_ACKS = 40  # acks the unaffected channel gets while the master is down


@pytest.fixture
async def stack(
    postgres_server: ServerProcess, valkey_cluster: ValkeyCluster, tmp_path: Path
) -> AsyncIterator[Stack]:
    # A Stack reads only PostgreSQL's port from its Servers; Redis is the cluster.
    servers = Servers(tmp_path, postgres_server, valkey_cluster.nodes[0])
    deployment = await Stack.create(
        servers, tmp_path, REDIS_URL=valkey_cluster.url, REDIS_CLUSTER="true"
    )
    try:
        yield deployment
    finally:
        deployment.stop()


async def test_master_killed_and_restarted_under_traffic_loses_nothing(
    stack: Stack, valkey_cluster: ValkeyCluster
) -> None:
    gateways = list(await asyncio.gather(stack.start_gateway(), stack.start_gateway()))
    stack.start_worker()
    keys = RedisKeys(stack.env["REDIS_KEY_PREFIX"], 16)
    async with aiohttp.ClientSession() as session:
        traffics = [
            await start_traffic(
                session,
                gateways,
                members=2,
                senders=1,
                messages=_MESSAGES_PER_SENDER,
                pause=_SEND_PAUSE_SECONDS,
                tag=f"c{n}-",
            )
            for n in range(3)
        ]
        owners = [
            await owner_port(valkey_cluster, keys.channel_topic(t.channel_id)) for t in traffics
        ]
        victim = valkey_cluster.ports.index(owners[0])
        hit = [t for t, port in zip(traffics, owners, strict=True) if port == owners[0]]
        spared = [t for t, port in zip(traffics, owners, strict=True) if port != owners[0]]
        assert spared, f"all channels on one master: {owners}"
        for traffic in traffics:
            await traffic.wait_acked(50)

        assert valkey_cluster.nodes[victim].kill() == -signal.SIGKILL
        for traffic in spared:  # the other masters keep serving meanwhile
            acked = sum(len(sender.acked) for sender in traffic.senders)
            await traffic.wait_acked(acked + _OUTAGE_ACKS)
        await asyncio.to_thread(valkey_cluster.restart, victim)

        reports = [
            await finish(traffic, stack, f"kill -9 master, restart: channel {traffic.channel_id}")
            for traffic in traffics
        ]

    # The outage was felt where it should be: sends to the dead master were refused.
    assert all("unavailable" in s.refusals for t in hit for s in t.senders)
    total = _total(reports)
    print(
        f"FAULT kill -9 cluster master, restart: {len(hit)} of {len(traffics)} channels hit,"
        f" {total.line('total')}"
    )


def _total(reports: list[Report]) -> Report:
    return Report(
        **{
            name: sum(getattr(report, name) for report in reports)
            for name in Report.__dataclass_fields__
        }
    )
