"""Opening a raw RESP connection to one Redis node, for the gateway's hot paths.

The send path (`gateway.pipelined_redis`) and the pub/sub links
(`gateway.subscriber`) speak RESP through an asyncio protocol fed by hiredis
instead of redis-py's stream connection: a reply then costs one parser call,
with no stream reader, no task wake-up and no timeout object of its own. Both
reach the node the same way, from the same `REDIS_URL` (TCP, TLS for
`rediss://`, or a unix socket), and log in the same way.

TLS is set up exactly as redis-py sets up its own connections for the same
URL, by redis-py's own code: its URL parser reads the `ssl_*` options
(`ssl_cert_reqs`, `ssl_ca_certs`, `ssl_ca_path`, `ssl_ca_data`, `ssl_certfile`,
`ssl_keyfile`, `ssl_password`, `ssl_check_hostname`, `ssl_min_version`,
`ssl_ciphers`, ...) and its `SSLConnection` builds the context, so these
connections verify the server (and present a client certificate) as the
command client does. Like redis-py, the host name is checked against the
URL's host.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import ResponseError

Arg = str | bytes | int
Options = dict[str, Any]
P = TypeVar("P", bound=asyncio.Protocol)


_TLS = "tls"  # where `url_options` keeps the context, never a key redis-py's parser yields


def url_options(url: str) -> Options:
    """The URL's connection options, its TLS context built once, here.

    Raises ValueError for a malformed URL or TLS options on a `redis://` URL, and
    what redis-py raises for a bad TLS option (RedisError) or an unreadable
    certificate file (OSError, ssl.SSLError): at start, not at the first connection.
    """
    options: Options = dict(parse_url(url))
    tls_options = {name: options.pop(name) for name in list(options) if name.startswith("ssl_")}
    if options.get("connection_class") is SSLConnection:
        options[_TLS] = tls_context(tls_options)
    elif tls_options:
        raise ValueError(f"{', '.join(sorted(tls_options))}: TLS options need a rediss:// URL")
    return options


def tls_context(tls_options: Options) -> ssl.SSLContext:
    """The context redis-py's SSLConnection builds from these `ssl_*` options."""
    context: ssl.SSLContext = SSLConnection(**tls_options).ssl_context.get()
    return context


async def open_connection(options: Options, factory: Callable[[], P]) -> P:
    """Connect (the caller bounds the time); raises OSError (ssl.SSLError included)."""
    loop = asyncio.get_running_loop()
    if "path" in options:
        _, protocol = await loop.create_unix_connection(factory, options["path"])
    else:
        _, protocol = await loop.create_connection(
            factory,
            options.get("host", "localhost"),
            options.get("port", 6379),
            ssl=options.get(_TLS),
        )
    return protocol


async def log_in(options: Options, call: Callable[[tuple[Arg, ...]], Awaitable[Any]]) -> None:
    """AUTH and SELECT as the URL asks, each awaited; an error reply raises ResponseError."""
    password = options.get("password")
    if password:
        username = options.get("username")
        await call(("AUTH", username, password) if username else ("AUTH", password))
    db = int(options.get("db") or 0)
    if db:
        await call(("SELECT", db))


def settle(future: asyncio.Future[Any], reply: Any) -> None:
    """Hand a reply to the call waiting for it: an error reply raises there. The
    reply of a call whose caller gave up (its future cancelled) is dropped."""
    if future.done():
        return
    if isinstance(reply, ResponseError):
        future.set_exception(reply)
    else:
        future.set_result(reply)
