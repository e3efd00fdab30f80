"""Gateways under test: real aiohttp servers on real sockets, sharing the session's
PostgreSQL and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from shared.local_servers import ServerProcess, free_port, start_valkey
from shared.settings import Settings
from tests.faults.stack import Servers, Stack

MakeGateway = Callable[..., Awaitable[TestClient[Any, Any]]]
MakeStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
def make_gateway(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    make_settings: Callable[..., Settings],
) -> MakeGateway:
    """Start a gateway; every gateway of one test shares one Redis namespace."""

    async def start(**overrides: Any) -> TestClient[Any, Any]:
        return await aiohttp_client(create_app(make_settings(**overrides)))

    return start


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[ServerProcess]:
    """A Valkey of this test's own, which it may stop and restart (AOF keeps the data)."""
    server = start_valkey(tmp_path / "valkey", free_port(), appendonly=True)
    yield server
    server.stop()


@pytest.fixture
async def gateway(make_gateway: MakeGateway) -> TestClient[Any, Any]:
    return await make_gateway()


@pytest.fixture
async def make_stack(
    servers_dir: Path, postgres_server: ServerProcess, redis_server: ServerProcess, tmp_path: Path
) -> AsyncIterator[MakeStack]:
    """Deployments of `python -m gateway` processes on the session's servers (a database
    of their own each); keyword arguments are environment variables. Stopped at the end."""
    made: list[Stack] = []

    async def make(**settings: str) -> Stack:
        servers = Servers(servers_dir, postgres_server, redis_server)
        stack = await Stack.create(servers, tmp_path, **settings)
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.stop()
