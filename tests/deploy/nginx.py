"""A reader of deploy/nginx.conf's simple directives (`name args;`), comments dropped.

Enough for the facts the tests check; `nginx -t` checks the syntax itself.
"""

from __future__ import annotations

import re

from tests.deploy.manifests import DEPLOY

NGINX_CONF = DEPLOY / "nginx.conf"

_SIMPLE_DIRECTIVE = re.compile(r"^\s*([a-z_0-9]+)\s+([^;{}]*);", re.M)


def directives(name: str) -> list[list[str]]:
    """The arguments of every `name ...;` directive in the file, in order."""
    text = re.sub(r"#[^\n]*", "", NGINX_CONF.read_text(encoding="utf-8"))
    return [args.split() for found, args in _SIMPLE_DIRECTIVE.findall(text) if found == name]


def header_values() -> dict[str, str]:
    """Headers set towards the gateways: `proxy_set_header Name value;`."""
    return {args[0].lower(): " ".join(args[1:]) for args in directives("proxy_set_header")}
