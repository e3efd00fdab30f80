"""Gateways under test: real aiohttp servers on real sockets, sharing the session's
PostgreSQL and Redis."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app
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
async def gateway(make_gateway: MakeGateway) -> TestClient[Any, Any]:
    return await make_gateway()
