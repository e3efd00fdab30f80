"""Sign-up, log-in, tokens, `me` and password changes over real HTTP."""

from __future__ import annotations

import datetime as dt
import warnings
from typing import Any

import asyncpg
import bcrypt
import jwt
import pytest
from aiohttp.test_utils import TestClient

from tests.gateway.api_client import error_of, signup


@pytest.fixture
def secret(make_settings: Any) -> str:
    value: str = make_settings().jwt_secret.get_secret_value()
    return value


async def test_signup_returns_hs256_token_with_go_claims(gateway: TestClient[Any, Any]) -> None:
    account = await signup(gateway, "alice")
    claims = jwt.decode(account.token, options={"verify_signature": False})
    header = jwt.get_unverified_header(account.token)
    assert header["alg"] == "HS256"
    assert claims["user_id"] == account.user_id
    assert claims["username"] == "alice"
    assert claims["sub"] == str(account.user_id)
    lifetime = claims["exp"] - claims["iat"]
    assert lifetime == 72 * 3600


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [("username", "ALICE", "username_taken"), ("email", "Alice@Example.com", "email_taken")],
)
async def test_signup_refuses_duplicates_case_insensitively(
    gateway: TestClient[Any, Any], field: str, value: str, code: str
) -> None:
    await signup(gateway, "alice")
    body = {"name": "A", "username": "other", "email": "other@example.com", "password": "12345678"}
    response = await gateway.post("/api/v1/auth/signup", json={**body, field: value})
    assert await error_of(response) == (409, code)


async def test_signup_lists_every_invalid_field(gateway: TestClient[Any, Any]) -> None:
    body = {"name": "", "username": "a b", "email": "nope", "password": "short"}
    response = await gateway.post("/api/v1/auth/signup", json=body)
    assert await error_of(response) == (422, "invalid_body")
    fields = {error["field"] for error in (await response.json())["errors"]}
    assert fields == {"name", "username", "email", "password"}


@pytest.mark.parametrize("name", [b'"Al\\u0000ice"', b'"Al\\ud800ice"'])
async def test_signup_refuses_a_string_postgres_cannot_store(
    gateway: TestClient[Any, Any], pg_pool: asyncpg.Pool, name: bytes
) -> None:
    """Regression: a name holding U+0000 reached PostgreSQL, which refuses it in
    `text` (500 internal); a lone surrogate was refused as malformed JSON."""
    body = b'{"name": %b, "username": "alice", "email": "a@example.com", "password": "12345678"}'
    response = await gateway.post(
        "/api/v1/auth/signup", data=body % name, headers={"Content-Type": "application/json"}
    )
    assert await error_of(response) == (422, "invalid_body")
    assert [error["field"] for error in (await response.json())["errors"]] == ["name"]
    assert await pg_pool.fetchval("SELECT count(*) FROM users") == 0


async def test_signup_refuses_wrong_types_without_coercion(gateway: TestClient[Any, Any]) -> None:
    body = {"name": "A", "username": "alice", "email": "a@example.com", "password": 12345678}
    response = await gateway.post("/api/v1/auth/signup", json=body)
    assert await error_of(response) == (422, "invalid_body")


async def test_malformed_json_is_400(gateway: TestClient[Any, Any]) -> None:
    response = await gateway.post(
        "/api/v1/auth/signup", data=b'{"name": ', headers={"Content-Type": "application/json"}
    )
    assert await error_of(response) == (400, "invalid_json")


async def test_oversized_body_is_413(gateway: TestClient[Any, Any]) -> None:
    response = await gateway.post("/api/v1/auth/signup", data=b"x" * (70 * 1024))
    assert await error_of(response) == (413, "payload_too_large")


@pytest.mark.parametrize("identity", ["alice", "ALICE", "alice@example.com"])
async def test_login_by_username_or_email(
    gateway: TestClient[Any, Any], identity: str, secret: str
) -> None:
    account = await signup(gateway, "alice")
    response = await gateway.post(
        "/api/v1/auth/login", json={"identity": identity, "password": "correct horse"}
    )
    assert response.status == 200
    token = (await response.json())["data"]
    assert jwt.decode(token, secret, algorithms=["HS256"])["user_id"] == account.user_id


@pytest.mark.parametrize("identity", ["alice", "nobody"])
async def test_login_refuses_wrong_password_or_unknown_user_alike(
    gateway: TestClient[Any, Any], identity: str
) -> None:
    await signup(gateway, "alice")
    response = await gateway.post(
        "/api/v1/auth/login", json={"identity": identity, "password": "wrong horse"}
    )
    assert await error_of(response) == (401, "invalid_credentials")


async def test_go_bcrypt_hash_logs_in_and_is_upgraded_to_argon2id(
    gateway: TestClient[Any, Any], pg_pool: asyncpg.Pool
) -> None:
    go_hash = bcrypt.hashpw(b"legacy pass", bcrypt.gensalt(prefix=b"2a")).decode()
    assert go_hash.startswith("$2a$")
    await pg_pool.execute(
        "INSERT INTO users (name, username, email, password) VALUES ('Go', 'gopher', 'g@x.io', $1)",
        go_hash,
    )
    response = await gateway.post(
        "/api/v1/auth/login", json={"identity": "gopher", "password": "legacy pass"}
    )
    assert response.status == 200
    stored = await pg_pool.fetchval("SELECT password FROM users WHERE username = 'gopher'")
    assert stored.startswith("$argon2id$")


