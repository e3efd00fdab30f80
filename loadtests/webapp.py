"""The web client's costs in a real browser (Debian's Chromium through Playwright), against
a running stack (`make run`):

- first load: bytes transferred (headers and bodies, as the network saw them) and the
  time to interactive (the `app-interactive` mark the app sets once a view is usable),
  cold and revalidated (the second load, answered 304 from the browser's cache);
- scrolling: frame times while a channel view holding N messages is scrolled from the
  newest to the oldest, with the app's cap on rendered messages off and on.

Messages for the scrolling figures are synthetic frames handed to the app's store, as
the socket would hand them: what is measured is the page, not the server.

    python -m loadtests.webapp --url http://127.0.0.1:4000/app/ [--sizes 100,1000,2000,5000,20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import uuid
from typing import Any

from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_SCROLL_STEPS = 120

# Feeds `count` messages into the open channel, in batches as a replay would, then
# scrolls from the bottom to the top in steps, one per animation frame, and returns
# the frame intervals (ms) and the time the insertion took.
_SCROLL_SCRIPT = """
async ([count, capped, visibility, steps]) => {
  const { store } = await import("./js/main.js");
  const { limits } = await import("./js/conversation-view.js");
  if (!capped) limits.maxRendered = Infinity;
  if (!visibility) {
    // CSSOM, which the page's CSP allows (it refuses inline style elements).
    const sheet = [...document.styleSheets].find((each) => each.href?.endsWith("style.css"));
    sheet.insertRule(".message { content-visibility: visible !important; }", sheet.cssRules.length);
  }
  const channelId = store.currentId;
  const me = store.users.get(store.me.id);
  const base = store.channels.get(channelId).lastSeq;
  const words = "lorem ipsum dolor sit amet ";
  const started = performance.now();
  for (let seq = base + 1; seq <= base + count; seq += 500) {
    for (let n = seq; n < Math.min(seq + 500, base + count + 1); n += 1) {
      store.receive({
        type: "message", channel_id: channelId, id: n, seq: n, user_id: me.id, user: me,
        created_at: new Date().toISOString(),
        body: { type: "text", content: `message ${n}: ` + words.repeat(1 + (n % 4)) },
      });
    }
    await new Promise((resolve) => requestAnimationFrame(resolve));
  }
  const inserted = performance.now() - started;
  const log = document.querySelector("[role=log]");
  const rendered = log.querySelectorAll("ol.messages > li").length;
  await new Promise((resolve) => requestAnimationFrame(resolve));
  const frames = [];
  let last = performance.now();
  for (let step = 0; step <= steps; step += 1) {
    log.scrollTop = log.scrollHeight * (1 - step / steps) - log.clientHeight;
    await new Promise((resolve) => requestAnimationFrame(resolve));
    const now = performance.now();
    frames.push(now - last);
    last = now;
  }
  return { inserted, rendered, frames };
}
"""


async def _new_page(browser: Browser) -> Page:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    return await context.new_page()


async def _first_load(browser: Browser, url: str) -> dict[str, Any]:
    page = await _new_page(browser)
    sizes: list[int] = []
    done: list[asyncio.Future[None]] = []

    async def record(request: Any) -> None:
        measured = await request.sizes()
        sizes.append(measured["responseHeadersSize"] + measured["responseBodySize"])

    page.on("requestfinished", lambda request: done.append(asyncio.ensure_future(record(request))))
    loads = []
    for _ in range(2):  # cold, then revalidated from the browser's cache
        sizes.clear()
        await page.goto(url)
        await page.get_by_role("button", name="Log in").wait_for()
        await asyncio.gather(*done)
        interactive = await page.evaluate(
            "performance.getEntriesByName('app-interactive')[0].startTime"
        )
        loads.append({"requests": len(sizes), "bytes": sum(sizes), "interactive_ms": interactive})
    await page.context.close()
    return {"cold": loads[0], "revalidated": loads[1]}


async def _signed_in(browser: Browser, url: str) -> Page:
    page = await _new_page(browser)
    await page.goto(url)
    name = "m" + uuid.uuid4().hex[:10]
    await page.get_by_role("button", name="Sign up").click()
    form = page.get_by_role("form", name="Sign up")
    await form.get_by_label("Name", exact=True).fill(name)
    await form.get_by_label("Username", exact=True).fill(name)
    await form.get_by_label("E-mail", exact=True).fill(f"{name}@example.com")
    await form.get_by_label("Password", exact=True).fill("measure-password")
    await form.get_by_role("button", name="Sign up").click()
    await page.get_by_role("button", name="Log out").wait_for()
    return page


async def _scrolling(
    browser: Browser, url: str, count: int, capped: bool, visibility: bool
) -> dict[str, Any]:
    page = await _signed_in(browser, url)
    await page.get_by_text("New channel", exact=True).click()
    form = page.get_by_role("form", name="New channel")
    await form.get_by_label("Channel name", exact=True).fill("c" + uuid.uuid4().hex[:10])
    await form.get_by_role("button", name="Create channel").click()
    await page.get_by_role("textbox", name="Message #", exact=False).wait_for()
    result = await page.evaluate(_SCROLL_SCRIPT, [count, capped, visibility, _SCROLL_STEPS])
    await page.context.close()
    frames = sorted(result["frames"][1:])
    return {
        "messages": count,
        "capped": capped,
        "content_visibility": visibility,
        "rendered": result["rendered"],
        "insert_ms": round(result["inserted"]),
        "frame_median_ms": round(statistics.median(frames), 1),
        "frame_p95_ms": round(frames[int(len(frames) * 0.95) - 1], 1),
        "frame_max_ms": round(frames[-1], 1),
        "frames_over_50ms": sum(frame > 50 for frame in frames),
    }


async def _main(url: str, sizes: list[int]) -> dict[str, Any]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=ARGS
        )
        try:
            first_load = await _first_load(browser, url)
            # Uncapped, with and without `content-visibility: auto`, then the app as shipped
            # (its cap on) at the largest size.
            scrolling = [
                await _scrolling(browser, url, count, False, visibility)
                for count in sizes
                for visibility in (True, False)
            ]
            scrolling.append(await _scrolling(browser, url, max(sizes), True, True))
            return {"browser": browser.version, "first_load": first_load, "scrolling": scrolling}
        finally:
            await browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:4000/app/")
    parser.add_argument("--sizes", default="100,1000,2000,5000,20000")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    print(json.dumps(asyncio.run(_main(args.url, sizes)), indent=2))


if __name__ == "__main__":
    main()
