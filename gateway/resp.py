"""Opening a raw RESP connection to one Redis node, for the gateway's hot paths.

The send path (`gateway.pipelined_redis`) and the pub/sub links
(`gateway.subscriber`) speak RESP through an asyncio protocol fed by hiredis
instead of redis-py's stream connection: a reply then costs one parser call,
with no stream reader, no task wake-up and no timeout object of its own. Both
reach the node the same way, from the same `REDIS_URL` (TCP, TLS for
`rediss://`, or a unix socket), and log in the same way.
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


def url_options(url: str) -> Options:
    return dict(parse_url(url))


async def open_connection(options: Options, factory: Callable[[], P]) -> P:
    """Connect (the caller bounds the time); raises OSError."""
    loop = asyncio.get_running_loop()
    if "path" in options:
        _, protocol = await loop.create_unix_connection(factory, options["path"])
    else:
        tls = (
            ssl.create_default_context()
            if options.get("connection_class") is SSLConnection
            else None
        )
        _, protocol = await loop.create_connection(
            factory, options.get("host", "localhost"), options.get("port", 6379), ssl=tls
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
