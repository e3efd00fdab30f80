"""`GET /api/v1/openapi.json`: the OpenAPI 3.1 document, generated, never written by hand.

`build_document(app)` walks the router once at start-up. Each route's handler
carries a `RouteDoc` (`gateway.api.docs`); bodies and the envelope's `data`
get their JSON Schemas (2020-12, what OpenAPI 3.1 uses) from the pydantic
models and TypedDicts in `shared.wire` and `shared.responses`, all under
`components`. Error statuses come from `ERROR_TABLE`: each response lists the
codes it can carry. A route without a `RouteDoc` stops the build, so an
undocumented route cannot ship.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, cast

import orjson
from aiohttp import hdrs, web
from pydantic import TypeAdapter
from pydantic.json_schema import JsonSchemaMode

from gateway.api.common import TextParam, id_param
from gateway.api.docs import Auth, QueryParam, Raw, RouteDoc, doc_of, documented
from gateway.app_keys import OPENAPI, OpenApiDocument
from gateway.middlewares import is_unlimited
from shared.errors import ERROR_TABLE, ErrorCode
from shared.responses import ErrorEnvelope, SuccessEnvelope

PATH = "/api/v1/openapi.json"

_REF = "#/components/schemas/{model}"
# Methods every route has without declaring them: HEAD for each GET, and the
# CORS preflights aiohttp-cors adds.
_IMPLICIT_METHODS = frozenset({hdrs.METH_HEAD, hdrs.METH_OPTIONS})
_PATH_PARAMETER = re.compile(r"\{(\w+)")
_JSON = "application/json"
_BODILESS = frozenset({101, 204, 304})
# The document changes only with a deploy: clients see a new one within five
# minutes, and the ETag makes checking for it cheap.
_CACHE_SECONDS = 300

_HEADERS: dict[str, dict[str, object]] = {
    "X-Request-ID": {
        "description": "The request's id, echoed from the request or generated; also in the logs.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
    },
    "Retry-After": {
        "description": "Seconds until the rate-limit window ends.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    },
    "X-RateLimit-Limit": {
        "description": "Requests allowed per window (sent while the HTTP limit is on).",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Remaining": {
        "description": "Requests left in this window.",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Reset": {
        "description": "Seconds until this window ends.",
        "schema": {"type": "integer"},
    },
}
_RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
_REQUEST_ID_PARAMETER = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "description": "Echoed back if it is 1-64 characters of [A-Za-z0-9._-]; otherwise one is made.",
    "schema": {"type": "string"},
}
_SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    # The chat socket's credentials, checked after the upgrade (browsers cannot set
    # headers on a WebSocket). The third, the `bearer` subprotocol, has no scheme.
    "queryToken": {"type": "apiKey", "in": "query", "name": "token"},
    "queryTicket": {
        "type": "apiKey",
        "in": "query",
        "name": "ticket",
        "description": "Single-use, from `POST /api/v1/auth/ws-ticket`.",
    },
}
_SECURITY: dict[Auth, list[dict[str, list[str]]]] = {
    Auth.REQUIRED: [{"bearerAuth": []}],
    Auth.OPTIONAL: [{}, {"bearerAuth": []}],
    Auth.QUERY: [{"queryToken": []}, {"queryTicket": []}],
}
_DESCRIPTION = """\
Real-time group chat: REST for accounts and channels, a WebSocket per channel
for messages. Every answer except `GET /`, `/metrics` and this document is the
envelope `{status, message, data}`; errors add a stable `code` (listed with each
response) and, for `invalid_body`, `errors`: one `{field, message, type}` per
offending field. Routes not listed here answer `404 route_not_found`, other
methods `405 method_not_allowed` with `Allow`. The README has the wire
protocol of the socket and every error and close code.
"""


class UndocumentedRouteError(Exception):
    """The router holds routes whose handlers carry no `@documented(...)`."""


@documented(
    "This document (OpenAPI 3.1)",
    raw=Raw(_JSON, {"type": "object", "required": ["openapi", "paths", "components"]}),
    storage=False,
    responses={304: "Not modified: the `If-None-Match` ETag is current."},
)
async def openapi_json(request: web.Request) -> web.Response:
    """Built once at start-up; cacheable, with an ETag."""
    document = request.app[OPENAPI]
    headers = {"ETag": f'"{document.etag}"', "Cache-Control": f"public, max-age={_CACHE_SECONDS}"}
    if any(tag.value in (document.etag, "*") for tag in request.if_none_match or ()):
        return web.Response(status=304, headers=headers)
    return web.Response(body=document.body, content_type=_JSON, headers=headers)


def build_document(app: web.Application) -> OpenApiDocument:
    """The document for every route of `app`; UndocumentedRouteError names the routes without
    a declaration, ValueError a repeated operation id."""
    routes: list[tuple[str, str, web.AbstractRoute, RouteDoc]] = []
    undocumented: list[str] = []
    for route in app.router.routes():
        if route.method in _IMPLICIT_METHODS:
            continue
        path = route.resource.canonical if route.resource is not None else "?"
        doc = doc_of(route.handler)
        if doc is None:
            undocumented.append(f"{route.method} {path} ({_handler_name(route)})")
        else:
            routes.append((route.method, path, route, doc))
    if undocumented:
        raise UndocumentedRouteError(
            "routes without @documented(...) on their handler: " + ", ".join(undocumented)
        )
    components = _Components()
    paths: dict[str, dict[str, object]] = defaultdict(dict)
    operation_ids: set[str] = set()
    for method, path, route, doc in routes:
        operation_id = route.handler.__name__
        if operation_id in operation_ids:
            raise ValueError(f"two routes share the handler name {operation_id}")
        operation_ids.add(operation_id)
        paths[path][method.lower()] = _operation(operation_id, path, route, doc, components)
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "Chat Group Server",
            "version": importlib.metadata.version("chat-group-server"),
            "description": _DESCRIPTION,
        },
        "tags": _tags(route for _, _, route, _ in routes),
        "paths": dict(paths),
        "components": components.resolve(),
    }
    body = orjson.dumps(document)
    return OpenApiDocument(body=body, etag=hashlib.sha256(body).hexdigest()[:32])


class _Components:
    """What operations refer to. Schemas are collected first and asked of pydantic all at
    once, so a type several operations use is one entry under `components/schemas`."""

    def __init__(self) -> None:
        self._inputs: list[tuple[str, JsonSchemaMode, TypeAdapter[Any]]] = []
        self._refs: dict[str, dict[str, object]] = {}
        self._responses: dict[str, dict[str, object]] = {}
        self._success = self.schema("success", SuccessEnvelope, "serialization")
        self._error = self.schema("error", ErrorEnvelope, "serialization")

    def schema(self, key: str, type_: object, mode: JsonSchemaMode) -> dict[str, object]:
        """The type's schema: a placeholder, filled (usually with a `$ref`) by `resolve`."""
        placeholder: dict[str, object] = {}
        self._inputs.append((key, mode, TypeAdapter(cast(Any, type_))))
        self._refs[key] = placeholder
        return placeholder

    def success(self, data: dict[str, object]) -> dict[str, object]:
        return {"allOf": [self._success], "properties": {"data": data}}

    def error_response(self, status: int, codes: list[ErrorCode]) -> dict[str, object]:
        """A `$ref` to the response of an error envelope with one of `codes`."""
        name = "-or-".join(codes)
        limit_headers = ("Retry-After", *_RATE_HEADERS) if status == 429 else ()
        self._responses[name] = {
            "description": "; ".join(f"`{code}`: {ERROR_TABLE[code].message}" for code in codes),
            "headers": _header_refs("X-Request-ID", *limit_headers),
            "content": {
                _JSON: {
                    "schema": {
                        "allOf": [self._error],
                        "properties": {"code": {"enum": [str(code) for code in codes]}},
                    }
                }
            },
        }
        return {"$ref": f"#/components/responses/{name}"}

    def resolve(self) -> dict[str, object]:
        """Fill every schema placeholder; the document's `components`."""
        refs, definitions = TypeAdapter.json_schemas(self._inputs, ref_template=_REF)
        for (key, _mode), schema in refs.items():
            self._refs[key].update(schema)
        return {
            "schemas": definitions.get("$defs", {}),
            "responses": dict(sorted(self._responses.items())),
            "parameters": {"X-Request-ID": _REQUEST_ID_PARAMETER},
            "headers": _HEADERS,
            "securitySchemes": _SECURITY_SCHEMES,
        }


