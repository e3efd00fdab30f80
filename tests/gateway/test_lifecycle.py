"""A socket's life beyond the happy path: dead peers, draining, a Redis outage."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from gateway.app import drain
from gateway.app_keys import HUB
from shared.local_servers import ServerProcess, start_valkey
from shared.log import request_id_var
from shared.redis_keys import RedisKeys
from tests.gateway.api_client import (
    RECEIVE_TIMEOUT,
    connect,
    error_of,
    eventually,
    expect_refusal,
    receive_until,
    room,
    send_texts,
    subscriber_count,
)
from tests.gateway.conftest import MakeGateway


async def test_dead_peer_is_dropped_by_heartbeat_with_its_subscription(
    make_gateway: MakeGateway, make_settings: Any, redis_url: str
) -> None:
    gateway = await make_gateway(ws_heartbeat_seconds=0.2)
    channel_id, (alice,) = await room(gateway, "alice")
    settings = make_settings()
    topic = RedisKeys(settings.redis_key_prefix, settings.redis_partitions).channel_topic(
        channel_id
    )
    # A peer that never answers pings: autoping off, and nobody reads the socket.
    ws = await connect(gateway, alice, channel_id, autoping=False)
    assert await subscriber_count(redis_url, topic) == 1

    async def dropped() -> bool:
        return await subscriber_count(redis_url, topic) == 0

    await eventually(dropped)
    assert gateway.app[HUB].connection_count == 0
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        while (await ws.receive()).type is WSMsgType.PING:
            pass
    assert ws.closed


async def test_drain_reports_unready_refuses_new_sockets_then_closes_with_1012(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(drain_delay_seconds=1.0)
    channel_id, (alice, bob) = await room(gateway, "alice", "bob")
    ws_alice = await connect(gateway, alice, channel_id)

    draining = asyncio.create_task(drain(gateway.app))
    await eventually(_readyz_is(gateway, 503))
    assert await error_of(await gateway.get("/readyz")) == (503, "unavailable")
    refused = await connect(gateway, bob, channel_id)
    frame, close_code = await expect_refusal(refused)
    assert (frame["code"], close_code) == ("draining", 1012)
    # During the delay the open socket keeps working.
    assert (await send_texts(ws_alice, 1, "still")).acked_seqs == [1]

    async with asyncio.timeout(RECEIVE_TIMEOUT):
        while (message := await ws_alice.receive()).type is not WSMsgType.CLOSE:
            assert message.type is WSMsgType.TEXT
    assert ws_alice.close_code == 1012
    await draining

    async def all_closed() -> bool:
        return gateway.app[HUB].connection_count == 0

    await eventually(all_closed)


async def test_redis_outage_refuses_sends_keeps_sockets_and_resumes(
    make_gateway: MakeGateway, own_valkey: ServerProcess, tmp_path: Path
) -> None:
    url = f"redis://127.0.0.1:{own_valkey.port}/0"
    gateway_a = await make_gateway(redis_url=url, redis_timeout_seconds=0.5)
    gateway_b = await make_gateway(redis_url=url, redis_timeout_seconds=0.5)
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    ws_alice = await connect(gateway_a, alice, channel_id, headers={"X-Request-ID": "alice-ws"})
    ws_bob = await connect(gateway_b, bob, channel_id)
    await send_texts(ws_alice, 2, "before")
    assert [(await receive_until(ws_bob, "message"))["seq"] for _ in range(2)] == [1, 2]

    own_valkey.stop()
    with _request_ids_logged("gateway.sender") as logged:
        await ws_alice.send_str('{"type": "text", "content": "lost?", "client_id": "x-1"}')
        refused = await receive_until(ws_alice, "error")
    assert refused["code"] == "unavailable"
    # The failure is logged under the id of the request that opened the socket.
    assert logged == ["alice-ws"]
    assert not ws_alice.closed
    assert not ws_bob.closed

    restarted = start_valkey(tmp_path / "valkey", own_valkey.port, appendonly=True)
    try:
        await eventually(_readyz_is(gateway_a, 200), within=10)
        await eventually(_readyz_is(gateway_b, 200), within=10)
        # The client re-sends under the same client_id once Redis is back.
        await ws_alice.send_str('{"type": "text", "content": "lost?", "client_id": "x-1"}')
        ack = await receive_until(ws_alice, "ack")
        assert ack["seq"] == 3
        assert (await receive_until(ws_bob, "message"))["seq"] == 3
    finally:
        restarted.stop()


@contextlib.contextmanager
def _request_ids_logged(logger_name: str) -> Iterator[list[str | None]]:
    """The request id in effect for each line `logger_name` logs meanwhile."""
    seen: list[str | None] = []

    def record(_: logging.LogRecord) -> bool:
        seen.append(request_id_var.get())
        return True

    logger = logging.getLogger(logger_name)
    logger.addFilter(record)
    try:
        yield seen
    finally:
        logger.removeFilter(record)


def _readyz_is(gateway: TestClient[Any, Any], status: int) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return (await gateway.get("/readyz")).status == status

    return probe
