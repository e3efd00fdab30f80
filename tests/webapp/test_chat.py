"""Two people chatting in the web client, through two gateways behind a load balancer."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Page, expect

from gateway.api.webapp import CONTENT_SECURITY_POLICY
from shared.local_servers import free_port
from tests.gateway.conftest import MakeStack
from tests.webapp.conftest import Pages, WebStack
from tests.webapp.nginx import start_nginx
from tests.webapp.people import (
    channel_button,
    connection_banner,
    create_channel,
    join_channel,
    log_in,
    open_channel,
    pending,
    send,
    shown,
    sign_up,
)

pytestmark = pytest.mark.timeout(120)

XSS = "<img src=x onerror=alert(1)>"


async def _sockets_on(gateway_url: str) -> float:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{gateway_url}/metrics") as response,
    ):
        for line in (await response.text()).splitlines():
            if line.startswith("chat_connections "):
                return float(line.split()[1])
    raise AssertionError("no chat_connections gauge")


async def _two_people_in(web_stack: WebStack, pages: Pages, *channels: str) -> tuple[Page, Page]:
    """Alice (through the balancer preferring gateway 1) creates the channels; Bob
    (preferring gateway 2) joins them."""
    alice = await pages.open(web_stack.app_url(0))
    bob = await pages.open(web_stack.app_url(1))
    await sign_up(alice, "alice")
    await sign_up(bob, "bob")
    for channel in channels:
        await create_channel(alice, channel)
        await join_channel(bob, channel)
    return alice, bob


async def test_two_people_chat_through_two_gateways(web_stack: WebStack, pages: Pages) -> None:
    alice, bob = await _two_people_in(web_stack, pages, "general")
    for gateway in web_stack.gateways:
        assert await _sockets_on(gateway.url) == 1  # one person's socket on each gateway
    await send(alice, "hello bob")
    await expect(shown(bob)).to_have_text(["hello bob"])
    await send(bob, "hi alice")
    for page in (alice, bob):
        await expect(shown(page)).to_have_text(["hello bob", "hi alice"])
        await expect(pending(page)).to_have_count(0)
    assert pages.dialogs == []


async def test_a_gateway_stopped_mid_conversation_loses_and_repeats_nothing(
    web_stack: WebStack, pages: Pages
) -> None:
    alice, bob = await _two_people_in(web_stack, pages, "general")
    await send(alice, "one")
    await send(bob, "two")
    await expect(shown(alice)).to_have_text(["one", "two"])
    # Alice's gateway dies, and for a while the balancer has nowhere to send her.
    lost, kept = web_stack.gateways
    web_stack.balancers[0].backends = []
    lost.signal(signal.SIGKILL)
    lost.wait()
    await expect(connection_banner(alice)).to_have_text(re.compile(r"Reconnecting in \d+ s"))
    await send(alice, "three, sent while disconnected")
    await expect(pending(alice)).to_have_text([re.compile("Sending")])
    await send(bob, "four")
    await expect(shown(bob)).to_have_text(["one", "two", "four"])
    assert kept.port is not None
    web_stack.balancers[0].backends = [kept.port]
    await expect(connection_banner(alice)).to_be_hidden(timeout=20_000)
    expected = ["one", "two", "four", "three, sent while disconnected"]
    for page in (alice, bob):
        await expect(shown(page)).to_have_text(expected)
        await expect(pending(page)).to_have_count(0)
    await send(bob, "five")
    for page in (alice, bob):
        await expect(shown(page)).to_have_text([*expected, "five"])


async def test_a_message_whose_ack_was_lost_is_stored_and_shown_once(
    web_stack: WebStack, pages: Pages
) -> None:
    """The re-send after a reconnect carries the same client_id, so the server answers it
    with the original's ack instead of storing it again; the replay shows it once."""
    alice, bob = await _two_people_in(web_stack, pages, "general")
    await send(bob, "before")
    await expect(shown(alice)).to_have_text(["before"])
    web_stack.balancers[0].lose_replies = True
    await send(alice, "stored, ack lost")
    await expect(shown(bob)).to_have_text(["before", "stored, ack lost"])  # it was stored
    await expect(pending(alice)).to_have_text([re.compile("Sending")])  # but Alice never heard
    web_stack.balancers[0].drop_connections()
    web_stack.balancers[0].lose_replies = False
    await expect(pending(alice)).to_have_count(0, timeout=20_000)
    await send(bob, "after")
    for page in (alice, bob):
        await expect(shown(page)).to_have_text(["before", "stored, ack lost", "after"])


async def test_markup_in_messages_and_names_shows_as_text(
    web_stack: WebStack, pages: Pages
) -> None:
    alice = await pages.open(web_stack.app_url(0))
    bob = await pages.open(web_stack.app_url(1))
    await sign_up(alice, "alice", name=XSS)
    await sign_up(bob, "bob")
    await create_channel(alice, XSS)
    await join_channel(bob, XSS)
    await send(alice, XSS)
    await expect(shown(bob)).to_have_text([XSS])
    log = bob.get_by_role("log")
    await expect(log.get_by_text(XSS, exact=True)).to_have_count(2)  # the author and the text
    # Quoted in a reply, and in the thread, it is text too.
    await log.get_by_role("button", name="Message actions").click()
    await log.get_by_role("button", name="Reply", exact=True).click()
    await send(bob, "a reply")
    await expect(shown(alice)).to_have_text([XSS, "a reply"])
    await expect(alice.get_by_text(f"↪ {XSS}: {XSS}", exact=True)).to_be_visible()
    await alice.get_by_role("button", name="1 reply").click()
    thread = alice.get_by_role("dialog", name="Thread")
    await expect(thread.get_by_text(XSS, exact=True)).to_have_count(2)
    for page in (alice, bob):
        assert await page.locator("img").count() == 0
    assert pages.dialogs == []