def _operation(
    operation_id: str,
    path: str,
    route: web.AbstractRoute,
    doc: RouteDoc,
    components: _Components,
) -> dict[str, object]:
    names = _PATH_PARAMETER.findall(path)
    path_parameters = [id_param(name) for name in names if name not in doc.path]
    operation: dict[str, object] = {
        "operationId": operation_id,
        "summary": doc.summary,
        "tags": [_tag(route)],
        "parameters": [
            *(_parameter(param, "path") for param in path_parameters),
            *(_string_parameter(name, doc.path[name]) for name in names if name in doc.path),
            *(_parameter(param, "query") for param in doc.query),
            {"$ref": "#/components/parameters/X-Request-ID"},
        ],
        "responses": _responses(operation_id, path, doc, bool(path_parameters), components),
    }
    if doc.description:
        operation["description"] = doc.description
    if doc.body is not None:
        body = components.schema(f"{operation_id}.body", doc.body, "validation")
        operation["requestBody"] = {"required": True, "content": {_JSON: {"schema": body}}}
    if doc.auth in _SECURITY:
        operation["security"] = _SECURITY[doc.auth]
    return operation


def _parameter(param: QueryParam, where: str) -> dict[str, object]:
    if isinstance(param, TextParam):
        return {
            "name": param.name,
            "in": where,
            "required": True,
            "description": f"{param.description} Not all whitespace; U+0000 is refused.",
            "schema": {"type": "string", "maxLength": param.max_length, "pattern": param.PATTERN},
        }
    schema: dict[str, object] = {"type": "integer", "minimum": param.low, "maximum": param.high}
    if param.default is not None:
        schema["default"] = param.default
    if where == "path":
        return {
            "name": param.name,
            "in": where,
            "required": True,
            "description": f"{param.description} ASCII digits only.",
            "schema": schema,
        }
    return {
        "name": param.name,
        "in": where,
        "required": False,
        "description": f"{param.description} ASCII digits only; empty means the default.",
        "allowEmptyValue": True,
        "schema": schema,
    }


