"""What a person does in the web client, found the way a person finds it: by role,
label and text (so the tests double as a check of the labels screen readers read)."""

from __future__ import annotations

import re

from playwright.async_api import Locator, Page, expect

PASSWORD = "correct horse battery"


async def sign_up(page: Page, username: str, name: str | None = None) -> None:
    await page.get_by_role("button", name="Sign up").click()
    form = page.get_by_role("form", name="Sign up")
    await form.get_by_label("Name", exact=True).fill(name or username.title())
    await form.get_by_label("Username", exact=True).fill(username)
    await form.get_by_label("E-mail", exact=True).fill(f"{username}@example.com")
    await form.get_by_label("Password", exact=True).fill(PASSWORD)
    await form.get_by_role("button", name="Sign up").click()
    await expect(page.get_by_role("button", name="Log out")).to_be_visible()


async def log_in(page: Page, identity: str) -> None:
    form = page.get_by_role("form", name="Log in")
    await form.get_by_label("Username or e-mail", exact=True).fill(identity)
    await form.get_by_label("Password", exact=True).fill(PASSWORD)
    await form.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("button", name="Log out")).to_be_visible()


async def create_channel(page: Page, name: str, *, private: bool = False) -> None:
    await page.get_by_text("New channel", exact=True).click()
    form = page.get_by_role("form", name="New channel")
    await form.get_by_label("Channel name", exact=True).fill(name)
    if private:
        await form.get_by_label("Private: by invitation only").check()
    await form.get_by_role("button", name="Create channel").click()
    title = f"🔒 {name} (private)" if private else f"# {name}"
    await expect(page.get_by_role("heading", name=title)).to_be_visible()


async def join_channel(page: Page, name: str) -> None:
    await page.get_by_text("Browse channels", exact=True).click()
    await page.get_by_role("button", name=f"Join {name}", exact=True).click()
    await expect(page.get_by_role("heading", name=f"# {name}")).to_be_visible()


def channel_button(page: Page, name: str, sign: str = "#") -> Locator:
    """A channel in the list: `sign` is "#" (public), "🔒" (private) or "@" (a direct
    message, named after the other person)."""
    return page.get_by_role("navigation", name="Channels").get_by_role(
        "button", name=re.compile(rf"^{re.escape(sign)} {re.escape(name)}\b")
    )


async def open_channel(page: Page, name: str) -> None:
    await channel_button(page, name).click()
    await expect(page.get_by_role("heading", name=f"# {name}")).to_be_visible()


async def send(page: Page, text: str) -> None:
    composer = page.get_by_role("textbox", name=re.compile(r"^Message "))
    await composer.fill(text)
    await composer.press("Enter")


def shown(page: Page) -> Locator:
    """The texts of the stored messages on screen, in order (pending ones excluded)."""
    return page.get_by_role("log").locator("ol.messages:not(.pending-list) > li .text")


def pending(page: Page) -> Locator:
    """The person's own messages not yet stored."""
    return page.get_by_role("list", name="Sending").get_by_role("listitem")


def connection_banner(page: Page) -> Locator:
    return page.locator("#connection")
