"""Servers shared by the fault tests of one module, and a fresh deployment per test."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.faults.chat_clients import SOCKET_KINDS
from tests.faults.stack import Servers, Stack


@pytest.fixture(scope="module")
def fault_servers() -> Iterator[Servers]:
    # Under root PostgreSQL runs as `nobody`, who needs to enter the folder.
    root = Path(tempfile.mkdtemp(prefix="chat-faults-"))
    root.chmod(0o755)
    servers = Servers.start(root)
    try:
        yield servers
    finally:
        servers.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def stack(fault_servers: Servers, tmp_path: Path) -> AsyncIterator[Stack]:
    fault_servers.ensure_running()
    deployment = await Stack.create(fault_servers, tmp_path)
    try:
        yield deployment
    finally:
        deployment.stop()
        fault_servers.ensure_running()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture(params=SOCKET_KINDS)
def socket_kind(request: pytest.FixtureRequest) -> str:
    """Each fault test runs over the per-channel chat socket and the multiplexed one."""
    kind: str = request.param
    return kind
