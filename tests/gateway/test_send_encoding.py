"""The send script's command, encoded from parts built once per channel and socket,
is byte for byte the command the slow path builds from plain keys and arguments."""

from __future__ import annotations

from typing import Any

import asyncpg
import hiredis
import pytest
from redis.asyncio import Redis

from gateway.pipelined_redis import PipelinedRedis
from gateway.sender import Sender
from gateway.seq_floors import SeqFloors
from shared.redis_keys import RedisKeys
from shared.scripts import register_scripts


@pytest.mark.parametrize(
    ("client_id", "body"),
    [
        ("c-1", b'{"type":"text","content":"Hello"}'),
        (None, b'{"type":"text","content":"h\xc3\xa9llo\\r\\n $3 *2 \xf0\x9f\x98\x80"}'),
        ("x" * 64, b'{"type":"file","file_id":"f","size_in_bytes":0}'),
    ],
)
async def test_encoded_send_equals_the_packed_command(
    make_settings: Any,
    redis_url: str,
    pg_pool: asyncpg.Pool[asyncpg.Record],
    client_id: str | None,
    body: bytes,
) -> None:
    settings = make_settings(ws_message_rate=20, redis_partitions=16)
    redis = Redis.from_url(redis_url)
    scripts = register_scripts(redis)
    keys = RedisKeys(settings.redis_key_prefix, settings.redis_partitions)
    seq_floors = SeqFloors(settings, redis, scripts, pg_pool, keys)
    sends = PipelinedRedis(redis_url, timeout=5)
    sender = Sender(settings, sends, scripts, keys, seq_floors)
    try:
        route = sender.route(channel_id=123_456, user_id=987)
        pending = sender.start(route, client_id=client_id, body=body, tail=b'"tail":1}')
        if pending.first is not None:
            pending.first.cancel()  # no connection was up; nothing was sent

        keys, args = pending.script_keys(), pending.script_args()
        expected = hiredis.pack_command(
            ("EVALSHA", scripts.send.sha, len(keys), *keys, *args)  # type: ignore[arg-type]
        )
        assert pending.encoded_evalsha() == expected
        assert keys[-1].endswith(f":dedupe:123456:987:{client_id or '-'}")
        # The user's and the message's own, the channel's floor (none known here), and
        # the target (none: not a reply).
        assert args[-7:] == [987, "message", client_id or "", body, b'"tail":1}', 0, ""]
    finally:
        sends.close()
        await seq_floors.aclose()
        await redis.aclose()
