"""Wire models: what clients send and the JSON shapes we answer with. No I/O.

Inbound REST bodies and chat frames are pydantic models in strict mode with
unknown fields refused, so a wrong type never gets coerced into something the
sender did not mean. Outbound JSON is built here once, with orjson.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import emoji
import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
)

from shared.errors import InvalidBodyError, InvalidJsonError
from shared.responses import AuthorJson, ReactionJson

if TYPE_CHECKING:
    from shared.db.message_changes import ReactionCount
    from shared.db.messages import StoredMessage

# What Python's `str.strip()` and `str.isspace()` take for space, spelled out:
# `\s` means three different sets to pydantic's Rust regex, to Python and to the
# ECMA 262 regexes JSON Schema (the OpenAPI document) is read with.
_SPACE = r"\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_EMAIL_PATTERN = rf"^[^@{_SPACE}]{{1,64}}@[^@{_SPACE}]+\.[^@{_SPACE}]+$"
_USERNAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
# Printable ASCII without quotes or backslashes: client ids are echoed inside frames.
_CLIENT_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"


# The largest integer JavaScript clients read exactly (Number.MAX_SAFE_INTEGER);
# far inside bigint and what every JSON reader of the stored body holds.
JS_SAFE_MAX = 2**53 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")


def _storable(value: str, info: ValidationInfo) -> str:
    """Refuse what PostgreSQL cannot store: `text` and `jsonb` reject U+0000, and
    no UTF-8 text holds a lone surrogate. Checked before anything reaches Redis,
    so a message is never acknowledged that the worker cannot write.
    """
    if "\x00" in value:
        raise ValueError("must not contain U+0000")
    # Strings parsed from JSON bytes cannot hold a surrogate (the parser refuses
    # them), and the search costs microseconds per KB: only Python input needs it.
    if info.mode != "json" and not value.isascii() and _SURROGATE.search(value):
        raise ValueError("must not contain a lone surrogate")
    return value


# The last annotation of every string of every inbound body and frame. Last, so
# that the constraints before it still apply to the string itself and stay in
# its JSON Schema (the OpenAPI document).
STORABLE = AfterValidator(_storable)


def _http_url(value: str) -> str:
    if not value.startswith(("https://", "http://")):
        raise ValueError("must be an http(s) URL")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


# The `pattern`s in `json_schema_extra` only document what the validators check
# (the OpenAPI document is built from these models); the validators decide.
_HTTP_URL_SCHEMA = {"pattern": "^https?://"}
_NOT_BLANK_SCHEMA = {"pattern": f"[^{_SPACE}]"}

HttpUrl = Annotated[
    str,
    Field(max_length=2048, json_schema_extra=_HTTP_URL_SCHEMA),
    AfterValidator(_http_url),
    STORABLE,
]
Name = Annotated[
    str,
    Field(min_length=1, max_length=100, json_schema_extra=_NOT_BLANK_SCHEMA),
    AfterValidator(_not_blank),
    STORABLE,
]
Username = Annotated[str, Field(min_length=3, max_length=32, pattern=_USERNAME_PATTERN), STORABLE]
Email = Annotated[str, Field(max_length=254, pattern=_EMAIL_PATTERN), STORABLE]
Password = Annotated[str, Field(min_length=8, max_length=128), STORABLE]
ClientId = Annotated[str, Field(pattern=_CLIENT_ID_PATTERN), STORABLE]


def _integral(value: object) -> object:
    """JSON has one number type, and to JSON Schema (so to the OpenAPI document)
    `5.0` is the integer 5: take it as one. `5.5`, `"5"` and `true` stay refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


ChannelId = Annotated[StrictInt, Field(gt=0, le=2**53), BeforeValidator(_integral)]
# A position in a channel's order; 2**53 keeps it exact in JavaScript clients.
Seq = Annotated[StrictInt, Field(ge=0, le=2**53), BeforeValidator(_integral)]
MessageId = Annotated[StrictInt, Field(gt=0, le=2**53), BeforeValidator(_integral)]


def _one_emoji(value: str) -> str:
    """Exactly one emoji of the Unicode emoji list (as the `emoji` library's data has
    it: skin tones and ZWJ sequences included), or a `:shortcode:` of its alias set
    (GitHub and Slack names, `:+1:`, `:thumbs_up:`), which becomes the emoji itself,
    so one reaction is stored and counted under one spelling."""
    if len(value) > 2 and value.startswith(":") and value.endswith(":"):
        value = emoji.emojize(value, language="alias")
    if not emoji.is_emoji(value):
        raise ValueError("must be exactly one emoji, or a :shortcode: of the documented set")
    return value


