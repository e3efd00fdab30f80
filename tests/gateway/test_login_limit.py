"""Failed log-ins limited per identity and per client address (an IPv6 client per /64),
shared by every gateway; and the HTTP limit counting an IPv6 client per /64."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from shared.local_servers import free_port
from tests.gateway.api_client import error_of, signup
from tests.gateway.conftest import MakeGateway

_RIGHT = "correct horse"
_WRONG = "wrong horse"


async def _login(
    gateway: TestClient[Any, Any], identity: str, password: str, client: str | None = None
) -> Any:
    headers = {} if client is None else {"X-Forwarded-For": client}
    return await gateway.post(
        "/api/v1/auth/login", json={"identity": identity, "password": password}, headers=headers
    )


async def test_an_identity_is_locked_on_every_gateway_even_for_the_right_password(
    make_gateway: MakeGateway,
) -> None:
    limits = {"login_max_failures": 3, "login_failure_window_seconds": 600}
    gateway_a = await make_gateway(**limits)
    gateway_b = await make_gateway(**limits)
    await signup(gateway_a, "alice")
    # Case does not make a new identity, and the count is shared by both gateways.
    for gateway, identity in [(gateway_a, "alice"), (gateway_b, "ALICE"), (gateway_a, "Alice")]:
        response = await _login(gateway, identity, _WRONG)
        assert await error_of(response) == (401, "invalid_credentials")

    locked = await _login(gateway_b, "alice", _RIGHT)
    assert await error_of(locked) == (429, "rate_limited")
    assert 1 <= int(locked.headers["Retry-After"]) <= 600
    await signup(gateway_a, "bob")
    assert (await _login(gateway_a, "bob", _RIGHT)).status == 200  # others are not locked


async def test_parallel_guesses_cannot_overtake_the_count(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(login_max_failures=3)
    await signup(gateway, "alice")
    responses = await asyncio.gather(*(_login(gateway, "alice", _WRONG) for _ in range(12)))
    outcomes = sorted([await error_of(response) for response in responses])
    assert outcomes == [(401, "invalid_credentials")] * 3 + [(429, "rate_limited")] * 9


async def test_a_right_password_does_not_count_as_a_failure(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(login_max_failures=3)
    await signup(gateway, "alice")
    for password, status in [(_WRONG, 401), (_WRONG, 401), (_RIGHT, 200), (_WRONG, 401)]:
        assert (await _login(gateway, "alice", password)).status == status
    assert (await _login(gateway, "alice", _WRONG)).status == 429


async def test_unknown_identities_are_limited_alike(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(login_max_failures=2)
    statuses = [(await _login(gateway, "nobody", _WRONG)).status for _ in range(3)]
    assert statuses == [401, 401, 429]


async def test_failures_from_one_ipv6_64_count_together_across_identities(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(login_max_failures_per_ip=3, trusted_proxies="127.0.0.1")
    await signup(gateway, "alice")
    for identity, client in [("a", "2001:db8::1"), ("b", "2001:db8::2"), ("c", "2001:db8::ff")]:
        assert (await _login(gateway, identity, _WRONG, client)).status == 401
    same_64 = await _login(gateway, "alice", _RIGHT, "2001:db8:0:0:ffff:ffff:ffff:ffff")
    assert await error_of(same_64) == (429, "rate_limited")
    assert (await _login(gateway, "alice", _RIGHT, "2001:db8:0:1::1")).status == 200
    assert (await _login(gateway, "alice", _RIGHT, "192.0.2.1")).status == 200


@pytest.mark.parametrize(
    "identity",
    ["a" * 254, "ALICE@EXAMPLE.COM\n", "ÄLİCE ǅ ß", "alice:loginfail:*", " ", "\u202e"],
)
async def test_hostile_identities_are_counted_and_never_a_5xx(
    make_gateway: MakeGateway, identity: str
) -> None:
    gateway = await make_gateway(login_max_failures=1)
    assert (await _login(gateway, identity, _WRONG)).status == 401
    assert (await _login(gateway, identity, _WRONG)).status == 429


async def test_logins_are_not_limited_while_redis_is_down(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(
        login_max_failures=1,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        redis_timeout_seconds=0.2,
    )
    await signup(gateway, "alice")
    statuses = [(await _login(gateway, "alice", _WRONG)).status for _ in range(2)]
    assert statuses == [401, 401]
    assert (await _login(gateway, "alice", _RIGHT)).status == 200


async def test_the_http_limit_counts_an_ipv6_client_per_64(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(rate_limit_requests=1, trusted_proxies="127.0.0.1")

    async def status(client: str) -> int:
        response = await gateway.get("/api/v1/channels", headers={"X-Forwarded-For": client})
        return response.status

    assert await status("2001:db8:aa:bb::1") == 200
    assert await status("2001:db8:aa:bb:1234:5678:9abc:def0") == 429  # same /64
    assert await status("2001:db8:aa:bc::1") == 200  # the next /64
    assert await status("10.0.0.1") == 200
    assert await status("::ffff:10.0.0.1") == 429  # the same IPv4 client
