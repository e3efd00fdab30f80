"""Two people chatting in the web client, through two gateways behind a load balancer."""

from __future__ import annotations

import signal

import aiohttp
import pytest
from playwright.async_api import expect

from tests.webapp.conftest import Pages, WebStack
from tests.webapp.people import channel_button, create_channel, join_channel, open_channel, send, shown, sign_up

pytestmark = pytest.mark.timeout(120)


async def _sockets_on(gateway_url: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{gateway_url}/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith("chat_connections "):
                return float(line.split()[1])
    raise AssertionError("no chat_connections gauge")


async def test_two_people_chat_through_two_gateways(web_stack: WebStack, pages: Pages) -> None:
    alice = await pages.open(web_stack.app_url(0))
    bob = await pages.open(web_stack.app_url(1))
    await sign_up(alice, "alice")
    await sign_up(bob, "bob")
    await create_channel(alice, "general")
    await join_channel(bob, "general")
    for gateway in web_stack.gateways:
        assert await _sockets_on(gateway.url) == 1  # one person's socket on each gateway
    await send(alice, "hello bob")
    await expect(shown(bob)).to_have_text(["hello bob"])
    await send(bob, "hi alice")
    for page in (alice, bob):
        await expect(shown(page)).to_have_text(["hello bob", "hi alice"])
    assert pages.dialogs == []
