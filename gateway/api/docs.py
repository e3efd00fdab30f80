"""What each route promises, declared next to its handler.

`@documented(...)` attaches a `RouteDoc` to a handler: its body model, the
type of the envelope's `data`, its query parameters, the errors it raises
itself, and who may call it. `gateway.api.openapi` builds the OpenAPI document
from the router and these declarations, and adds what follows from them (a
body can be malformed, too large or invalid; a token missing or bad; any
route under the rate limit can answer 429), so a declaration lists only what
is particular to its route. A route without one fails the document's build.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from gateway.api.common import IntParam, TextParam
from shared.errors import AppError

Handler = TypeVar("Handler", bound=Callable[[web.Request], Awaitable[web.StreamResponse]])

_ATTRIBUTE = "__route_doc__"
# A query parameter: the object the handler reads it with documents it too.
QueryParam = IntParam[Any] | TextParam


class Auth(StrEnum):
    """Who may call a route."""

    NONE = "none"  # anyone; no token is read
    OPTIONAL = "optional"  # anyone, but a token that is sent must be valid
    REQUIRED = "required"  # `Authorization: Bearer <jwt>`
    QUERY = "query"  # the chat socket's: `?token=`, `?ticket=` or the `bearer` subprotocol


@dataclass(frozen=True, slots=True)
class Raw:
    """A response outside the envelope: its media type and JSON Schema."""

    media_type: str
    schema: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class RouteDoc:
    summary: str
    description: str
    data: object  # the type of the envelope's `data` (a TypedDict, `str`, `None`, `list[...]`)
    raw: Raw | None  # set when the answer is not the envelope
    status: int
    body: type[BaseModel] | None
    query: tuple[QueryParam, ...]
    errors: tuple[type[AppError], ...]
    auth: Auth
    storage: bool  # reads PostgreSQL or Redis, so answers 503 during their outage
    responses: Mapping[int, str] = field(default_factory=dict)  # other statuses, no body
    # JSON Schemas of path parameters that are not row ids (those are the default)
    path: Mapping[str, Mapping[str, object]] = field(default_factory=dict)


def documented(
    summary: str,
    *,
    description: str = "",
    data: object = None,
    raw: Raw | None = None,
    status: int = 200,
    body: type[BaseModel] | None = None,
    query: tuple[QueryParam, ...] = (),
    errors: tuple[type[AppError], ...] = (),
    auth: Auth = Auth.NONE,
    storage: bool = True,
    responses: Mapping[int, str] | None = None,
    path: Mapping[str, Mapping[str, object]] | None = None,
) -> Callable[[Handler], Handler]:
    """Declare what a handler's route promises; see `RouteDoc`. The handler is unchanged."""
    doc = RouteDoc(
        summary=summary,
        description=description,
        data=data,
        raw=raw,
        status=status,
        body=body,
        query=query,
        errors=errors,
        auth=auth,
        storage=storage,
        responses=dict(responses or {}),
        path=dict(path or {}),
    )

    def attach(handler: Handler) -> Handler:
        setattr(handler, _ATTRIBUTE, doc)
        return handler

    return attach


def doc_of(handler: object) -> RouteDoc | None:
    """The handler's declaration, or None for an undocumented one."""
    doc = getattr(handler, _ATTRIBUTE, None)
    return doc if isinstance(doc, RouteDoc) else None
