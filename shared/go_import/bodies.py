"""Go message bodies -> the bodies this service stores. No I/O.

Version 1 of the Go schema stored the text alone (`content`); it becomes a
text body. Version 2 stored the send body as received (`body`, JSON), which
the Go server checked loosely. Either way the result must pass the chat
socket's own wire model (`shared.wire.CHAT_FRAME`) and size limit, so history
holds nothing a client could not send today, and tightening those models
tightens the import with them.

A body the models refuse is not dropped: the message keeps its place, author
and time with a placeholder text, and the original is kept in the import's
change log (`go_import_changes`). Unknown fields the Go server let through
are dropped when the rest is valid, which is recorded the same way.

U+0000 and lone surrogates cannot be in a UTF-8 PostgreSQL `text` or `jsonb`
value, so a Go database cannot hold them; a `json` column can hold the
escape `\\u0000`, which `jsonb` refuses. Either is refused here, explicitly,
whatever the wire models say.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from pydantic import TypeAdapter, ValidationError

from shared.wire import (
    CHAT_FRAME,
    ChatFrame,
    FileFrame,
    TextFrame,
    frame_body,
    validation_details,
)

PLACEHOLDER_TEXT = "[This message from the Go server could not be imported]"
_PLACEHOLDER = frame_body(TextFrame(type="text", content=PLACEHOLDER_TEXT)).decode()
# A batch's bodies in one call: the same model, without a Python call per body.
_FRAMES: TypeAdapter[list[TextFrame | FileFrame]] = TypeAdapter(list[ChatFrame])
# UTF-8 takes at most 4 bytes a character: text this short fits whatever it holds.
_MAX_UTF8 = 4


@dataclass(frozen=True, slots=True)
class ConvertedBody:
    body: str  # the stored body, JSON
    change: str | None  # None when copied as it was; else "body_invalid" / "body_fields_dropped"
    reason: str = ""


def convert_body(body: str | None, content: str | None, max_bytes: int) -> ConvertedBody:
    """The stored body for a Go message's `body` (JSON text) or `content` (v1 text)."""
    if body is not None:
        return _from_json(body, max_bytes)
    if content is not None:
        return _checked(_text_frame(content), max_bytes, change=None, scan="\x00" in content)
    return ConvertedBody(_PLACEHOLDER, "body_invalid", "no body and no content")


def plain_bodies(bodies: list[str], max_bytes: int) -> list[str] | None:
    """The bodies themselves when every one is stored as it is (the usual batch);
    None when any needs `convert_body`'s closer look."""
    joined = "[" + ",".join(bodies) + "]"
    if "\\u0000" in joined:
        return None
    try:
        frames = _FRAMES.validate_json(joined)
    except ValidationError:
        return None
    if any(frame.client_id is not None for frame in frames):
        return None
    longest = max(map(len, bodies), default=0)
    if longest * _MAX_UTF8 > max_bytes and any(len(b.encode()) > max_bytes for b in bodies):
        return None
    return bodies


def original_of(body: str | None, content: str | None) -> str:
    """The Go value as the change log keeps it: the JSON, or the text as a JSON string."""
    if body is not None:
        return body
    return "null" if content is None else orjson.dumps(content).decode()


def _text_frame(content: str) -> TextFrame | FileFrame | str:
    try:
        return CHAT_FRAME.validate_python({"type": "text", "content": content})
    except ValidationError as exc:
        return _reason(exc)


def _from_json(body: str, max_bytes: int) -> ConvertedBody:
    try:
        frame = CHAT_FRAME.validate_json(body)
        # Valid as it is: jsonb parses the text again, so it need not be re-encoded.
        # (PostgreSQL's text has spaces the compact form lacks: if it fits, that fits.)
        if frame.client_id is None and "\\u0000" not in body and len(body.encode()) <= max_bytes:
            return ConvertedBody(body, None)
        return _checked(frame, max_bytes, change=None, scan="\\u0000" in body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        extra = [e["loc"][-1] for e in errors if e["type"] == "extra_forbidden" and e["loc"]]
        if len(extra) != len(errors):
            return ConvertedBody(_PLACEHOLDER, "body_invalid", _reason(exc))
    # The Go server accepted fields it did not know; keep the message without them.
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        # pydantic's reader accepts what JSON does not (Infinity, NaN): not a body we store.
        return ConvertedBody(_PLACEHOLDER, "body_invalid", "not valid JSON")
    assert isinstance(value, dict)  # extra_forbidden is only raised for objects
    trimmed = {key: item for key, item in value.items() if key not in set(extra)}
    try:
        frame = CHAT_FRAME.validate_python(trimmed)
    except ValidationError as exc:
        return ConvertedBody(_PLACEHOLDER, "body_invalid", _reason(exc))
    dropped = ", ".join(sorted(str(key) for key in extra))
    return _checked(
        frame, max_bytes, change="body_fields_dropped", reason=f"dropped {dropped}", scan=True
    )


def _checked(
    frame: TextFrame | FileFrame | str,
    max_bytes: int,
    *,
    change: str | None,
    scan: bool,
    reason: str = "",
) -> ConvertedBody:
    """`scan`: look for what PostgreSQL cannot store. A `text` value (v1) cannot hold it
    and JSON holds U+0000 only as the escape `\\u0000` (lone surrogates do not even
    parse), so the scan runs only when that escape is in the JSON text."""
    if isinstance(frame, str):
        return ConvertedBody(_PLACEHOLDER, "body_invalid", frame)
    unstorable = _unstorable(frame) if scan else ""
    if unstorable:
        return ConvertedBody(_PLACEHOLDER, "body_invalid", unstorable)
    stored = frame_body(frame).decode()
    if len(stored.encode()) > max_bytes:
        return ConvertedBody(
            _PLACEHOLDER, "body_invalid", f"{len(stored.encode()):,} bytes, over WS_MAX_BODY_BYTES"
        )
    return ConvertedBody(stored, change, reason)


def _unstorable(frame: TextFrame | FileFrame) -> str:
    for name, value in frame:
        if isinstance(value, str):
            if "\x00" in value:
                return f"{name}: contains U+0000, which PostgreSQL cannot store"
            if not value.isascii():
                try:
                    value.encode()
                except UnicodeEncodeError:
                    return f"{name}: contains a lone surrogate, which PostgreSQL cannot store"
    return ""


def _reason(exc: ValidationError) -> str:
    return "; ".join(f"{d['field']}: {d['message']}" for d in validation_details(exc))
