"""Gateways under test: real aiohttp servers on real sockets, sharing the session's
PostgreSQL and Redis."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from shared.local_servers import ServerProcess, free_port, start_valkey
from shared.settings import Settings

MakeGateway = Callable[..., Awaitable[TestClient[Any, Any]]]


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
