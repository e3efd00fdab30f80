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
    return [args.split() for args in _raw_directives(name)]


def _raw_directives(name: str) -> list[str]:
    text = re.sub(r"#[^\n]*", "", NGINX_CONF.read_text(encoding="utf-8"))
    return [args for found, args in _SIMPLE_DIRECTIVE.findall(text) if found == name]


def log_formats() -> dict[str, str]:
    """Each `log_format name 'part' 'part' ...;`: its name and its parts joined."""
    formats: dict[str, str] = {}
    for args in _raw_directives("log_format"):
        name, _, rest = args.strip().partition(" ")
        formats[name] = "".join(re.findall(r"'([^']*)'", rest))
    return formats


def header_values() -> dict[str, str]:
    """Headers set towards the gateways: `proxy_set_header Name value;`."""
    return {args[0].lower(): " ".join(args[1:]) for args in directives("proxy_set_header")}
