"""Cross-cutting request handling: request ids, the error envelope, rate limits and
the client address they count against.

Order, outermost first: request id -> errors -> rate limit. The error
middleware is the only place an error response is built: typed `AppError`s,
aiohttp's own HTTP errors and pydantic failures become the one envelope with a
stable `code`; anything unexpected is logged once and answered `500 internal`
with no detail.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web
from redis.exceptions import RedisError

from gateway.app_keys import KEYS, METRICS, SCRIPTS, SETTINGS
from gateway.outages import DEPENDENCY_ERRORS
from shared.errors import (
    AppError,
    MethodNotAllowedError,
    OriginNotAllowedError,
    PayloadTooLargeError,
    RateLimitedError,
    RouteNotFoundError,
    UnavailableError,
)
from shared.log import request_id_var
from shared.settings import Settings
from shared.wire import error_envelope

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Probes and the liveness page must never be throttled. Nor the web client's
# static files: they cost no storage, and a page's dozen files would otherwise
# spend a client's whole window before it could sign in.
UNLIMITED_PATHS = frozenset({"/", "/healthz", "/readyz", "/metrics", "/app"})
_UNLIMITED_PREFIX = "/app/"


def is_unlimited(path: str) -> bool:
    """Whether requests to `path` are outside the HTTP rate limit."""
    return path in UNLIMITED_PATHS or path.startswith(_UNLIMITED_PREFIX)


# aiohttp's own refusals, in the envelope. aiohttp-cors answers a refused
# preflight (no Origin, or one not allowed) with 403.
_HTTP_ERRORS: dict[int, type[AppError]] = {
    403: OriginNotAllowedError,
    404: RouteNotFoundError,
    405: MethodNotAllowedError,
    413: PayloadTooLargeError,
}
# Headers of aiohttp's refusals that belong in the envelope's answer:
# RFC 9110 requires `Allow` on a 405.
_KEPT_HEADERS = ("Allow",)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get("X-Request-ID", "")
    request_id = incoming if _REQUEST_ID_PATTERN.match(incoming) else uuid.uuid4().hex
    token = request_id_var.set(request_id)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers["X-Request-ID"] = request_id
        raise
    finally:
        request_id_var.reset(token)
    if not response.prepared:
        response.headers["X-Request-ID"] = request_id
    return response


def error_response(exc: AppError) -> web.Response:
    response = web.Response(
        body=error_envelope(exc.code, exc.message, exc.details),
        status=exc.status,
        content_type="application/json",
    )
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    response.headers.update(exc.headers)
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AppError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        mapped = _HTTP_ERRORS.get(exc.status)
        if mapped is None:
            raise
        kept = {name: exc.headers[name] for name in _KEPT_HEADERS if name in exc.headers}
        return error_response(mapped(headers=kept))
    except DEPENDENCY_ERRORS as exc:
        log.warning("dependency unavailable", extra={"error": type(exc).__name__})
        return error_response(UnavailableError())
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return error_response(AppError())


def client_ip(request: web.Request, settings: Settings) -> str:
    """The caller's address; X-Forwarded-For is believed only from trusted proxies.

    Walks the chain from the right, skipping trusted proxies, so a client cannot
    pick its own address by sending the header itself.
    """
    peer = request.remote or "unknown"
    if not settings.trusted_proxies:
        return peer
    chain = [peer]
    forwarded = request.headers.get("X-Forwarded-For", "")
    chain = [part.strip() for part in forwarded.split(",") if part.strip()] + chain
    for candidate in reversed(chain):
        try:
            address = ipaddress.ip_address(candidate)
        except ValueError:
            return candidate
        if not any(address in network for network in settings.trusted_proxies):
            return candidate
    return chain[0]


# One IPv6 client usually holds a whole /64 (SLAAC, privacy addresses): limits
# per address would give it 2**64 budgets. Its limits count per /64 instead.
_IPV6_CLIENT_PREFIX = 64


def client_key(request: web.Request, settings: Settings) -> str:
    """Who rate limits count against: the client IP, an IPv6 one as its /64 network
    (`2001:db8:1:2::/64`), an IPv4-mapped IPv6 one as the IPv4 address."""
    client = client_ip(request, settings)
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, _IPV6_CLIENT_PREFIX), strict=False))
    return client


class _RateLimitState:
    """Logs a broker outage once, not once per request."""

    redis_down_logged = False


def _route_path(request: web.Request) -> str:
    """The path of the route that matched (`/app/js/{module}`), not the one sent: a path
    that only starts like an unlimited one (`/app/../api/...`) must not escape the limit.
    A request no route matched has no path here, so it is counted."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else ""


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    limit = settings.rate_limit_requests
    if limit == 0 or is_unlimited(_route_path(request)) or request.method == "OPTIONS":
        return await handler(request)
    window_ms = settings.rate_limit_window_seconds * 1000
    window = int(time.time() * 1000) // window_ms
    key = request.app[KEYS].http_rate(client_key(request, settings), window)
    try:
        count, reset_ms = await request.app[SCRIPTS].http_rate(keys=[key], args=[window_ms])
        _RateLimitState.redis_down_logged = False
    except (RedisError, OSError):
        # Fail open: a broker outage must not take the REST API down with it.
        if not _RateLimitState.redis_down_logged:
            log.warning("rate limiter unavailable, requests are not limited")
            _RateLimitState.redis_down_logged = True
        return await handler(request)
    reset_seconds = max(1, -(-int(reset_ms) // 1000))
    headers = {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(max(0, limit - int(count))),
        "X-RateLimit-Reset": str(reset_seconds),
    }
    if int(count) > limit:
        request.app[METRICS].http_rate_limited.inc()
        raise RateLimitedError(retry_after=reset_seconds, headers=headers)
    response = await handler(request)
    if not response.prepared:
        response.headers.update(headers)
    return response
