"""`/app/`: the web client's files, their types and security headers, and nothing else
(no path reaches the file system)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.api import webapp

WEBAPP = Path(webapp.__file__).resolve().parents[1] / "webapp"


async def test_the_page_and_its_files_have_their_types_and_security_headers(
    gateway: TestClient[Any, Any],
) -> None:
    for path, content_type in [
        ("/app/", "text/html"),
        ("/app/style.css", "text/css"),
        ("/app/js/main.js", "text/javascript"),
        ("/app/js/socket.js", "text/javascript"),
    ]:
        response = await gateway.get(path)
        assert response.status == 200, path
        assert response.content_type == content_type
        assert response.headers["Content-Security-Policy"] == webapp.CONTENT_SECURITY_POLICY
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "no-cache"
        again = await gateway.get(path, headers={"If-None-Match": response.headers["ETag"]})
        assert again.status == 304
    policy = webapp.CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in policy
    assert "frame-ancestors 'none'" in policy
    assert re.search(r"script-src 'self';", policy)


async def test_the_go_servers_health_check_still_answers(gateway: TestClient[Any, Any]) -> None:
    response = await gateway.get("/")
    assert await response.text() == "Hello world"
    redirect = await gateway.get("/app", allow_redirects=False)
    assert (redirect.status, redirect.headers["Location"]) == (308, "/app/")


@pytest.mark.parametrize(
    "path",
    [
        "/app/../gateway/app.py",
        "/app/js/../../app.py",
        "/app/js/..%2f..%2fapi%2fwebapp.py",
        "/app/js/%2e%2e/%2e%2e/api/webapp.py",
        "/app/js/%2e%2e%2fstyle.css",
        "/app/js/main.js%00",
        "/app/js/main.js%00.css",
        "/app/js/",
        "/app/js/.",
        "/app/js/index.html",  # a file of the app, but not a module
        "/app/js/main.js/",
        "/app/js/MAIN.JS",
        "/app/index.html/../../shared/settings.py",
        "/app/%5c..%5cgateway%5capp.py",
        "/app/js/" + "a" * 5000 + ".js",
    ],
)
async def test_paths_outside_the_files_are_refused(
    gateway: TestClient[Any, Any], path: str
) -> None:
    status, body = await _raw_get(gateway, path)
    assert status in (400, 404), path
    assert b"import " not in body  # not some module's source
    assert b"def " not in body  # nor a Python file's


async def _raw_get(client: TestClient[Any, Any], path: str) -> tuple[int, bytes]:
    """GET `path` exactly as written: HTTP clients normalize `..` away before sending."""
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        async with asyncio.timeout(5):
            answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def test_the_files_are_outside_the_rate_limit_and_the_api_is_not(
    make_gateway: Any,
) -> None:
    client = await make_gateway(rate_limit_requests=2)
    for _ in range(5):
        assert (await client.get("/app/js/main.js")).status == 200
    statuses = [(await client.get("/api/v1/channels")).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    # A path that only starts like the app's is counted, whatever it reaches.
    assert (await _raw_get(client, "/app/../api/v1/channels"))[0] == 429


def test_every_shipped_file_is_served_and_the_package_ships_them() -> None:
    modules = {path.name for path in (WEBAPP / "js").glob("*.js")}
    assert set(webapp.MODULE_NAMES) == modules
    pyproject = (WEBAPP.parents[1] / "pyproject.toml").read_text()
    assert '"webapp/js/*.js"' in pyproject


# Ways of turning a string into markup or code; user text must never meet them.
_UNSAFE_SINKS = re.compile(
    r"\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function\("
    r"|setTimeout\(\s*['\"`]|createContextualFragment|DOMParser"
)


def test_no_module_turns_strings_into_markup_or_code() -> None:
    for path in sorted((WEBAPP / "js").glob("*.js")):
        found = _UNSAFE_SINKS.findall(path.read_text())
        assert not found, f"{path.name}: {found}"
    index = (WEBAPP / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", index), "inline script in index.html"
    assert not re.search(r"\son[a-z]+=", index), "inline event handler in index.html"
