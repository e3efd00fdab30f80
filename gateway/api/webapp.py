"""`GET /app/`: the web client, static files shipped in the package (`gateway/webapp/`).

The files are read once, when this module is imported, into an allowlist
keyed by URL: a request names an entry of that table or gets
`404 route_not_found`. No path from a request ever reaches the file system,
so `..`, encoded separators and NUL have nothing to traverse.

Every answer carries the page's security headers: a Content-Security-Policy
that allows scripts, styles and connections from this origin only (no inline
script, no external origin, no framing), `nosniff`, and no Referer. Files are
revalidated on every load (`no-cache` with an ETag): there is no build step,
so module names carry no content hash that a long cache lifetime could rely on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from gateway.api.docs import Raw, documented
from shared.errors import RouteNotFoundError

INDEX_PATH = "/app/"
MODULE_PATH = "/app/js/{module}"

# `'self'` covers ws: and wss: to this host (CSP level 3), so the socket needs
# no wider source. Images: the app draws none from elsewhere (avatars are
# initials), so an avatar URL or a pasted one loads nothing.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
_TYPES = {
    ".html": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
}


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    content_type: str
    etag: str


def _load(folder: str) -> dict[str, _Asset]:
    """Every file of `gateway/webapp/<folder>` by name; only the types in `_TYPES`."""
    found: dict[str, _Asset] = {}
    root = resources.files("gateway").joinpath("webapp")
    for entry in (root.joinpath(folder) if folder else root).iterdir():
        suffix = entry.name[entry.name.rfind(".") :]
        if not entry.is_file() or suffix not in _TYPES:
            continue
        body = entry.read_bytes()
        found[entry.name] = _Asset(body, _TYPES[suffix], hashlib.sha256(body).hexdigest()[:32])
    return found


_PAGES = _load("")
_MODULES = _load("js")
MODULE_NAMES = tuple(sorted(_MODULES))


def _answer(request: web.Request, asset: _Asset) -> web.Response:
    headers = {**_SECURITY_HEADERS, "ETag": f'"{asset.etag}"'}
    if any(tag.value in (asset.etag, "*") for tag in request.if_none_match or ()):
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=asset.body, content_type=asset.content_type, charset="utf-8", headers=headers
    )


_NOT_MODIFIED = {304: "Not modified: the `If-None-Match` ETag is current."}


@documented(
    "The web client's page",
    description="Open it in a browser. Revalidated on every load (`no-cache`, `ETag`).",
    raw=Raw("text/html", {"type": "string"}),
    storage=False,
    responses=_NOT_MODIFIED,
)
async def app_index(request: web.Request) -> web.Response:
    return _answer(request, _PAGES["index.html"])


@documented(
    "Redirect to the web client's page, `/app/`",
    raw=Raw("text/plain", {"type": "string"}),
    status=308,
    storage=False,
)
async def app_redirect(_request: web.Request) -> web.Response:
    raise web.HTTPPermanentRedirect(INDEX_PATH)


@documented(
    "The web client's stylesheet",
    raw=Raw("text/css", {"type": "string"}),
    storage=False,
    responses=_NOT_MODIFIED,
)
async def app_stylesheet(request: web.Request) -> web.Response:
    return _answer(request, _PAGES["style.css"])


@documented(
    "One of the web client's ES modules",
    description="Any other name is `404 route_not_found`.",
    raw=Raw("text/javascript", {"type": "string"}),
    path={"module": {"type": "string", "enum": list(MODULE_NAMES)}},
    errors=(RouteNotFoundError,),
    storage=False,
    responses=_NOT_MODIFIED,
)
async def app_module(request: web.Request) -> web.Response:
    asset = _MODULES.get(request.match_info["module"])
    if asset is None:
        raise RouteNotFoundError()
    return _answer(request, asset)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/app", app_redirect)
    app.router.add_get(INDEX_PATH, app_index)
    app.router.add_get("/app/style.css", app_stylesheet)
    app.router.add_get(MODULE_PATH, app_module)
