"""No path segment or query string gets a 5xx, and every answer is the envelope.

Every route of the router is tried with hostile path segments and query values:
other scripts' digits (`int("٣") == 3`, and `"²".isdigit()` although `int("²")`
raises), signs, spaces, numbers past 2^53 and past `int()`'s 4300-digit limit,
NUL, bad percent-encoding, separators. Requests go through `http.client`, which
sends the path exactly as built (aiohttp's client would normalize it).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import string
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import hdrs
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway.api.common import IntParam
from gateway.api.docs import doc_of
from shared.errors import ErrorCode
from tests.gateway.api_client import Account, create_channel, error_of, signup

# Each a raw path segment or query value, before percent-encoding.
HOSTILE = [
    "²",
    "٣",
    "\uff11",  # fullwidth 1
    "\U0001d7cf",  # mathematical bold 1
    "+1",
    "-0",
    "-1",
    "--5",
    " 1",
    "1 ",
    "\t1",
    "1\n",
    "0x1f",
    "1e3",
    "1.0",
    "1_000",
    "0",
    "00000000000000000001",
    "000000000000000000001",
    str(2**53),
    str(2**53 + 1),
    str(2**63),
    "9" * 17,
    "9" * 5000,
    "\x00",
    "1\x00",
    "%",
    "%zz",
    "%00",
    "..",
    ".",
    "1/2",
    "\u202e1",
    "\ufeff1",
    "\ud800",
    "true",
    "null",
    "[]",
    "",
]
# Sent as they are, unencoded: a bad or partial percent-escape, an escaped separator.
RAW = ["%", "%zz", "%0", "%00", "%2F", "%2e%2e", "%C2%B2", "%ff", "1%2F2", "%E2%80%AE1"]
_QUERY_NAMES = ["limit", "offset", "before", "after_seq", "since", "token", "q", "unknown"]
_ASCII = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@%"
_PATH_PARAMETER = re.compile(r"\{(\w+)\}")
_DIGITS = re.compile(r"[0-9]*")
# Routes whose success is not the envelope (the OpenAPI document, Prometheus, `GET /`).
_ENVELOPE_KEYS = {"status", "message", "data"}
_ERROR_CODES = {str(code) for code in ErrorCode}
# aiohttp's HTTP parser refuses longer request lines itself.
_MAX_TARGET = 8000


def _routes(client: TestClient[Any, Any]) -> list[tuple[str, str, frozenset[str]]]:
    """(method, path template, numeric query parameters it reads) of every route.

    Text parameters (search's `q`) take most of these values as text: they are
    sent as unknown parameters are, checked for a 5xx and the envelope only.
    """
    found = []
    for route in client.app.router.routes():
        if route.method in (hdrs.METH_HEAD, hdrs.METH_OPTIONS) or route.resource is None:
            continue
        doc = doc_of(route.handler)
        assert doc is not None
        names = frozenset(param.name for param in doc.query if isinstance(param, IntParam))
        found.append((route.method, route.resource.canonical, names))
    return found


def _encode(value: str) -> str:
    return quote(value, safe="", errors="surrogatepass")


# aiohttp's HTTP parser refuses a longer request line before any middleware.
_MAX_REQUEST_LINE = 8190


def _fill(template: str, segment: str) -> str:
    return _PATH_PARAMETER.sub(lambda _match: segment, template)


def _request(port: int, method: str, target: str, token: str | None) -> tuple[int, str, bytes]:
    """Send one request exactly as given; (status, content type, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = b"{}" if method in ("POST", "PUT") else None
        connection.request(method, target, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def _check(method: str, target: str, answer: tuple[int, str, bytes]) -> None:
    status, content_type, body = answer
    where = f"{method} {target[:120]} -> {status} {body[:200]!r}"
    assert status < 500, where
    if status == 400 and len(target) > _MAX_REQUEST_LINE:
        # A route with two parameters doubles a long value: past the request line's
        # bound aiohttp's parser answers, in plain text (see README, Security).
        return
    if status < 400 and not content_type.startswith("application/json"):
        return  # `GET /` and `/metrics` answer text
    assert content_type.startswith("application/json"), where
    document = json.loads(body)
    if status < 400 and "openapi" in document:
        return  # the OpenAPI document itself
    assert set(document) >= _ENVELOPE_KEYS, where
    if status >= 400:
        assert document["status"] == "error", where
        assert document["data"] is None, where
        assert document["code"] in _ERROR_CODES, where
        assert set(document) <= {*_ENVELOPE_KEYS, "code", "errors"}, where
    else:
        assert document["status"] == "success", where
        assert set(document) == _ENVELOPE_KEYS, where


def _targets(template: str, reads: frozenset[str], value: str) -> Iterator[tuple[str, bool]]:
    """The route with `value` as each of its parameters and as an unknown one; each with
    whether the route must refuse it (it reads it, and it is not ASCII digits)."""
    refused = _DIGITS.fullmatch(value) is None
    if "{" in template:
        yield _fill(template, _encode(value)), refused
    plain = _fill(template, "1")
    for name in (*sorted(reads), "q", "unknown"):
        yield f"{plain}?{name}={_encode(value)}", refused and name in reads


def _send_all(port: int, token: str, cases: list[tuple[str, str, bool]]) -> list[str]:
    """Send every case, check each answer; the refusals that were accepted instead."""
    accepted = []
    for method, target, refused in cases:
        answer = _request(port, method, target, token)
        _check(method, target, answer)
        if refused and answer[0] < 400:
            accepted.append(f"{method} {target[:80]} -> {answer[0]}")
    return accepted


@pytest.fixture
async def caller(gateway: TestClient[Any, Any]) -> Account:
    """User 1, owner of channel 1: an id that reads as 1 finds something."""
    account = await signup(gateway, "alice")
    await create_channel(gateway, account, "general")
    return account


async def test_hostile_segments_and_query_values_are_refused_without_a_5xx(
    gateway: TestClient[Any, Any], caller: Account
) -> None:
    """Regression: `GET /api/v1/channels/²` and `?limit=--5` answered 500, and
    `/api/v1/users/%EF%BC%91` (a fullwidth 1) was user 1."""
    port = gateway.port
    assert port is not None
    cases: list[tuple[str, str, bool]] = []
    for method, template, reads in _routes(gateway):
        for value in HOSTILE:
            cases += [
                (method, target, refused) for target, refused in _targets(template, reads, value)
            ]
        cases += [(method, _fill(template, raw), True) for raw in RAW if "{" in template]
        cases += [(method, f"{_fill(template, '1')}?limit={raw}", "limit" in reads) for raw in RAW]
    # http.client blocks; the gateway answers on this test's event loop meanwhile.
    accepted = await asyncio.to_thread(_send_all, port, caller.token, cases)
    assert not accepted, "non-ASCII-digit values taken as numbers:\n" + "\n".join(accepted)


_SEGMENT = st.one_of(
    st.sampled_from(HOSTILE).map(_encode),
    st.sampled_from(RAW),
    st.text(max_size=40).map(_encode),
    st.text(alphabet=_ASCII, max_size=40),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)
_QUERY = st.lists(
    st.tuples(st.sampled_from(_QUERY_NAMES) | st.text(alphabet=_ASCII, max_size=8), _SEGMENT),
    max_size=4,
).map(lambda pairs: "&".join(f"{name}={value}" for name, value in pairs))


async def test_any_path_segment_and_query_string_gets_the_envelope_and_no_5xx(
    gateway: TestClient[Any, Any], caller: Account
) -> None:
    port = gateway.port
    assert port is not None
    routes = [(method, template) for method, template, _reads in _routes(gateway)]

    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @given(
        route=st.sampled_from(routes),
        segment=_SEGMENT,
        query=_QUERY,
        authenticated=st.booleans(),
    )
    def probe(route: tuple[str, str], segment: str, query: str, authenticated: bool) -> None:
        method, template = route
        target = _fill(template, segment) + (f"?{query}" if query else "")
        assume(len(target) < _MAX_TARGET)
        answer = _request(port, method, target, caller.token if authenticated else None)
        _check(method, target, answer)

    await asyncio.to_thread(probe)


async def test_wrong_methods_and_refused_preflights_answer_the_envelope(
    gateway: TestClient[Any, Any],
) -> None:
    """Regression: a 405 carried no `Allow` (RFC 9110 requires it), a GET on
    `/api/v1/channels/join` was channel "join" (422), and a preflight without an
    Origin got aiohttp-cors's plain-text 403."""
    wrong = await gateway.delete("/api/v1/users")
    sibling = await gateway.get("/api/v1/channels/join")
    preflight = await gateway.options("/api/v1/users")
    assert await error_of(wrong) == (405, "method_not_allowed")
    assert "GET" in wrong.headers["Allow"]
    assert await error_of(sibling) == (405, "method_not_allowed")
    assert "POST" in sibling.headers["Allow"]
    assert await error_of(preflight) == (403, "origin_not_allowed")


async def test_an_empty_query_value_means_the_default(
    gateway: TestClient[Any, Any], caller: Account
) -> None:
    """As the OpenAPI document says (`allowEmptyValue`)."""
    response = await gateway.get("/api/v1/channels?limit=&offset=")
    assert response.status == 200
    assert [channel["name"] for channel in (await response.json())["data"]] == ["general"]
