"""The gateway's WebSocket layer against the Autobahn TestSuite's own cases.

`kosoku` runs Autobahn's case files (fuzzingclient mode) against the echo
harness, which upgrades with the gateway's `Sockets`. Sections 1-7 and 10 are
the protocol: framing, pings, reserved bits, opcodes, fragmentation, UTF-8
and the closing handshake. Section 9 (performance), 12 and 13 (compression,
which the layer does not offer) stay out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import kosoku
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from shared.settings import Settings
from tests.gateway.echo_websocket import echo_app

_SECTIONS = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*"]
# Cases run side by side: several wait a second for a close that a failing
# server would never send, and one at a time the run would take minutes.
_CONCURRENCY = 16


@pytest.mark.timeout(180)
async def test_every_protocol_case_passes(
    aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
    make_settings: Callable[..., Settings],
) -> None:
    server = await aiohttp_server(echo_app(make_settings()))
    url = f"ws://{server.host}:{server.port}/"
    try:
        results: list[Any] = await kosoku.run_fuzzingclient(
            url, _SECTIONS, concurrency=_CONCURRENCY
        )
    except kosoku.FailureError as failure:
        results = failure.results
    failed = [
        f"{result.case_id}: {result.behavior.value}/{result.behavior_close.value}"
        f" ({result.description}) {result.result} {result.result_close}"
        for result in results
        if not result.passed
    ]
    assert len(results) == 247, "the selection ran whole"
    assert not failed, "\n".join(failed)
