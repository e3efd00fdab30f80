"""What every REST handler shares: body and parameter parsing, the success
envelope, the caller's identity, and the public JSON shapes of records."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar, cast

import asyncpg
import orjson
from aiohttp import web
from pydantic import BaseModel

from gateway.app_keys import PG_POOL, SETTINGS
from gateway.auth import TokenClaims, bearer_token, check_generation, verify_token
from shared.db import users
from shared.db.message_changes import reaction_counts, reply_counts
from shared.db.messages import StoredMessage
from shared.db.records import Channel, Member, User
from shared.errors import InvalidParameterError
from shared.responses import (
    ChannelJson,
    HistoryMessageJson,
    MemberJson,
    MessageJson,
    MessagePageJson,
    OwnUserJson,
    PublicUserJson,
)
from shared.wire import (
    body_adapter,
    history_item,
    iso_from_datetime,
    parse_json,
    stored_message_frame,
    success,
)

Body = TypeVar("Body", bound=BaseModel)
# The type of a parameter's default: `int`, or `None` when it is optional.
Default = TypeVar("Default", int, None)

# Ids and seqs stay within what JavaScript clients read exactly.
MAX_ID = 2**53
# ASCII digits only: `str.isdigit` and `int` also take other scripts' digits
# (`int("٣") == 3`), and `isdigit` takes superscripts that `int` then refuses.
# The length bound keeps `int()` cheap and far from its 4300-digit limit.
_DIGITS = re.compile(r"[0-9]{1,20}")
# What PostgreSQL text cannot hold. A query string decodes bad UTF-8 to U+FFFD,
# never to a surrogate, but the check is cheap and does not rely on that.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def ok(message: str, data: object, *, status: int = 200) -> web.Response:
    return web.Response(body=success(message, data), status=status, content_type="application/json")


async def read_body(request: web.Request, model: type[Body]) -> Body:
    """Parse and validate a JSON body: InvalidJsonError or InvalidBodyError listing fields."""
    return parse_json(body_adapter(model), await request.read())


@dataclass(frozen=True, slots=True)
class IntParam(Generic[Default]):
    """A non-negative integer parameter of the path or the query string.

    The same object reads the request and documents the parameter in the
    OpenAPI document, so the bounds a client reads are the bounds enforced.
    Only ASCII digits are accepted (no sign, no spaces), within `low..high`.
    """

    name: str
    low: int
    high: int
    default: Default
    description: str

    def parse(self, raw: str) -> int:
        """The value, or InvalidParameterError."""
        if _DIGITS.fullmatch(raw) is None or not self.low <= int(raw) <= self.high:
            raise InvalidParameterError(
                f"{self.name} must be an integer from {self.low} to {self.high}"
            )
        return int(raw)

    def query(self, request: web.Request) -> int | Default:
        """The query parameter; absent or empty means the default."""
        raw = request.query.get(self.name)
        if raw is None or raw == "":
            return self.default
        return self.parse(raw)


@dataclass(frozen=True, slots=True)
class TextParam:
    """A required text parameter of the query string, documented like `IntParam`.

    At most `max_length` characters, at least one of them not whitespace, and
    storable text (no U+0000), or InvalidParameterError. The value is returned
    as sent.
    """

    name: str
    max_length: int
    description: str

    # The same rule as JSON Schema, for the OpenAPI document.
    PATTERN: ClassVar[str] = "^[^\\x00]*[^\\x00\\s][^\\x00]*$"

    def query(self, request: web.Request) -> str:
        value = request.query.get(self.name, "")
        if (
            len(value) > self.max_length
            or value.isspace()
            or not value
            or _UNSTORABLE.search(value)
        ):
            raise InvalidParameterError(
                f"{self.name} must be 1 to {self.max_length} characters, not all whitespace, "
                "without U+0000"
            )
        return value


def id_param(name: str) -> IntParam[None]:
    """The one kind of path parameter: a row id from 1 to 2^53."""
    return IntParam(name, 1, MAX_ID, None, f"The {name.replace('_', ' ')}: 1 to 2^53.")


def path_id(request: web.Request, name: str) -> int:
    return id_param(name).parse(request.match_info[name])


LIMIT = IntParam("limit", 1, 500, 100, "Items per page.")
OFFSET = IntParam("offset", 0, MAX_ID, 0, "Items to skip.")
PAGE = (LIMIT, OFFSET)


def page(request: web.Request) -> tuple[int, int]:
    """`limit` and `offset` for list endpoints."""
    return LIMIT.query(request), OFFSET.query(request)


async def caller(request: web.Request) -> TokenClaims:
    """The authenticated caller: MissingTokenError (400), or InvalidTokenError (401)
    for a bad, expired or revoked token or a user who no longer exists.

    Revocation costs one primary-key read of PostgreSQL per authenticated request
    (see `gateway.auth`): PostgreSQL is what every gateway reads, so a log-out is
    seen everywhere at once, with no cache to keep coherent.
    """
    claims = verify_token(request.app[SETTINGS], bearer_token(request))
    check_generation(claims, await users.token_generation(request.app[PG_POOL], claims.user_id))
    return claims


def user_public(user: User) -> PublicUserJson:
    """What anyone may see of a user: never the e-mail, role or hash."""
    return {
        "id": user.id,
        "name": user.name,
        "username": user.username,
        "avatar_url": user.avatar_url,
        "created_at": iso_from_datetime(user.created_at),
    }


def user_private(user: User) -> OwnUserJson:
    """The user as they see themselves."""
    return {**user_public(user), "email": user.email, "role": user.role}


def channel_json(channel: Channel) -> ChannelJson:
    return {
        "id": channel.id,
        "name": channel.name,
        "description": channel.description,
        "image_url": channel.image_url,
        "created_at": iso_from_datetime(channel.created_at),
        "kind": channel.kind,
        "private": channel.private,
    }


def member_json(member: Member) -> MemberJson:
    return {
        "id": member.user_id,
        "name": member.name,
        "username": member.username,
        "avatar_url": member.avatar_url,
        "role": member.role,
        "joined_at": iso_from_datetime(member.joined_at),
    }


def message_page(found: Sequence[StoredMessage], next_cursor: int | None) -> MessagePageJson:
    """A page of stored messages (history, search) in the live frames' exact shape."""
    return {
        # Each message is its frame's bytes, spliced in by orjson as they are: the
        # page has the exact shape of the live frames, built by the same function.
        "messages": [cast("MessageJson", orjson.Fragment(stored_message_frame(m))) for m in found],
        "next_cursor": next_cursor,
    }


async def history_items(
    pool: asyncpg.Pool[asyncpg.Record], found: list[StoredMessage], caller_id: int
) -> list[HistoryMessageJson]:
    """History items for a page of messages: their reactions (with `me` for the
    caller) and reply counts, two statements for the whole page."""
    ids = [message.id for message in found]
    reactions = await reaction_counts(pool, ids, caller_id)
    replies = await reply_counts(pool, ids)
    # Each item is its frame's bytes (plus the two fields), spliced in by orjson as
    # they are: the same function builds resume frames and history.
    return [
        cast(
            "HistoryMessageJson",
            orjson.Fragment(history_item(m, reactions.get(m.id, []), replies.get(m.id, 0))),
        )
        for m in found
    ]
