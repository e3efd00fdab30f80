"""The send path's pipelined Redis connection, against a real Valkey it may stop."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.pipelined_redis import PipelinedRedis
from shared.local_servers import ServerProcess, start_valkey


async def test_concurrent_commands_get_their_own_replies_in_order(
    own_valkey: ServerProcess,
) -> None:
    redis = PipelinedRedis(f"redis://127.0.0.1:{own_valkey.port}/0", timeout=5)
    try:
        replies = await asyncio.gather(*(redis.call("INCR", "counter") for _ in range(500)))
        assert replies == list(range(1, 501))
        assert await redis.call("GET", "counter") == b"500"
    finally:
        redis.close()


async def test_error_reply_fails_only_its_own_call(own_valkey: ServerProcess) -> None:
    redis = PipelinedRedis(f"redis://127.0.0.1:{own_valkey.port}/3", timeout=5)
    try:
        await redis.call("SET", "text", "x")
        bad, good = await asyncio.gather(
            redis.call("INCR", "text"), redis.call("PING"), return_exceptions=True
        )
        assert isinstance(bad, ResponseError)
        assert good == b"PONG"
        # db 3 was selected at connect: the key is not in db 0.
        assert await redis.call("EXISTS", "text") == 1
    finally:
        redis.close()


async def test_lost_connection_fails_waiting_calls_then_reconnects(
    own_valkey: ServerProcess, tmp_path: Path
) -> None:
    redis = PipelinedRedis(f"redis://127.0.0.1:{own_valkey.port}/0", timeout=5)
    try:
        assert await redis.call("PING") == b"PONG"
        own_valkey.stop()
        with pytest.raises(RedisConnectionError):
            await redis.call("PING")
        restarted = start_valkey(tmp_path / "valkey", own_valkey.port, appendonly=True)
        try:
            assert await redis.call("PING") == b"PONG"
        finally:
            restarted.stop()
    finally:
        redis.close()


async def test_unanswered_calls_time_out_together_then_a_fresh_connection_serves(
    own_valkey: ServerProcess,
) -> None:
    redis = PipelinedRedis(f"redis://127.0.0.1:{own_valkey.port}/0", timeout=0.3)
    try:
        assert await redis.call("INCR", "n") == 1
        os.kill(own_valkey.pid, signal.SIGSTOP)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            first = asyncio.ensure_future(redis.call("INCR", "n"))
            await asyncio.sleep(0.1)  # a later call, inside the first one's window
            replies = await asyncio.gather(first, redis.call("INCR", "n"), return_exceptions=True)
            waited = loop.time() - started
        finally:
            os.kill(own_valkey.pid, signal.SIGCONT)
        assert all(isinstance(reply, RedisTimeoutError) for reply in replies), replies
        assert 0.3 <= waited < 2.0
        # The stopped connection's commands still ran once Redis resumed; a new
        # connection sees their effect and none of their replies.
        assert await redis.call("GET", "n") in (b"1", b"2", b"3")
        assert await redis.call("PING") == b"PONG"
    finally:
        redis.close()
