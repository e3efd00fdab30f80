"""Faults injected from outside while clients send: every process is a real OS process.

Each test runs steady traffic through two gateways, breaks one component
mid-stream, lets it recover, then checks the invariants of DESIGN.md:
every member received every seq exactly once and in order (reconnecting with
`since` when its socket closed), and PostgreSQL stores exactly the set of
acknowledged messages, once each. Each test prints one `FAULT` line with the
figures (run with `-s` to see them).
"""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp
import pytest

from tests.faults.chat_clients import open_socket, signup
from tests.faults.stack import Servers, Service, Stack
from tests.faults.traffic import finish, start_traffic
from tests.gateway.api_client import tiny_receive_buffer

pytestmark = pytest.mark.timeout(180)

_OUTAGE_SECONDS = 2.0


async def _deployment(stack: Stack, gateways: int = 2) -> tuple[list[Service], Service]:
    started = await asyncio.gather(*(stack.start_gateway() for _ in range(gateways)))
    return list(started), stack.start_worker()


async def test_worker_killed_mid_stream_loses_and_duplicates_nothing(
    stack: Stack, session: aiohttp.ClientSession, socket_kind: str
) -> None:
    gateways, worker = await _deployment(stack)
    traffic = await start_traffic(session, gateways, kind=socket_kind)
    await traffic.wait_acked(150)

    worker.signal(signal.SIGKILL)
    assert worker.wait() == -signal.SIGKILL
    await traffic.wait_acked(400)  # acknowledged while no worker runs
    stack.start_worker()

    await finish(traffic, stack, "kill -9 worker")


@pytest.mark.parametrize("fault", ["SIGSTOP redis", "kill -9 redis, restart"])
async def test_redis_outage_under_traffic(
    stack: Stack,
    fault_servers: Servers,
    session: aiohttp.ClientSession,
    fault: str,
    socket_kind: str,
) -> None:
    gateways, _ = await _deployment(stack)
    traffic = await start_traffic(session, gateways, kind=socket_kind)
    await traffic.wait_acked(150)

    if fault == "SIGSTOP redis":
        os.kill(fault_servers.valkey.pid, signal.SIGSTOP)
        await asyncio.sleep(_OUTAGE_SECONDS)  # the outage itself
        os.kill(fault_servers.valkey.pid, signal.SIGCONT)
    else:
        fault_servers.valkey.kill()
        await asyncio.sleep(_OUTAGE_SECONDS)
        fault_servers.restart_valkey()

    await finish(traffic, stack, fault)
    # The outage was felt: some send was refused or timed out and re-sent.
    assert any(sender.attempts > traffic.messages_per_sender for sender in traffic.senders)


async def test_postgres_stopped_then_started(
    stack: Stack, fault_servers: Servers, session: aiohttp.ClientSession, socket_kind: str
) -> None:
    gateways, _ = await _deployment(stack)
    traffic = await start_traffic(session, gateways, kind=socket_kind)
    await traffic.wait_acked(150)

    fault_servers.postgres.stop()
    acked_before = sum(len(sender.acked) for sender in traffic.senders)
    async with session.get(f"{gateways[0].url}/readyz") as response:
        body = await response.json()
        assert (response.status, body["code"]) == (503, "unavailable")
        assert "postgres" in body["message"]
    async with session.get(f"{gateways[1].url}/api/v1/channels") as response:
        body = await response.json()
        assert (response.status, body["status"], body["code"]) == (503, "error", "unavailable")
    # Sends need only Redis: they keep being acknowledged while PostgreSQL is down.
    await traffic.wait_acked(acked_before + 100)
    fault_servers.restart_postgres()

    await finish(traffic, stack, "stop postgres, restart")


async def test_sigterm_one_gateway_moves_its_clients_to_the_other(
    stack: Stack, session: aiohttp.ClientSession, socket_kind: str
) -> None:
    stack.env["DRAIN_DELAY_SECONDS"] = "3"
    gateways, _ = await _deployment(stack)
    traffic = await start_traffic(session, gateways, kind=socket_kind)
    await traffic.wait_acked(150)

    gateways[0].signal(signal.SIGTERM)

    # Draining: the listener still answers during DRAIN_DELAY_SECONDS, not ready.
    # Polled: the signal reaches the process on its own time, with no event to await.
    async def readyz_status() -> int:
        async with session.get(f"{gateways[0].url}/readyz") as response:
            return response.status

    async with asyncio.timeout(3):
        while await readyz_status() != 503:  # noqa: ASYNC110 - no event for a signal
            await asyncio.sleep(0.02)
    assert gateways[0].wait() == 0

    await finish(traffic, stack, "SIGTERM one of two gateways")
    moved = [member for member in traffic.members if 1012 in member.close_codes]
    assert len(moved) == 2  # the members that started on the drained gateway


_STILL_OPEN = (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.PING)


async def test_client_that_never_reads_is_dropped_without_slowing_the_others(
    stack: Stack, session: aiohttp.ClientSession, socket_kind: str
) -> None:
    stack.env["WS_SEND_QUEUE_SIZE"] = "32"
    stack.env["WS_SOCKET_SEND_BUFFER_BYTES"] = "16384"
    gateways, _ = await _deployment(stack, gateways=1)
    traffic = await start_traffic(
        session,
        gateways,
        members=2,
        senders=1,
        messages=600,
        pause=0,
        content_bytes=2000,
        kind=socket_kind,
    )
    stuck_account = await signup(session, gateways[0].url, "stuck")
    async with session.post(
        f"{gateways[0].url}/api/v1/channels/join",
        json={"channel_id": traffic.channel_id},
        headers={"Authorization": f"Bearer {stuck_account.token}"},
    ) as response:
        assert response.status == 200
    connector = aiohttp.TCPConnector(socket_factory=tiny_receive_buffer)
    async with aiohttp.ClientSession(connector=connector) as stuck_session:
        stuck = await open_socket(
            stuck_session,
            gateways[0].url,
            socket_kind,
            stuck_account,
            traffic.channel_id,
            autoping=False,
        )
        await finish(traffic, stack, "client never reads, 600 x 2 KB flood")

        latencies = sorted(latency for m in traffic.members for latency in m.latencies)
        p99 = latencies[int(len(latencies) * 0.99)]
        print(f"FAULT stuck client: others' p99={p99:.3f} s max={latencies[-1]:.3f} s")
        assert latencies[-1] < 5.0  # generous on a shared 2-core machine; see the benchmark

        # Now read what the stuck client got before the gateway gave up on it.
        received = 0
        async with asyncio.timeout(30):
            while (message := await stuck.receive()).type in _STILL_OPEN:
                received += message.type is aiohttp.WSMsgType.TEXT
        assert received < 600
        assert stuck.close_code in (4408, 1006)  # too slow; 1006 if the abort came first
        print(f"FAULT stuck client: got {received}/600, then {message.type.name}")
