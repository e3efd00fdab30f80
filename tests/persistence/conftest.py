"""Every worker test runs twice: against one Valkey server and against a 3-master cluster.

The worker has one code path for both (one consumer loop per partition, each
reading its own stream), so the same guarantees are checked on both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from shared.local_cluster import ValkeyCluster
from shared.redis_client import RedisClient
from shared.settings import Settings
from tests.cluster.servers import running_cluster

SettingsFactory = Callable[..., Settings]


@dataclass(frozen=True)
class Backend:
    url: str
    cluster: bool


@pytest.fixture(scope="module")
def valkey_cluster() -> Iterator[ValkeyCluster]:
    yield from running_cluster()


@pytest.fixture(params=["single", "cluster"])
def backend(request: pytest.FixtureRequest, redis_url: str) -> Backend:
    if request.param == "cluster":
        cluster: ValkeyCluster = request.getfixturevalue("valkey_cluster")
        return Backend(cluster.url, cluster=True)
    return Backend(redis_url, cluster=False)


@pytest.fixture
def make_settings(make_settings: SettingsFactory, backend: Backend) -> SettingsFactory:
    """The suite's settings factory, pointed at this test's backend."""

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {"redis_url": backend.url, "redis_cluster": backend.cluster}
        return make_settings(**{**values, **overrides})

    return make


@pytest.fixture
async def redis(backend: Backend) -> AsyncIterator[RedisClient]:
    client: RedisClient = (
        RedisCluster.from_url(backend.url)
        if backend.cluster
        else aioredis.Redis.from_url(backend.url)
    )
    yield client
    await client.aclose()
