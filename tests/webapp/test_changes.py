"""Edits, deletes, reactions and replies in the web client, between two people on two
gateways: each change shows on both screens, in place, and survives a reconnect (the
events replayed by `since`) and a reload (history's latest versions)."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Locator, Page, expect

from tests.webapp.conftest import Pages, WebStack
from tests.webapp.people import (
    connection_banner,
    create_channel,
    join_channel,
    send,
    shown,
    sign_up,
)

pytestmark = pytest.mark.timeout(150)


def _message(page: Page, text: str) -> Locator:
    """The message on screen whose text is `text` (in the channel, not the thread)."""
    return (
        page.get_by_role("log")
        .locator("ol.messages:not(.pending-list) > li")
        .filter(has=page.locator(".text", has_text=re.compile(rf"^{re.escape(text)}$")))
    )


async def _act(page: Page, text: str, action: str) -> None:
    message = _message(page, text)
    await message.get_by_role("button", name="Message actions").click()
    await (
        message.get_by_role("group", name="Message actions")
        .get_by_role("button", name=action, exact=True)
        .click()
    )


async def test_edit_delete_react_and_reply_between_two_people(
    web_stack: WebStack, pages: Pages
) -> None:
    alice = await pages.open(web_stack.app_url(0))
    bob = await pages.open(web_stack.app_url(1))
    await sign_up(alice, "alice")
    await sign_up(bob, "bob")
    await create_channel(alice, "general")  # Alice owns it
    await join_channel(bob, "general")
    await send(alice, "first draft")
    await expect(shown(bob)).to_have_text(["first draft"])

    # Alice edits her message: both see the new text, marked edited, in its place.
    await _act(alice, "first draft", "Edit")
    editor = alice.get_by_role("textbox", name="Edit message")
    await editor.fill("final text")
    # Bob reacts meanwhile: Alice's message is drawn anew, her edit in progress kept.
    await _act(bob, "first draft", "React 🎉")
    await expect(alice.get_by_role("button", name="🎉 1")).to_be_visible()
    await expect(editor).to_have_value("final text")
    await expect(editor).to_be_focused()
    await editor.press("Enter")
    for page in (alice, bob):
        await expect(shown(page)).to_have_text(["final text"])
        await expect(_message(page, "final text").get_by_text("(edited)")).to_be_visible()
    # Bob may neither edit nor delete it.
    await _message(bob, "final text").get_by_role("button", name="Message actions").click()
    panel = _message(bob, "final text").get_by_role("group", name="Message actions")
    await expect(panel.get_by_role("button", name="Reply")).to_be_visible()
    await expect(panel.get_by_role("button", name="Edit")).to_have_count(0)
    await expect(panel.get_by_role("button", name="Delete")).to_have_count(0)

    # Reactions: counts on both screens, each person's own highlighted.
    await panel.get_by_role("button", name="React 👍").click()
    for page, mine in ((alice, "false"), (bob, "true")):
        reaction = _message(page, "final text").get_by_role("button", name="👍 1")
        await expect(reaction).to_have_attribute("aria-pressed", mine)
    await _act(alice, "final text", "React 👍")
    for page in (alice, bob):
        await expect(
            _message(page, "final text").get_by_role("button", name="👍 2")
        ).to_be_visible()
    await _message(bob, "final text").get_by_role("button", name="👍 2").click()  # takes it back
    for page, mine in ((alice, "true"), (bob, "false")):
        reaction = _message(page, "final text").get_by_role("button", name="👍 1")
        await expect(reaction).to_have_attribute("aria-pressed", mine)

    # Bob replies: the reply quotes it, and it counts one reply.
    await _act(bob, "final text", "Reply")
    await expect(bob.get_by_text("Replying to Alice: final text")).to_be_visible()
    await send(bob, "a reply")
    for page in (alice, bob):
        await expect(shown(page)).to_have_text(["final text", "a reply"])
        await expect(_message(page, "a reply").get_by_text("↪ Alice: final text")).to_be_visible()
        await expect(
            _message(page, "final text").get_by_role("button", name="1 reply")
        ).to_be_visible()
    # Alice opens the thread and replies there.
    await _message(alice, "final text").get_by_role("button", name="1 reply").click()
    thread = alice.get_by_role("dialog", name="Thread")
    await expect(thread.get_by_role("list", name="Replies").locator(".text")).to_have_text(
        ["a reply"]
    )
    await thread.get_by_role("textbox", name="Reply in thread").fill("in the thread")
    await thread.get_by_role("textbox", name="Reply in thread").press("Enter")
    await expect(thread.get_by_role("list", name="Replies").locator(".text")).to_have_text(
        ["a reply", "in the thread"]
    )
    await thread.get_by_role("button", name="Close").click()
    for page in (alice, bob):
        await expect(
            _message(page, "final text").get_by_role("button", name="2 replies")
        ).to_be_visible()

    # Alice, the owner, deletes Bob's reply: a tombstone in its place on both screens.
    await _act(alice, "a reply", "Delete")
    await alice.get_by_role("button", name="Yes, delete").click()
    expected = ["final text", "This message was deleted.", "in the thread"]
    for page in (alice, bob):
        await expect(shown(page)).to_have_text(expected)
        await expect(
            _message(page, "final text").get_by_role("button", name="1 reply")
        ).to_be_visible()

    # Bob is away while Alice edits again: the reconnect replays the edit after the
    # seqs he saw, and shows no event as a message.
    backends = web_stack.balancers[1].backends
    web_stack.balancers[1].backends = []
    web_stack.balancers[1].drop_connections()
    await expect(connection_banner(bob)).to_have_text(re.compile(r"Reconnecting"))
    await _act(alice, "final text", "Edit")
    await alice.get_by_role("textbox", name="Edit message").fill("final text, really")
    await alice.get_by_role("textbox", name="Edit message").press("Enter")
    await expect(shown(alice)).to_have_text(["final text, really", *expected[1:]])
    web_stack.balancers[1].backends = backends
    await expect(connection_banner(bob)).to_be_hidden(timeout=20_000)
    await expect(shown(bob)).to_have_text(["final text, really", *expected[1:]])

    # A reload reads the same from history: latest versions, tombstone, reactions, counts.
    await bob.reload()
    await expect(shown(bob)).to_have_text(["final text, really", *expected[1:]], timeout=20_000)
    parent = _message(bob, "final text, really")
    await expect(parent.get_by_text("(edited)")).to_be_visible()
    await expect(parent.get_by_role("button", name="👍 1")).to_have_attribute(
        "aria-pressed", "false"
    )
    await expect(parent.get_by_role("button", name="1 reply")).to_be_visible()
    assert pages.dialogs == []
