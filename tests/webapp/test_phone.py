"""The web client at a phone's width (375 px): nothing scrolls sideways, and a person can
go from the channel list to a conversation, write, and come back, by keyboard alone."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.webapp.conftest import Pages, WebStack
from tests.webapp.people import create_channel, send, shown, sign_up

pytestmark = pytest.mark.timeout(90)

PHONE = {"viewport": {"width": 375, "height": 740}, "device_scale_factor": 2, "has_touch": True}


async def _horizontal_overflow(page: object) -> int:
    width: int = await page.evaluate(  # type: ignore[attr-defined]
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    return width


async def test_phone_width_has_no_sideways_scroll_and_a_usable_composer(
    web_stack: WebStack, pages: Pages
) -> None:
    page = await pages.open(web_stack.app_url(0), **PHONE)
    assert await _horizontal_overflow(page) == 0
    await sign_up(page, "alice")
    await create_channel(page, "a-channel-with-a-rather-long-name-that-must-not-overflow")
    composer = page.get_by_role(
        "textbox", name="Message # a-channel-with-a-rather-long-name-that-must-not-overflow"
    )
    await expect(composer).to_be_in_viewport()
    await expect(page.get_by_role("button", name="Send")).to_be_in_viewport()
    await send(page, "x" * 300)  # one long word
    await expect(shown(page)).to_have_text(["x" * 300])
    assert await _horizontal_overflow(page) == 0
    # Back to the list, and into the conversation again, with the keyboard.
    await page.get_by_role("button", name="← Channels").press("Enter")
    await expect(composer).to_be_hidden()
    assert await _horizontal_overflow(page) == 0
    await page.keyboard.press("Enter")  # the list's first channel has the focus
    await expect(composer).to_be_focused()
    await page.keyboard.type("typed")
    await page.keyboard.press("Enter")
    await expect(shown(page)).to_have_text(["x" * 300, "typed"])
    # A private channel's header has one more button (Invite): it still fits.
    await page.get_by_role("button", name="← Channels").click()
    await create_channel(page, "a-private-channel-with-a-long-name", private=True)
    for button in ("← Channels", "1 online", "Invite", "Leave"):
        await expect(page.get_by_role("button", name=button)).to_be_in_viewport(ratio=1)
    await page.get_by_role("button", name="Invite").click()
    await expect(page.get_by_label("Username to invite")).to_be_focused()
    assert await _horizontal_overflow(page) == 0
