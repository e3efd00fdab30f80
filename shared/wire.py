"""Wire models: what clients send and the JSON shapes we answer with. No I/O.

Inbound REST bodies and chat frames are pydantic models in strict mode with
unknown fields refused, so a wrong type never gets coerced into something the
sender did not mean. Outbound JSON is built here once, with orjson.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    TypeAdapter,
    ValidationError,
)

if TYPE_CHECKING:
    from shared.db.messages import StoredMessage

_EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$"
_USERNAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
# Printable ASCII without quotes or backslashes: client ids are echoed inside frames.
_CLIENT_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"


def _http_url(value: str) -> str:
    if not value.startswith(("https://", "http://")):
        raise ValueError("must be an http(s) URL")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


HttpUrl = Annotated[str, Field(max_length=2048), AfterValidator(_http_url)]
Name = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_not_blank)]
Username = Annotated[str, Field(min_length=3, max_length=32, pattern=_USERNAME_PATTERN)]
Email = Annotated[str, Field(max_length=254, pattern=_EMAIL_PATTERN)]
Password = Annotated[str, Field(min_length=8, max_length=128)]
ChannelId = Annotated[StrictInt, Field(gt=0, le=2**53)]


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
    identity: Annotated[str, Field(min_length=1, max_length=254)]
    password: Annotated[str, Field(min_length=1, max_length=128)]


class ChangePasswordBody(_Body):
    old_password: Annotated[str, Field(min_length=1, max_length=128)]
    new_password: Password


class EditUserBody(_Body):
    name: Name
    username: Username
    email: Email
    avatar_url: HttpUrl | None = None


class NewChannelBody(_Body):
    name: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_not_blank)]
    description: Annotated[str, Field(max_length=500)] = ""
    image_url: HttpUrl | None = None


class ChannelRefBody(_Body):
    channel_id: ChannelId


# --- Chat frames (client -> server) -------------------------------------------


class TextFrame(_Body):
    type: Literal["text"]
    content: Annotated[str, Field(min_length=1), AfterValidator(_not_blank)]
    client_id: Annotated[str, Field(pattern=_CLIENT_ID_PATTERN)] | None = None


class FileFrame(_Body):
    type: Literal["file"]
    file_id: Annotated[str, Field(min_length=1, max_length=128)]
    filename: Annotated[str, Field(min_length=1, max_length=255)]
    mime_type: Annotated[str, Field(min_length=3, max_length=255, pattern=r"^[\w.+-]+/[\w.+-]+$")]
    url: HttpUrl
    size_in_bytes: Annotated[StrictInt, Field(ge=0)]
    client_id: Annotated[str, Field(pattern=_CLIENT_ID_PATTERN)] | None = None


ChatFrame = Annotated[TextFrame | FileFrame, Field(discriminator="type")]
CHAT_FRAME: TypeAdapter[TextFrame | FileFrame] = TypeAdapter(ChatFrame)


_TRANSPORT_FIELDS = {"client_id"}


def frame_body(frame: TextFrame | FileFrame) -> bytes:
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
) -> bytes:
    """The socket's error frame: the Go server's shape plus `type` and `code`."""
    body: dict[str, object] = {"success": False, "message": message, "type": "error", "code": code}
    if details:
        body["errors"] = details
    if retry_after is not None:
        body["retry_after_ms"] = round(retry_after * 1000)
    return orjson.dumps(body)


def ack_frame(
    message_id: int, seq: int, client_id: str | None, *, duplicate: bool = False
) -> bytes:
    """The sender's acknowledgement; a re-sent `client_id` gets the original's, marked."""
    ack: dict[str, object] = {
        "success": True,
        "message": "Message sent successfully",
        "type": "ack",
        "id": message_id,
        "seq": seq,
        "client_id": client_id,
    }
    if duplicate:
        ack["duplicate"] = True
    return orjson.dumps(ack)


_SEQ_MARK = b',"seq":'
_ID_START = len(b'{"type":"message","id":')
# As in send.lua: id = (ms since 2024-01-01 UTC) << 12 | partition << 5 | counter.
ID_EPOCH_MS = 1_704_067_200_000
ID_TIME_SHIFT = 12
ID_PARTITION_SHIFT = 5
ID_COUNTER_SPAN = 32  # ids per millisecond and partition


def frame_seq(frame: bytes) -> int:
    """The `seq` of a message frame the send script built, without decoding the frame.

    The script writes `seq` right after `id`, before any user content, so the
    first match is the field. Raises ValueError on anything else.
    """
    start = frame.find(_SEQ_MARK, 0, 64)
    if start < 0:
        raise ValueError("not a message frame")
    start += len(_SEQ_MARK)
    return int(frame[start : frame.index(b",", start)])


def frame_created_ms(frame: bytes) -> int:
    """When a message frame was created (ms since the Unix epoch), read from its id."""
    message_id = int(frame[_ID_START : frame.index(b",", _ID_START)])
    return (message_id >> ID_TIME_SHIFT) + ID_EPOCH_MS


def author_json(user_id: int, name: str, username: str, avatar_url: str | None) -> dict[str, Any]:
    """The author as embedded in every message frame: public fields only."""
    return {"id": user_id, "name": name, "username": username, "avatar_url": avatar_url}


def message_tail(
    *, user_id: int, channel_id: int, body: bytes, client_id: str | None, author: bytes
) -> bytes:
    """The part of a message frame known before the send script assigns id, seq and time.

    The script prepends `{"type":"message","id":..,"seq":..,"created_at":"..",`.
    `body` is the JSON the ingest stream stores and `author` is encoded once per
    connection, so both are spliced in as they are, not encoded again.
    """
    return b"".join(
        (
            b'"user_id":%d,"channel_id":%d,"body":' % (user_id, channel_id),
            body,
            b',"client_id":',
            orjson.dumps(client_id),
            b',"user":',
            author,
            b"}",
        )
    )


def message_json(
    *,
    message_id: int,
    seq: int,
    channel_id: int,
    user_id: int,
    body: dict[str, Any],
    client_id: str | None,
    created_at: str,
    author: dict[str, Any],
) -> dict[str, Any]:
    """A stored message in exactly the live frame's shape (history, resume)."""
    return {
        "type": "message",
        "id": message_id,
        "seq": seq,
        "created_at": created_at,
        "user_id": user_id,
        "channel_id": channel_id,
        "body": body,
        "client_id": client_id,
        "user": author,
    }


def stored_message_json(message: StoredMessage) -> dict[str, Any]:
    """A persisted message in the live frame's shape, author as their profile is now."""
    return message_json(
        message_id=message.id,
        seq=message.seq,
        channel_id=message.channel_id,
        user_id=message.user_id,
        body=message.body,
        client_id=message.client_id,
        created_at=iso_from_datetime(message.created_at),
        author=author_json(
            message.user_id, message.user_name, message.user_username, message.user_avatar_url
        ),
    )