def _string_parameter(name: str, schema: Mapping[str, object]) -> dict[str, object]:
    return {"name": name, "in": "path", "required": True, "schema": dict(schema)}


def _responses(
    operation_id: str,
    path: str,
    doc: RouteDoc,
    has_path_parameters: bool,
    components: _Components,
) -> dict[str, object]:
    limited = not is_unlimited(path)
    headers = _header_refs("X-Request-ID", *(_RATE_HEADERS if limited else ()))
    success: dict[str, object] = {"description": doc.summary, "headers": headers}
    if doc.raw is not None:
        success["content"] = {doc.raw.media_type: {"schema": dict(doc.raw.schema)}}
    elif doc.status not in _BODILESS:
        data = components.schema(f"{operation_id}.data", doc.data, "serialization")
        success["content"] = {_JSON: {"schema": components.success(data)}}
    responses: dict[int, object] = {doc.status: success}
    for status, description in doc.responses.items():
        responses[status] = {"description": description, "headers": headers}
    by_status: dict[int, list[ErrorCode]] = defaultdict(list)
    for code in _error_codes(doc, limited, has_path_parameters):
        by_status[ERROR_TABLE[code].status].append(code)
    for status, codes in by_status.items():
        responses[status] = components.error_response(status, codes)
    return {str(status): responses[status] for status in sorted(responses)}


def _error_codes(doc: RouteDoc, limited: bool, has_path_parameters: bool) -> list[ErrorCode]:
    """What the route declares, and what follows from its shape, in the table's order."""
    codes = {error.code for error in doc.errors}
    if doc.body is not None:
        codes |= {ErrorCode.INVALID_JSON, ErrorCode.INVALID_BODY, ErrorCode.PAYLOAD_TOO_LARGE}
    if has_path_parameters or doc.query:
        codes.add(ErrorCode.INVALID_PARAMETER)
    if has_path_parameters:  # a segment the route's pattern refuses (empty) matches no route
        codes.add(ErrorCode.ROUTE_NOT_FOUND)
    if doc.auth in (Auth.REQUIRED, Auth.OPTIONAL):
        codes |= {ErrorCode.MISSING_TOKEN, ErrorCode.INVALID_TOKEN}
    if limited:
        codes.add(ErrorCode.RATE_LIMITED)
    if doc.storage:
        codes.add(ErrorCode.UNAVAILABLE)
    return [code for code in ErrorCode if code in codes]


def _header_refs(*names: str) -> dict[str, object]:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


def _handler_name(route: web.AbstractRoute) -> str:
    handler = route.handler
    return f"{handler.__module__}.{handler.__qualname__}"


def _tag(route: web.AbstractRoute) -> str:
    """Operations are grouped by the module of their handler: `auth`, `channels`, `chat`, ..."""
    return route.handler.__module__.rsplit(".", 1)[-1]


def _tags(routes: Iterable[web.AbstractRoute]) -> list[dict[str, str]]:
    """Each tag described by the first line of its module's docstring."""
    tags: dict[str, str] = {}
    for route in routes:
        module = sys.modules[route.handler.__module__]
        tags[_tag(route)] = (module.__doc__ or "").strip().splitlines()[0]
    return [{"name": name, "description": tags[name]} for name in sorted(tags)]