# The bound comes first: the longest emoji (a ZWJ family with skin tones) is
# under 40 characters, and no shortcode is longer than 64.
Emoji = Annotated[
    str,
    Field(min_length=1, max_length=64, examples=["👍", ":tada:"]),
    AfterValidator(_one_emoji),
    STORABLE,
]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


# --- REST bodies -------------------------------------------------------------


class SignupBody(_Body):
    name: Name
    username: Username
    email: Email
    password: Password
    avatar_url: HttpUrl | None = None


class LoginBody(_Body):
    identity: Annotated[str, Field(min_length=1, max_length=254), STORABLE]
    password: Annotated[str, Field(min_length=1, max_length=128), STORABLE]


class ChangePasswordBody(_Body):
    old_password: Annotated[str, Field(min_length=1, max_length=128), STORABLE]
    new_password: Password


class EditUserBody(_Body):
    name: Name
    username: Username
    email: Email
    avatar_url: HttpUrl | None = None


class NewChannelBody(_Body):
    name: Annotated[
        str,
        Field(min_length=1, max_length=64, json_schema_extra=_NOT_BLANK_SCHEMA),
        AfterValidator(_not_blank),
        STORABLE,
    ]
    description: Annotated[str, Field(max_length=500), STORABLE] = ""
    image_url: HttpUrl | None = None
    private: bool = False  # strict: true or false only


class ChannelRefBody(_Body):
    channel_id: ChannelId


# --- Governance bodies (roles, moderation, invitations, direct messages) ------

UserId = Annotated[StrictInt, Field(gt=0, le=2**53), BeforeValidator(_integral)]
# A mute lasts from a second to a year, a ban with an end up to ten years:
# bounds a schema can state, which keep every end far inside what PostgreSQL
# and JavaScript dates hold.
MAX_MUTE_SECONDS = 365 * 24 * 3600
MAX_BAN_SECONDS = 10 * MAX_MUTE_SECONDS


class UserRefBody(_Body):
    """A target user: a kick, a transfer of ownership, an invitation, a direct message."""

    user_id: UserId


class RoleBody(_Body):
    """`PUT /api/v1/channels/{id}/members/{user_id}/role`: ownership moves by transfer."""

    role: Literal["moderator", "member"]


class BanBody(_Body):
    user_id: UserId
    # None: the ban lasts until it is lifted.
    duration_seconds: (
        Annotated[StrictInt, Field(ge=1, le=MAX_BAN_SECONDS), BeforeValidator(_integral)] | None
    ) = None


class MuteBody(_Body):
    user_id: UserId
    duration_seconds: Annotated[
        StrictInt, Field(ge=1, le=MAX_MUTE_SECONDS), BeforeValidator(_integral)
    ]


class ReadBody(_Body):
    """`PUT /api/v1/channels/{id}/read`: mark the channel read up to `seq`."""

    seq: Seq


# --- Chat frames (client -> server) -------------------------------------------


class TextBody(_Body):
    """A text message's body, as stored (and as an edit gives it)."""

    type: Literal["text"]
    content: Annotated[
        str,
        Field(min_length=1, json_schema_extra=_NOT_BLANK_SCHEMA),
        AfterValidator(_not_blank),
        STORABLE,
    ]


class TextFrame(TextBody):
    """The chat socket's text frame: the body and its transport fields."""

    client_id: ClientId | None = None
    reply_to: MessageId | None = None


class FileBody(_Body):
    """A file message's body, as stored."""

    type: Literal["file"]
    file_id: Annotated[str, Field(min_length=1, max_length=128), STORABLE]
    filename: Annotated[str, Field(min_length=1, max_length=255), STORABLE]
    mime_type: Annotated[
        str, Field(min_length=3, max_length=255, pattern=r"^[\w.+-]+/[\w.+-]+$"), STORABLE
    ]
    url: HttpUrl
    size_in_bytes: Annotated[StrictInt, Field(ge=0, le=JS_SAFE_MAX)]


class FileFrame(FileBody):
    """The chat socket's file frame: the body and its transport fields."""

    client_id: ClientId | None = None
    reply_to: MessageId | None = None


