"""Imported message ids: the send script's layout, in created_at order, never a live one."""

from __future__ import annotations

from typing import Any

import redis.asyncio as redis

from shared.go_import import redis_state
from shared.go_import.ids import IdAllocator, compose_id
from shared.go_import.report import IdStats
from shared.redis_keys import RedisKeys
from shared.scripts import register_import_scripts
from shared.settings import Settings
from shared.wire import ID_EPOCH_MS, created_ms_of, frame_id
from tests.gateway.api_client import connect, create_channel, receive_each, signup
from tests.gateway.conftest import MakeGateway

T = 1_735_725_600_000  # 2025-01-01 10:00 UTC, in ms
FAR = 2**62  # a live clock far ahead: nothing is hot


def _allocator(partitions: int = 16, floor: int = FAR) -> IdAllocator:
    return IdAllocator(partitions, {}, dict.fromkeys(range(partitions), floor), IdStats())


def test_an_id_is_the_millisecond_partition_and_counter_of_the_send_script() -> None:
    allocator = _allocator()
    message_id = allocator.allocate(5, T)
    assert message_id == ((T - ID_EPOCH_MS) << 12) | (5 << 5)
    assert message_id is not None
    # The gateway reads created_at back from an id the same way.
    assert created_ms_of(frame_id(b'{"type":"message","id":%d,' % message_id)) == T


def test_ids_grow_with_created_at_and_a_full_millisecond_borrows_the_next() -> None:
    allocator = _allocator()
    ids = [allocator.allocate(3, T) for _ in range(40)] + [allocator.allocate(3, T + 1)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 41
    assert ids[31] == compose_id(T, 3, 31)
    assert ids[32] == compose_id(T + 1, 3, 0)  # the 33rd of one ms moves on
    assert ids[40] == compose_id(T + 1, 3, 8)  # and the next ms continues after them
    assert allocator.stats.moved == 8


def test_messages_before_the_id_epoch_are_packed_in_order_after_it() -> None:
    allocator = _allocator()
    old = [allocator.allocate(0, ms) for ms in (0, 1_000, ID_EPOCH_MS - 1)]
    assert old == [compose_id(ID_EPOCH_MS, 0, n) for n in range(3)]
    assert allocator.stats.before_epoch == 3
    assert allocator.allocate(0, ID_EPOCH_MS + 5) == compose_id(ID_EPOCH_MS + 5, 0, 0)


def test_occupied_ids_are_stepped_over() -> None:
    allocator = _allocator()
    allocator.occupied = {compose_id(T, 2, 0), compose_id(T, 2, 1)}
    assert allocator.allocate(2, T) == compose_id(T, 2, 2)
    assert allocator.stats.skipped == 2


def test_an_id_at_the_live_clock_is_left_to_it_and_so_is_every_later_one() -> None:
    allocator = _allocator(floor=T + 1)
    assert [allocator.allocate(4, T) for _ in range(32)] == [compose_id(T, 4, n) for n in range(32)]
    assert allocator.allocate(4, T) is None  # the 33rd of ms T would take ms T + 1
    assert allocator.allocate(4, T + 1) is None
    claimed = allocator.claimed(4, T + 7, 30, 3)
    assert claimed == [compose_id(T + 7, 4, 30), compose_id(T + 7, 4, 31), compose_id(T + 8, 4, 0)]
    assert allocator.state()[4] == (T + 8, 0)


def test_state_round_trips_so_a_resumed_run_continues() -> None:
    first = _allocator()
    for _ in range(5):
        first.allocate(1, T)
    second = IdAllocator(16, first.state(), dict.fromkeys(range(16), FAR), IdStats())
    assert second.allocate(1, T) == compose_id(T, 1, 5)


async def test_ids_taken_from_the_live_clock_stay_below_the_next_live_send(
    make_gateway: MakeGateway, make_settings: Any, redis_url: str
) -> None:
    gateway = await make_gateway()
    zed = await signup(gateway, "zed")
    channel_id = await create_channel(gateway, zed, "room")  # partition 1
    ws = await connect(gateway, zed, channel_id)
    await ws.send_json({"type": "text", "content": "before"})
    before, _ = await receive_each(ws, "ack", "message")
    settings: Settings = make_settings()
    keys = RedisKeys(settings.redis_key_prefix, settings.redis_partitions)
    client = redis.Redis.from_url(redis_url)
    try:
        scripts = register_import_scripts(client)
        floors = await redis_state.live_floors(client, scripts, keys)
        first_ms, first_counter = await redis_state.take_ids(scripts, keys, 1, 100)
    finally:
        await client.aclose()
    assert floors[1] >= (before["id"] >> 12) + ID_EPOCH_MS
    taken = _allocator().claimed(1, first_ms, first_counter, 100)
    await ws.send_json({"type": "text", "content": "after"})
    after, _ = await receive_each(ws, "ack", "message")
    assert before["id"] < min(taken)
    assert max(taken) < after["id"]
    assert len(set(taken)) == 100
