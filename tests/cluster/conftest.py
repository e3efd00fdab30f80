"""Cluster-mode fixtures: a real 3-master cluster per module, and gateways and
settings pointed at it with `REDIS_CLUSTER` on."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from shared.local_cluster import ValkeyCluster
from shared.settings import Settings
from tests.cluster.servers import running_cluster

MakeGateway = Callable[..., Awaitable[TestClient[Any, Any]]]
SettingsFactory = Callable[..., Settings]


@pytest.fixture(scope="module")
def valkey_cluster() -> Iterator[ValkeyCluster]:
    yield from running_cluster()


@pytest.fixture
def cluster_settings(
    make_settings: SettingsFactory, valkey_cluster: ValkeyCluster
) -> SettingsFactory:
    """Test settings in cluster mode; every call within one test shares one key prefix."""

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {"redis_url": valkey_cluster.url, "redis_cluster": True}
        return make_settings(**{**values, **overrides})

    return make


@pytest.fixture
def make_gateway(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    cluster_settings: SettingsFactory,
) -> MakeGateway:
    """Start an in-process gateway in cluster mode; all of one test share a namespace."""

    async def start(**overrides: Any) -> TestClient[Any, Any]:
        return await aiohttp_client(create_app(cluster_settings(**overrides)))

    return start
