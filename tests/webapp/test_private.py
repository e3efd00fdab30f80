"""Private channels, invitations, direct messages and moderation in the web client, with
each person's page preferring another gateway."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Page, expect

from tests.webapp.conftest import Pages, WebStack
from tests.webapp.people import (
    channel_button,
    create_channel,
    join_channel,
    pending,
    send,
    shown,
    sign_up,
)

pytestmark = pytest.mark.timeout(120)

# What a page reads GET /me/invitations and /me/channels every (the app's default is
# 30 s): invitations and direct messages started by others reach nobody's socket.
_REFRESH_MS = 300


async def _open(pages: Pages, web_stack: WebStack, balancer: int, username: str) -> Page:
    page = await pages.open(web_stack.app_url(balancer))
    await page.evaluate(
        f"import('./js/store.js').then((m) => {{ m.refresh.intervalMs = {_REFRESH_MS}; }})"
    )
    await sign_up(page, username)
    return page


async def _two_in_general(web_stack: WebStack, pages: Pages) -> tuple[Page, Page]:
    alice = await _open(pages, web_stack, 0, "alice")
    bob = await _open(pages, web_stack, 1, "bob")
    await create_channel(alice, "general")
    await join_channel(bob, "general")
    return alice, bob


async def _session(page: Page) -> dict[str, Any]:
    """The page's token, user id and open channel, for the REST calls a moderator makes."""
    found: dict[str, Any] = await page.evaluate(
        """import('./js/main.js').then(({ store }) => ({
            token: store.api.token, userId: store.me.id, channelId: store.currentId }))"""
    )
    return found


async def _moderate(web_stack: WebStack, token: str, path: str, body: dict[str, Any]) -> None:
    url = f"{web_stack.gateways[0].url}/api/v1{path}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        assert response.status == 200, await response.text()


async def test_an_invitation_accepted_lets_two_people_chat_in_a_private_channel(
    web_stack: WebStack, pages: Pages
) -> None:
    alice = await _open(pages, web_stack, 0, "alice")
    bob = await _open(pages, web_stack, 1, "bob")
    await create_channel(alice, "plans", private=True)
    await expect(channel_button(alice, "plans", "🔒")).to_have_accessible_name("🔒 plans (private)")
    await bob.get_by_text("Browse channels", exact=True).click()
    await expect(bob.get_by_text("No channels yet.")).to_be_visible()  # not listed to Bob

    await alice.get_by_role("button", name="Invite").click()
    invite = alice.get_by_role("form", name="Invite someone")
    await invite.get_by_label("Username to invite").fill("nobody-here")
    await invite.get_by_role("button", name="Send invitation").click()
    await expect(invite.get_by_role("status")).to_have_text("Nobody is called @nobody-here.")
    await invite.get_by_label("Username to invite").fill("Bob")
    await invite.get_by_role("button", name="Send invitation").click()
    await expect(invite.get_by_role("status")).to_have_text("Invited Bob.")

    # Bob's page finds the invitation on its own (no reload), and accepting opens it.
    await bob.get_by_role("button", name="Accept the invitation to plans").click()
    await expect(bob.get_by_role("heading", name="🔒 plans (private)")).to_be_visible()
    await expect(bob.get_by_role("region", name="Invitations")).to_be_hidden()
    await expect(bob.get_by_role("button", name="Invite")).to_be_hidden()  # a member only
    await send(alice, "the plan")
    await expect(shown(bob)).to_have_text(["the plan"])
    await send(bob, "agreed")
    for page in (alice, bob):
        await expect(shown(page)).to_have_text(["the plan", "agreed"])

    # A second invitation, declined: it goes, and so does nothing else.
    await create_channel(alice, "surprise", private=True)
    await alice.get_by_role("button", name="Invite").click()
    await alice.get_by_label("Username to invite").fill("bob")
    await alice.get_by_role("button", name="Send invitation").click()
    await bob.get_by_role("button", name="Decline the invitation to surprise").click()
    await expect(bob.get_by_role("region", name="Invitations")).to_be_hidden()
    await expect(channel_button(bob, "surprise", "🔒")).to_have_count(0)
    await expect(channel_button(bob, "plans", "🔒")).to_be_visible()


async def test_a_direct_message_asked_for_twice_is_one_conversation(
    web_stack: WebStack, pages: Pages
) -> None:
    alice, bob = await _two_in_general(web_stack, pages)
    # From the list of who is online in a channel.
    await alice.get_by_role("button", name="2 online").click()
    await alice.get_by_role("button", name="Message Bob").click()
    await expect(alice.get_by_role("heading", name="@ Bob (direct message)")).to_be_visible()
    await expect(alice.get_by_role("button", name="Leave")).to_be_hidden()
    await send(alice, "psst")
    await expect(shown(alice)).to_have_text(["psst"])

    # Bob's list gains the conversation, named after Alice, without a reload.
    await expect(channel_button(bob, "Alice", "@")).to_have_accessible_name(
        "@ Alice (direct message) 1 unread"
    )
    # Bob asks for it from the "New message" form: the same conversation.
    await bob.get_by_text("New message", exact=True).click()
    await bob.get_by_label("Their username").fill("alice")
    await bob.get_by_role("button", name="Open conversation").click()
    await expect(bob.get_by_role("heading", name="@ Alice (direct message)")).to_be_visible()
    await expect(shown(bob)).to_have_text(["psst"])
    await send(bob, "yes?")
    # Alice asks again, from the channel's member list: still one conversation.
    await channel_button(alice, "general").click()
    await expect(alice.get_by_role("button", name="2 online")).to_have_attribute(
        "aria-expanded", "true"
    )  # still open from before
    await alice.get_by_role("button", name="All members").click()
    members = alice.get_by_role("list", name="Members")
    await expect(members.get_by_role("listitem")).to_have_text(["Alice (owner)", "Bob Message"])
    await members.get_by_role("button", name="Message Bob").click()
    for page, other in ((alice, "Bob"), (bob, "Alice")):
        await expect(shown(page)).to_have_text(["psst", "yes?"])
        await expect(channel_button(page, other, "@")).to_have_count(1)
        dms = page.get_by_role("navigation", name="Channels").get_by_role(
            "button", name=re.compile(r"^@ ")
        )
        await expect(dms).to_have_count(1)


async def test_a_muted_person_sees_the_refusal_and_a_kicked_one_loses_the_channel(
    web_stack: WebStack, pages: Pages
) -> None:
    alice, bob = await _two_in_general(web_stack, pages)
    moderator = await _session(alice)
    bob_id = (await _session(bob))["userId"]
    channel = moderator["channelId"]
    await _moderate(
        web_stack,
        moderator["token"],
        f"/channels/{channel}/mutes",
        {"user_id": bob_id, "duration_seconds": 600},
    )
    note = bob.get_by_role("status").filter(has_text="You are muted here until")
    await expect(note).to_be_visible()  # the muted frame, before Bob tries
    await send(bob, "can you hear me")
    await expect(pending(bob)).to_have_text([re.compile("Not sent: you are muted")])
    await bob.get_by_role("button", name="Dismiss the message not sent").click()
    await expect(pending(bob)).to_have_count(0)
    await send(alice, "only mine")
    for page in (alice, bob):
        await expect(shown(page)).to_have_text(["only mine"])

    await _moderate(web_stack, moderator["token"], f"/channels/{channel}/kick", {"user_id": bob_id})
    await expect(bob.get_by_text("You are no longer a member of # general.")).to_be_visible()
    await expect(channel_button(bob, "general")).to_have_count(0)
    await expect(bob.get_by_role("heading", name="# general")).to_be_hidden()
