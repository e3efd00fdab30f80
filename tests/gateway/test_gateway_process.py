"""A gateway as its own OS process (`python -m gateway`, as deployed): what only a
real process shows, its memory after a burst of log-ins and what it writes to its log."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.faults.stack import ORIGIN, Service, Stack
from tests.gateway.conftest import MakeStack

# What a burst of log-ins may leave a gateway larger by, measured after it (the
# issue's bound). Without the bounded hashing this was ~115 MB for 48 log-ins.
_RSS_GROWTH_BOUND_MB = 64
_LOGIN_STORM = 200
_STORM_DEADLINE_SECONDS = 60.0
_PASSWORD = "correct horse"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def stack(make_stack: MakeStack) -> Stack:
    # The failed log-in limits count log-ins in flight; a storm from one address
    # would hit them, and they are not what these tests are about.
    return await make_stack(
        LOG_LEVEL="DEBUG",
        LOG_JSON="false",
        LOGIN_MAX_FAILURES="0",
        LOGIN_MAX_FAILURES_PER_IP="0",
    )


def _rss_mb(service: Service) -> float:
    for line in Path(f"/proc/{service.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/<pid>/status")


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, str]) -> str:
    async with session.post(url, json=body) as response:
        payload = await response.json()
        assert response.status in (200, 201), payload
        token: str = payload["data"]
        return token


async def _signup(session: aiohttp.ClientSession, gateway: Service, username: str) -> str:
    body = {
        "name": username.title(),
        "username": username,
        "email": f"{username}@example.com",
        "password": _PASSWORD,
    }
    return await _post(session, f"{gateway.url}/api/v1/auth/signup", body)


async def _login(session: aiohttp.ClientSession, gateway: Service, identity: str) -> str:
    body = {"identity": identity, "password": _PASSWORD}
    return await _post(session, f"{gateway.url}/api/v1/auth/login", body)


async def test_a_storm_of_logins_leaves_the_gateway_within_64_mb_of_its_idle_rss(
    stack: Stack,
) -> None:
    """Regression: argon2id's 19 MiB per hash ran on asyncio's default pool, as many
    at once as it had threads, and glibc kept every thread's 19 MiB afterwards."""
    gateway = await stack.start_gateway()
    connector = aiohttp.TCPConnector(limit=_LOGIN_STORM)
    async with aiohttp.ClientSession(connector=connector) as session:
        names = [f"user{index}" for index in range(4)]
        for name in names:
            await _signup(session, gateway, name)
        await _login(session, gateway, names[0])  # everything a log-in loads is loaded
        idle = _rss_mb(gateway)
        async with asyncio.timeout(_STORM_DEADLINE_SECONDS):
            tokens = await asyncio.gather(
                *(_login(session, gateway, names[i % len(names)]) for i in range(_LOGIN_STORM))
            )
        after = _rss_mb(gateway)
    assert len(set(tokens)) >= len(names)
    print(f"RSS idle {idle:.1f} MB, after {_LOGIN_STORM} concurrent log-ins {after:.1f} MB")
    assert after - idle <= _RSS_GROWTH_BOUND_MB, (idle, after)


async def test_tokens_and_tickets_never_reach_the_gateway_log(stack: Stack) -> None:
    gateway = await stack.start_gateway()
    socket_url = f"ws://127.0.0.1:{gateway.port}/api/v1/chat/1"
    async with aiohttp.ClientSession(headers={"Origin": ORIGIN}) as session:
        token = await _signup(session, gateway, "alice")
        auth = {"Authorization": f"Bearer {token}"}
        async with session.post(
            f"{gateway.url}/api/v1/channels/new", json={"name": "room"}, headers=auth
        ) as response:
            assert response.status == 201
        async with session.post(f"{gateway.url}/api/v1/auth/ws-ticket", headers=auth) as response:
            ticket = (await response.json())["data"]["ticket"]
        secrets = [token, ticket]
        for url, protocols in [
            (f"{socket_url}?token={token}", ()),
            (f"{socket_url}?ticket={ticket}", ()),
            (f"{socket_url}?ticket={ticket}", ()),  # used up: refused
            (socket_url, ("bearer", token)),
            (f"{socket_url}?token={token}x", ()),  # refused
        ]:
            async with session.ws_connect(url, protocols=protocols) as ws:
                await ws.close()
        async with session.post(f"{gateway.url}/api/v1/auth/logout", headers=auth) as response:
            assert response.status == 200
        async with session.ws_connect(f"{socket_url}?token={token}") as ws:  # revoked
            await ws.receive(timeout=5)
    gateway.signal(signal.SIGTERM)
    gateway.wait()
    log = gateway.log_path.read_text(errors="replace")
    assert "gateway listening" in log  # the log is the process's, at DEBUG
    for secret in secrets:
        assert secret not in log
        assert secret[:24] not in log