@pytest.mark.parametrize("stored", ["plain text", "$unknown$abc", "$2a$04$short", ""])
async def test_a_stored_hash_in_no_known_format_refuses_login_without_a_500(
    gateway: TestClient[Any, Any], pg_pool: asyncpg.Pool, stored: str
) -> None:
    await pg_pool.execute(
        "INSERT INTO users (name, username, email, password) VALUES ('Odd', 'odd', 'o@x.io', $1)",
        stored,
    )
    response = await gateway.post(
        "/api/v1/auth/login", json={"identity": "odd", "password": "plain text"}
    )
    assert await error_of(response) == (401, "invalid_credentials")
    # Nothing was rewritten: a reset is what lets the account in.
    assert await pg_pool.fetchval("SELECT password FROM users WHERE username = 'odd'") == stored


async def test_passwords_are_stored_as_argon2id(
    gateway: TestClient[Any, Any], pg_pool: asyncpg.Pool
) -> None:
    await signup(gateway, "alice")
    stored = await pg_pool.fetchval("SELECT password FROM users WHERE username = 'alice'")
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored


async def test_me_returns_own_user_with_email(gateway: TestClient[Any, Any]) -> None:
    account = await signup(gateway, "alice")
    response = await gateway.get("/api/v1/auth/me", headers=account.auth)
    data = (await response.json())["data"]
    assert data["id"] == account.user_id
    assert data["email"] == "alice@example.com"
    assert "password" not in data


async def test_me_without_token_is_400_missing_token(gateway: TestClient[Any, Any]) -> None:
    response = await gateway.get("/api/v1/auth/me")
    assert await error_of(response) == (400, "missing_token")
    body = await response.json()
    assert body["message"] == "Missing or malformed JWT"


def _hs512(claims: dict[str, Any], secret: str) -> str:
    """A token signed with the right secret but another algorithm (algorithm confusion)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(claims, secret, "HS512")


def _forged_tokens(user_id: int, secret: str) -> dict[str, str]:
    now = dt.datetime.now(dt.UTC)
    good = {"user_id": user_id, "username": "alice", "exp": now + dt.timedelta(hours=1)}
    header = jwt.utils.base64url_encode(b'{"alg":"none","typ":"JWT"}').decode()
    payload = jwt.utils.base64url_encode(
        b'{"user_id":%d,"username":"alice","exp":9999999999}' % user_id
    ).decode()
    return {
        "other_secret": jwt.encode(good, "not-the-secret-" + "1" * 32, "HS256"),
        "expired": jwt.encode({**good, "exp": now - dt.timedelta(seconds=1)}, secret, "HS256"),
        "alg_none": f"{header}.{payload}.",
        "hs512": _hs512(good, secret),
        "no_exp": jwt.encode({"user_id": user_id, "username": "alice"}, secret, "HS256"),
        "bool_user": jwt.encode({**good, "user_id": True}, secret, "HS256"),
        "string_gen": jwt.encode({**good, "gen": "0"}, secret, "HS256"),
        "negative_gen": jwt.encode({**good, "gen": -1}, secret, "HS256"),
        "later_gen": jwt.encode({**good, "gen": 1}, secret, "HS256"),
        "garbage": "not.a.jwt",
    }


@pytest.mark.parametrize(
    "kind",
    [
        "other_secret",
        "expired",
        "alg_none",
        "hs512",
        "no_exp",
        "bool_user",
        "string_gen",
        "negative_gen",
        "later_gen",
        "garbage",
    ],
)
async def test_forged_or_expired_tokens_are_401(
    gateway: TestClient[Any, Any], kind: str, secret: str
) -> None:
    account = await signup(gateway, "alice")
    token = _forged_tokens(account.user_id, secret)[kind]
    response = await gateway.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert await error_of(response) == (401, "invalid_token")
    assert (await response.json())["message"] == "Invalid or expired JWT"


async def test_change_password_requires_the_old_one(gateway: TestClient[Any, Any]) -> None:
    account = await signup(gateway, "alice")
    response = await gateway.put(
        "/api/v1/auth/change-password",
        json={"old_password": "wrong horse", "new_password": "battery staple"},
        headers=account.auth,
    )
    assert await error_of(response) == (403, "wrong_password")


async def test_change_password_replaces_the_password(gateway: TestClient[Any, Any]) -> None:
    account = await signup(gateway, "alice")
    response = await gateway.put(
        "/api/v1/auth/change-password",
        json={"old_password": "correct horse", "new_password": "battery staple"},
        headers=account.auth,
    )
    assert response.status == 200
    old = await gateway.post(
        "/api/v1/auth/login", json={"identity": "alice", "password": "correct horse"}
    )
    new = await gateway.post(
        "/api/v1/auth/login", json={"identity": "alice", "password": "battery staple"}
    )
    assert old.status == 401
    assert new.status == 200
