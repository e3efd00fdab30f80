"""Scrolling back through a channel's history in the web client, page by page."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
from playwright.async_api import expect

from tests.faults.stack import Service
from tests.webapp.conftest import Pages, WebStack
from tests.webapp.people import create_channel, shown, sign_up

pytestmark = pytest.mark.timeout(90)

_COUNT = 120  # more than two pages of 50
_PERSIST_DEADLINE_SECONDS = 20.0


async def _send_all(web_stack: WebStack, token: str, channel_id: int, texts: list[str]) -> None:
    url = f"ws://127.0.0.1:{web_stack.gateways[0].port}/api/v1/ws"
    origin = web_stack.balancers[0].origin
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, protocols=("bearer", token), headers={"Origin": origin}) as ws,
    ):
        await ws.send_json({"type": "subscribe", "channel_id": channel_id})
        for index, text in enumerate(texts):
            body = {"type": "text", "content": text}
            await ws.send_json(
                {"type": "send", "channel_id": channel_id, "body": body, "client_id": f"h-{index}"}
            )
        acks = 0
        async with asyncio.timeout(_PERSIST_DEADLINE_SECONDS):
            while acks < len(texts):
                frame = orjson.loads((await ws.receive()).data)
                acks += frame["type"] == "ack"


async def _persisted(gateway: Service, token: str, channel_id: int, seq: int) -> None:
    """Wait until the worker has stored message `seq` (history reads PostgreSQL only)."""
    url = f"{gateway.url}/api/v1/channels/{channel_id}/messages?after_seq={seq - 1}"
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with asyncio.timeout(_PERSIST_DEADLINE_SECONDS):
            while True:
                async with session.get(url) as response:
                    if (await response.json())["data"]["messages"]:
                        return
                await asyncio.sleep(0.1)  # the worker writes batches and signals no one


async def test_scrolling_up_loads_every_older_page_in_order(
    web_stack: WebStack, pages: Pages
) -> None:
    page = await pages.open(web_stack.app_url(0))
    await sign_up(page, "alice")
    await create_channel(page, "busy")
    token = await page.evaluate("sessionStorage.getItem('chat-group.token')")
    texts = [f"message {n}" for n in range(1, _COUNT + 1)]
    gateway = web_stack.gateways[0]
    await _send_all(web_stack, token, 1, texts)
    await _persisted(gateway, token, 1, _COUNT)
    await expect(shown(page)).to_have_count(_COUNT)  # live, while the page was open
    await page.reload()
    await expect(shown(page)).to_have_count(50)
    await expect(shown(page).last).to_have_text(texts[-1])
    log = page.get_by_role("log")
    for count in (100, _COUNT):
        await log.evaluate("element => { element.scrollTop = 0; }")
        await expect(shown(page)).to_have_count(count)
    await expect(page.get_by_text("This is the beginning of # busy.")).to_be_visible()
    await expect(shown(page)).to_have_text(texts)
