"""The pub/sub link's own connection handling, against a real Valkey it may stop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest

from gateway.subscriber import Subscriber
from shared.local_servers import ServerProcess
from tests.gateway.api_client import eventually


async def test_a_login_that_times_out_is_retried_without_a_callback_error(
    own_valkey: ServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """A paused server takes the TCP connection but never answers AUTH: the login
    times out and the link reconnects. The cancelled login must not break the
    callback that sees the connection go (it used to set a result on it)."""
    caplog.set_level(logging.DEBUG)
    subscriber = Subscriber(
        f"redis://:secret@127.0.0.1:{own_valkey.port}/0",
        lambda _topic, _payload: None,
        lambda _topics: None,
        timeout=0.2,
        sharded=False,
    )
    os.kill(own_valkey.pid, signal.SIGSTOP)
    running = asyncio.create_task(subscriber.run())
    try:

        async def lost_twice() -> bool:
            lost = [r for r in caplog.records if r.getMessage() == "pub/sub connection lost"]
            return len(lost) >= 2

        await eventually(lost_twice)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        os.kill(own_valkey.pid, signal.SIGCONT)
        await subscriber.aclose()

    assert not subscriber.connected.is_set()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
