"""The web client in a real browser: Debian's Chromium driven by Playwright (async API,
on the suite's event loop), against real gateway processes behind a load balancer.

Chromium is the system package (`apt-get install chromium`), not Playwright's own
download. Without it these tests skip on a workstation and fail in CI (`CI=true`),
so CI cannot pass by skipping them. A failing test leaves a screenshot of every page
it opened under tests/webapp/.screenshots/ (git-ignored).
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.faults.stack import Service, Stack

# The gateway tests' factory of process deployments, shared rather than copied.
from tests.gateway.conftest import MakeStack, make_stack  # noqa: F401
from tests.webapp.balancer import Balancer

CHROMIUM = Path("/usr/bin/chromium")
# As root (CI, these machines) Chromium's sandbox cannot start; the rest keeps it
# from reaching the network on its own (updates, sync, QUIC probes).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).parent / ".screenshots"

_failed = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_failed] = True
    return report


def _require_chromium() -> None:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install -y chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    _require_chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


@dataclass
class WebStack:
    """Two gateways and a worker; each balancer prefers one gateway, fails over to the other."""

    stack: Stack
    gateways: list[Service]
    balancers: list[Balancer]
    worker: Service

    def app_url(self, balancer: int = 0) -> str:
        return f"{self.balancers[balancer].origin}/app/"


@pytest.fixture
async def web_stack(make_stack: MakeStack) -> AsyncIterator[WebStack]:  # noqa: F811
    balancers = [Balancer(), Balancer()]
    for balancer in balancers:
        await balancer.start()
    stack = await make_stack(ALLOWED_ORIGINS=",".join(b.origin for b in balancers))
    gateways = [await stack.start_gateway(), await stack.start_gateway()]
    ports = [gateway.port for gateway in gateways]
    assert None not in ports
    balancers[0].backends = [ports[0], ports[1]]  # type: ignore[list-item]
    balancers[1].backends = [ports[1], ports[0]]  # type: ignore[list-item]
    worker = stack.start_worker()
    try:
        yield WebStack(stack, gateways, balancers, worker)
    finally:
        for balancer in balancers:
            await balancer.close()


@dataclass
class Pages:
    """Opens pages in contexts of their own (separate sessionStorage: separate people)."""

    browser: Browser
    contexts: list[BrowserContext] = field(default_factory=list)
    pages: list[Page] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    async def open(self, url: str, **context_options: object) -> Page:
        context = await self.browser.new_context(**context_options)  # type: ignore[arg-type]
        self.contexts.append(context)
        page = await context.new_page()
        page.set_default_timeout(10_000)
        page.on("dialog", self._dialog)
        self.pages.append(page)
        await page.goto(url)
        return page

    async def _dialog(self, dialog: object) -> None:
        self.dialogs.append(getattr(dialog, "message", "?"))
        await dialog.dismiss()  # type: ignore[attr-defined]


OpenPage = Callable[..., Awaitable[Page]]


@pytest.fixture
async def pages(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Pages]:
    opened = Pages(browser)
    yield opened
    if request.node.stash.get(_failed, False):
        SCREENSHOTS.mkdir(exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
        for index, page in enumerate(opened.pages):
            await page.screenshot(path=SCREENSHOTS / f"{name}-{index}.png", full_page=True)
    for context in opened.contexts:
        await context.close()