class ReadFrame(_Body):
    """The multiplexed socket's `read` frame: the same as `ReadBody`, for one channel."""

    type: Literal["read"]
    channel_id: ChannelId
    seq: Seq


ChatFrame = Annotated[TextFrame | FileFrame, Field(discriminator="type")]
CHAT_FRAME: TypeAdapter[TextFrame | FileFrame] = TypeAdapter(ChatFrame)


# --- Message changes (REST bodies) --------------------------------------------


class EditBody(_Body):
    """`PATCH /api/v1/channels/{id}/messages/{message_id}`: the message's new body
    (only text messages are editable, into text)."""

    body: TextBody
    client_id: ClientId | None = None


class ReactionBody(_Body):
    """`POST /api/v1/channels/{id}/messages/{message_id}/reactions`."""

    emoji: Emoji
    op: Literal["add", "remove"] = "add"


# --- Multiplexed socket frames (client -> server) ------------------------------


class SubscribeFrame(_Body):
    type: Literal["subscribe"]
    channel_id: ChannelId
    since: Seq | None = None


class UnsubscribeFrame(_Body):
    type: Literal["unsubscribe"]
    channel_id: ChannelId


class SendFrame(_Body):
    type: Literal["send"]
    channel_id: ChannelId
    body: ChatFrame
    client_id: ClientId | None = None
    reply_to: MessageId | None = None


class EditFrame(_Body):
    """Replace a message's body (its author only; a text message, with a text body)."""

    type: Literal["edit"]
    channel_id: ChannelId
    message_id: MessageId
    body: TextBody
    client_id: ClientId | None = None


class DeleteFrame(_Body):
    """Delete a message: its author, or a moderator or owner of the channel, or an admin."""

    type: Literal["delete"]
    channel_id: ChannelId
    message_id: MessageId


ReactionOp = Literal["add", "remove"]


class ReactFrame(_Body):
    type: Literal["react"]
    channel_id: ChannelId
    message_id: MessageId
    emoji: Emoji
    op: ReactionOp = "add"


class TypingFrame(_Body):
    type: Literal["typing"]
    channel_id: ChannelId


_MuxFrames = (
    SubscribeFrame
    | UnsubscribeFrame
    | SendFrame
    | TypingFrame
    | ReadFrame
    | EditFrame
    | DeleteFrame
    | ReactFrame
)
MUX_FRAME: TypeAdapter[_MuxFrames] = TypeAdapter(Annotated[_MuxFrames, Field(discriminator="type")])


def subscribed_frame(channel_id: int, last_seq: int) -> bytes:
    return orjson.dumps({"type": "subscribed", "channel_id": channel_id, "last_seq": last_seq})


def unsubscribed_frame(channel_id: int) -> bytes:
    return orjson.dumps({"type": "unsubscribed", "channel_id": channel_id})


# How long a client shows "typing" after the last typing event of a user.
TYPING_EXPIRES_MS = 5000


_TRANSPORT_FIELDS = {"client_id", "reply_to"}

_Parsed = TypeVar("_Parsed")
# How pydantic's JSON parser words its refusal of a lone surrogate escape
# (`\ud800"`: "unexpected end of hex escape"; `\udc00`: "lone leading surrogate
# in hex escape"); a malformed escape is "invalid escape".
_SURROGATE_ESCAPE = "hex escape"


def parse_json(adapter: TypeAdapter[_Parsed], raw: bytes) -> _Parsed:
    """Validate a JSON body or chat frame.

    Raises InvalidJsonError when `raw` is not JSON, InvalidBodyError (listing
    the fields) when it is JSON that the model refuses.
    """
    try:
        return adapter.validate_json(raw)
    except ValidationError as exc:
        unparsed = [e["msg"] for e in exc.errors() if e["type"] == "json_invalid"]
        if not unparsed:
            raise InvalidBodyError(details=validation_details(exc)) from None
        if not any(_SURROGATE_ESCAPE in message for message in unparsed):
            raise InvalidJsonError() from None
    # pydantic's parser refuses an escaped lone surrogate ("\ud800") as invalid
    # JSON, though JSON's grammar allows it: it is a string we cannot store, so
    # it is refused like one, with its field. Only such refusals get here.
    try:
        value = json.loads(raw.decode(), parse_constant=_not_json)
    except (ValueError, RecursionError):
        raise InvalidJsonError() from None
    try:
        adapter.validate_python(value)
    except ValidationError as exc:
        raise InvalidBodyError(details=validation_details(exc)) from None
    raise InvalidJsonError()  # the lenient parser read more than JSON: never accept that


