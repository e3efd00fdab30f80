"""What `chat-group up` hands the processes it starts."""

from __future__ import annotations

from shared.cli import LOCAL_RATE_LIMIT_REQUESTS, service_env
from shared.settings import Settings

_CONNECTION = {"DATABASE_URL": "postgresql://x", "REDIS_URL": "redis://y", "JWT_SECRET": "s" * 32}


def _settings() -> Settings:
    return Settings(jwt_secret="s" * 32, port=4100)


def test_local_browsers_share_127_0_0_1_so_up_raises_the_http_rate_limit() -> None:
    env = service_env({"PATH": "/bin"}, _settings(), _CONNECTION)
    assert env["RATE_LIMIT_REQUESTS"] == str(LOCAL_RATE_LIMIT_REQUESTS)
    assert "http://127.0.0.1:4100" in env["ALLOWED_ORIGINS"].split(",")
    assert env["PATH"] == "/bin"
    assert env["DATABASE_URL"] == "postgresql://x"


def test_what_the_caller_sets_wins_over_local_defaults() -> None:
    environ = {"RATE_LIMIT_REQUESTS": "10", "ALLOWED_ORIGINS": "https://chat.example"}
    env = service_env(environ, _settings(), _CONNECTION)
    assert env["RATE_LIMIT_REQUESTS"] == "10"
    assert env["ALLOWED_ORIGINS"] == "https://chat.example"