async def test_unread_counts_follow_the_other_persons_messages(
    web_stack: WebStack, pages: Pages
) -> None:
    alice, bob = await _two_people_in(web_stack, pages, "general", "random")
    await open_channel(bob, "general")
    await open_channel(alice, "random")
    await send(alice, "in random 1")
    await send(alice, "in random 2")
    await expect(channel_button(bob, "random")).to_have_accessible_name("# random 2 unread")
    first = bob.get_by_role("navigation", name="Channels").get_by_role("button").first
    await expect(first).to_have_accessible_name(re.compile(r"^# random"))  # most recent first
    # A reaction takes a seq too, but is not an unread message.
    log = alice.get_by_role("log")
    first_message = log.get_by_role("listitem").filter(has_text="in random 1")
    await first_message.get_by_role("button", name="Message actions").click()
    await first_message.get_by_role("button", name="React 👍").click()
    await expect(first_message.get_by_role("button", name="👍 1")).to_be_visible()
    await open_channel(alice, "general")
    await send(alice, "in general")
    await expect(shown(bob)).to_have_text(["in general"])
    await expect(channel_button(bob, "general")).to_have_accessible_name("# general")
    await expect(channel_button(bob, "random")).to_have_accessible_name("# random 2 unread")
    await open_channel(bob, "random")
    await expect(shown(bob)).to_have_text(["in random 1", "in random 2"])
    await expect(channel_button(bob, "random")).to_have_accessible_name("# random")


async def test_who_is_online_and_who_is_typing(web_stack: WebStack, pages: Pages) -> None:
    alice, bob = await _two_people_in(web_stack, pages, "general")
    await expect(bob.get_by_role("button", name="2 online")).to_be_visible()
    composer = alice.get_by_role("textbox", name="Message # general")
    await composer.press_sequentially("hel")
    await expect(bob.get_by_text("Alice is typing…")).to_be_visible()
    await composer.press("Shift+Enter")  # a new line, not a send
    await composer.press_sequentially("lo")
    await composer.press("Enter")
    await expect(shown(bob)).to_have_text(["hel\nlo"])
    await expect(bob.get_by_text("Alice is typing…")).to_be_hidden()  # her message ends it
    await alice.get_by_role("button", name="Log out").click()
    await expect(bob.get_by_role("button", name="1 online")).to_be_visible()
    await log_in(alice, "alice")  # the same tab, a new session
    await expect(shown(alice)).to_have_text(["hel\nlo"])
    await expect(bob.get_by_role("button", name="2 online")).to_be_visible()


async def test_two_people_chat_through_the_shipped_nginx(
    make_stack: MakeStack, pages: Pages, tmp_path: Path
) -> None:
    """deploy/nginx.conf in front of two gateways: the page, its headers and the socket
    upgrade pass through, and the access log holds no token."""
    port = free_port()
    stack = await make_stack(ALLOWED_ORIGINS=f"http://127.0.0.1:{port}")
    gateways = [await stack.start_gateway(), await stack.start_gateway()]
    stack.start_worker()
    nginx = await start_nginx(tmp_path / "nginx", [g.port for g in gateways if g.port], port)
    try:
        alice = await pages.open(f"{nginx.origin}/app/")
        bob = await pages.open(f"{nginx.origin}/app/")
        response = await alice.request.get(f"{nginx.origin}/app/")
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        await sign_up(alice, "alice")
        await sign_up(bob, "bob")
        await create_channel(alice, "general")
        await join_channel(bob, "general")
        await send(alice, "through nginx")
        await send(bob, "both ways")
        for page in (alice, bob):
            await expect(shown(page)).to_have_text(["through nginx", "both ways"])
        token = await alice.evaluate("sessionStorage.getItem('chat-group.token')")
        for page in (alice, bob):
            await page.goto("about:blank")  # nginx logs a socket once it has closed
    finally:
        nginx.stop()
    log = nginx.access_log.read_text()
    assert 'GET /api/v1/ws HTTP/1.1" 101' in log
    assert token not in log


async def test_a_page_whose_origin_is_not_allowed_says_so(
    make_stack: MakeStack, pages: Pages
) -> None:
    """A deployment whose ALLOWED_ORIGINS misses the page's own address: the socket is
    refused (4403) and the page says why instead of reconnecting forever."""
    stack = await make_stack()  # ALLOWED_ORIGINS: http://allowed.test only
    gateway = await stack.start_gateway()
    page = await pages.open(f"{gateway.url}/app/")
    await sign_up(page, "alice")
    await expect(connection_banner(page)).to_have_text(re.compile("ALLOWED_ORIGINS"))