def _not_json(constant: str) -> object:
    raise ValueError(f"{constant} is not JSON")


# One validator per REST body model, built at its first request.
_BODY_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def body_adapter(model: type[_Parsed]) -> TypeAdapter[_Parsed]:
    """The validator of a REST body model, for `parse_json`."""
    adapter = _BODY_ADAPTERS.get(model)
    if adapter is None:
        adapter = _BODY_ADAPTERS[model] = TypeAdapter(model)
    return adapter


def frame_body(frame: TextBody | FileBody) -> bytes:
    """The stored message body, as JSON: the frame without transport fields."""
    # Serialized straight to JSON by pydantic-core, with no dict in between.
    return frame.__pydantic_serializer__.to_json(frame, exclude=_TRANSPORT_FIELDS)


_FRAME_TAGS = frozenset({"text", "file"})


def validation_details(exc: ValidationError) -> list[dict[str, object]]:
    """The offending fields, safe to show: location, message and error type only.

    For chat frames pydantic prefixes locations with the matched `type` tag
    (`text.content`); clients know the field as `content`, so the tag is dropped.
    """
    return [
        {
            "field": ".".join(
                str(part)
                for index, part in enumerate(err["loc"])
                if not (index == 0 and len(err["loc"]) > 1 and part in _FRAME_TAGS)
            )
            or "body",
            "message": err["msg"],
            "type": err["type"],
        }
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


# --- Outbound JSON ---------------------------------------------------------------


# Naive, so isoformat() writes no offset; a frame says UTC with its `Z`.
_UNIX_EPOCH = dt.datetime(1970, 1, 1)


def iso_from_ms(ms: int) -> str:
    """UTC timestamp with millisecond precision, as the send script formats it."""
    seconds, millis = divmod(ms, 1000)
    # isoformat() is several times faster than strftime, which history pages and the
    # import's recent-history frames pay once per message.
    return f"{(_UNIX_EPOCH + dt.timedelta(seconds=seconds)).isoformat()}.{millis:03d}Z"


def iso_from_datetime(moment: dt.datetime) -> str:
    return iso_from_ms(round(moment.timestamp() * 1000))


def success(message: str, data: object) -> bytes:
    return orjson.dumps({"status": "success", "message": message, "data": data})


def error_envelope(
    code: str, message: str, details: list[dict[str, object]] | None = None
) -> bytes:
    body: dict[str, object] = {"status": "error", "message": message, "data": None, "code": code}
    if details:
        body["errors"] = details
    return orjson.dumps(body)


def error_frame(
    code: str,
    message: str,
    details: list[dict[str, object]] | None = None,
    retry_after: float | None = None,
    *,
    channel_id: int | None = None,
) -> bytes:
    """The socket's error frame: the Go server's shape plus `type` and `code`
    (and, on the multiplexed socket, the `channel_id` it is about)."""
    body: dict[str, object] = {"success": False, "message": message, "type": "error", "code": code}
    if channel_id is not None:
        body["channel_id"] = channel_id
    if details:
        body["errors"] = details
    if retry_after is not None:
        body["retry_after_ms"] = round(retry_after * 1000)
    return orjson.dumps(body)


def ack_frame(
    message_id: int,
    seq: int,
    client_id: str | None,
    *,
    duplicate: bool = False,
    channel_id: int | None = None,
) -> bytes:
    """The sender's acknowledgement; a re-sent `client_id` gets the original's, marked.
    The multiplexed socket's carries `channel_id`."""
    ack: dict[str, object] = {
        "success": True,
        "message": "Message sent successfully",
        "type": "ack",
    }
    if channel_id is not None:
        ack["channel_id"] = channel_id
    ack |= {
        "id": message_id,
        "seq": seq,
        "client_id": client_id,
    }
    if duplicate:
        ack["duplicate"] = True
    return orjson.dumps(ack)


def change_ack_frame(
    channel_id: int,
    message_id: int,
    event_id: int | None,
    seq: int | None,
    *,
    client_id: str | None = None,
    count: int | None = None,
    duplicate: bool = False,
) -> bytes:
    """The multiplexed socket's acknowledgement of an edit, delete or reaction: the
    event's id and seq (null, with `unchanged`, when nothing changed), and a
    reaction's count for its emoji now."""
    ack: dict[str, object] = {
        "success": True,
        "message": "Change applied",
        "type": "ack",
        "channel_id": channel_id,
        "message_id": message_id,
        "id": event_id,
        "seq": seq,
        "client_id": client_id,
    }
    if event_id is None:
        ack["unchanged"] = True
    if count is not None:
        ack["count"] = count
    if duplicate:
        ack["duplicate"] = True
    return orjson.dumps(ack)


_SEQ_MARK = b',"seq":'
_ID_MARK = b'","id":'
# A frame's head (type, id, seq) ends well within this: the longest `type` the
# send script is given is a few dozen bytes.
_HEAD_BYTES = 96
# As in send.lua: id = (ms since 2024-01-01 UTC) << 12 | partition << 5 | counter.
ID_EPOCH_MS = 1_704_067_200_000
ID_TIME_SHIFT = 12
ID_PARTITION_SHIFT = 5
ID_COUNTER_SPAN = 32  # ids per millisecond and partition


_MESSAGE_HEAD = b'{"type":"message",'


def is_message_frame(frame: bytes) -> bool:
    """Whether a frame the send script built is a chat message (not a change event)."""
    return frame.startswith(_MESSAGE_HEAD)


def frame_seq(frame: bytes) -> int:
    """The `seq` of a frame the send script built, without decoding the frame.

    The script writes `seq` right after `type` and `id`, before any user
    content, so the first match is the field. Raises ValueError on anything else.
    """
    start = frame.find(_SEQ_MARK, 0, _HEAD_BYTES)
    if start < 0:
        raise ValueError("not a message frame")
    start += len(_SEQ_MARK)
    return int(frame[start : frame.index(b",", start)])


def frame_id(frame: bytes) -> int:
    """The message id of a frame the send script built (the field after `type`).

    Raises ValueError on anything else.
    """
    start = frame.find(_ID_MARK, 0, _HEAD_BYTES)
    if start < 0:
        raise ValueError("not a message frame")
    start += len(_ID_MARK)
    return int(frame[start : frame.index(b",", start)])


def created_ms_of(message_id: int) -> int:
    """When a message was created (ms since the Unix epoch), read from its id."""
    return (message_id >> ID_TIME_SHIFT) + ID_EPOCH_MS


def author_json(user_id: int, name: str, username: str, avatar_url: str | None) -> AuthorJson:
    """The author as embedded in every message frame: public fields only."""
    return {"id": user_id, "name": name, "username": username, "avatar_url": avatar_url}


def message_tail(
    *,
    user_id: int,
    channel_id: int,
    body: bytes,
    client_id: str | None,
    author: bytes,
    reply_to: int | None = None,
) -> bytes:
    """The part of a message frame known before the send script assigns id, seq and time.

    The script prepends `{"type":<kind>,"id":..,"seq":..,"created_at":"..",`
    (`message_frame` builds the same for stored messages).
    `body` is the JSON the ingest stream stores and `author` is encoded once per
    connection, so both are spliced in as they are, not encoded again. A reply
    carries `reply_to`.
    """
    return b"".join(
        (
            b'"user_id":%d,"channel_id":%d,"body":' % (user_id, channel_id),
            body,
            b',"client_id":',
            orjson.dumps(client_id),
            b"" if reply_to is None else b',"reply_to":%d' % reply_to,
            b',"user":',
            author,
            b"}",
        )
    )


def message_frame(
    *, kind: str, message_id: int, seq: int, created_at_ms: int, tail: bytes
) -> bytes:
    """A frame in the send script's layout: the fields it assigns, then `tail`.

    shared/redis_scripts/send.lua composes live frames the same way, in Lua,
    because id, seq and time are assigned inside the script that publishes the
    frame; this builds the frames of stored messages and change events
    (history, resume, the Go import's recent streams) byte for byte as the
    script would have.
    """
    return b'{"type":"%b","id":%d,"seq":%d,"created_at":"%b",%b' % (
        kind.encode(),
        message_id,
        seq,
        iso_from_ms(created_at_ms).encode(),
        tail,
    )


def stored_message_frame(message: StoredMessage) -> bytes:
    """A persisted message as its live frame, author as their profile is now, in its
    latest version: with `edited_at` once edited, `deleted_at` (and the body `{}`)
    once deleted; `reply_to` for a reply."""
    author = author_json(
        message.user_id, message.user_name, message.user_username, message.user_avatar_url
    )
    tail = message_tail(
        user_id=message.user_id,
        channel_id=message.channel_id,
        body=orjson.dumps(message.body),
        client_id=message.client_id,
        author=orjson.dumps(author),
        reply_to=message.target_id,
    )
    changed: dict[str, str] = {}
    if message.edited_at is not None:
        changed["edited_at"] = iso_from_datetime(message.edited_at)
    if message.deleted_at is not None:
        changed["deleted_at"] = iso_from_datetime(message.deleted_at)
    return message_frame(
        kind="message",
        message_id=message.id,
        seq=message.seq,
        created_at_ms=_ms_of(message.created_at),
        tail=_with_fields(tail, changed) if changed else tail,
    )


# --- Change events (edits, deletes, reactions) ----------------------------------


def change_tail(
    *, kind: str, user_id: int, channel_id: int, message_id: int, payload: bytes
) -> bytes:
    """The part of a change event's frame known before the send script assigns its
    id, seq and time (it prepends `{"type":<kind>,"id":..,"seq":..,"created_at":"..",`).

    `payload` is the event's own fields, JSON members without braces (`"body":{..},
    "client_id":..` for an edit), or empty. A reaction's tail ends open: the send
    script closes it (and the stored body) with the emoji's count after the
    change, `,"count":N}`, which only it knows.
    """
    close = b"" if kind == "reaction" else b"}"
    return b"".join(
        (
            b'"user_id":%d,"channel_id":%d,"message_id":%d' % (user_id, channel_id, message_id),
            b"," if payload else b"",
            payload,
            close,
        )
    )


def edit_payload(body: bytes, client_id: str | None) -> tuple[bytes, bytes]:
    """An edit's stored body and its frame's own fields."""
    return b'{"body":' + body + b"}", b'"body":' + body + b',"client_id":' + orjson.dumps(client_id)


def reaction_payload(op: str, emoji_text: str) -> tuple[bytes, bytes]:
    """A reaction's stored body and frame fields, both left open for the count."""
    fields = b'"op":' + orjson.dumps(op) + b',"emoji":' + orjson.dumps(emoji_text)
    return b"{" + fields, fields


def stored_frame(message: StoredMessage) -> bytes:
    """A persisted row as the live frame it was: a message (in its latest version),
    or a change event, as the send script built it (the count a reaction had then)."""
    if message.kind == "message":
        return stored_message_frame(message)
    body = message.body
    fields = b""
    if message.kind == "message_edited":
        # A deleted message's versions are cleared: the edit replays without content.
        fields = edit_payload(orjson.dumps(body.get("body", {})), message.client_id)[1]
    elif message.kind == "reaction":
        fields = reaction_payload(str(body.get("op")), str(body.get("emoji")))[1]
    tail = change_tail(
        kind=message.kind,
        user_id=message.user_id,
        channel_id=message.channel_id,
        message_id=message.target_id or 0,
        payload=fields,
    )
    if message.kind == "reaction":
        tail += b',"count":' + orjson.dumps(body.get("count", 0)) + b"}"
    return message_frame(
        kind=message.kind,
        message_id=message.id,
        seq=message.seq,
        created_at_ms=_ms_of(message.created_at),
        tail=tail,
    )


def history_item(message: StoredMessage, reactions: list[ReactionCount], reply_count: int) -> bytes:
    """A history item: the message's frame (latest version, or tombstone) with its
    reactions (per emoji, `me` for the caller) and how many readable replies it has."""
    shown: list[ReactionJson] = []
    if message.deleted_at is None:  # a tombstone shows no reactions
        shown = [{"emoji": r.emoji, "count": r.count, "me": r.me} for r in reactions]
    return _with_fields(
        stored_message_frame(message), {"reactions": shown, "reply_count": reply_count}
    )


def _with_fields(obj: bytes, fields: dict[str, Any]) -> bytes:
    """A JSON object's text with `fields` added at its end."""
    return obj[:-1] + b"," + orjson.dumps(fields)[1:]


def _ms_of(moment: dt.datetime) -> int:
    return round(moment.timestamp() * 1000)
