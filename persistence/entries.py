"""The ingest stream's entries: reading replies and parsing the send script's fields.

The contract is the gateway's send script (`shared/redis_scripts/send.lua`):
`id`, `channel_id`, `seq`, `user_id` and `ts` as decimal integers, `body` as
JSON object text, `client_id` with "" meaning none; `kind` (missing: `message`)
and `target_id` (missing or "": none; an event's must be there) for edits,
deletes, reactions and replies.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from shared.db.message_changes import EVENT_KINDS
from shared.db.messages import MESSAGE, MessageRow

_MAX_BIGINT = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Entry:
    """One ingest-stream entry as read, before parsing."""

    stream: str
    entry_id: str
    fields: dict[bytes, bytes]


class MalformedEntryError(ValueError):
    """An entry that does not follow the stream contract; it can never be written."""


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _positive_int(fields: dict[bytes, bytes], name: bytes) -> int:
    raw = fields.get(name)
    if raw is None:
        raise MalformedEntryError(f"missing field {name.decode()}")
    # isdigit() refuses the signs, spaces and underscores that int() would accept.
    if not raw.isdigit() or not 0 < int(raw) <= _MAX_BIGINT:
        raise MalformedEntryError(f"field {name.decode()} is not a positive bigint: {raw[:40]!r}")
    return int(raw)


def parse_entry(fields: dict[bytes, bytes]) -> MessageRow:
    """Turn an entry's fields into a row, or raise MalformedEntryError.

    The contract (the gateway's send script writes it): `id`, `channel_id`,
    `seq`, `user_id` and `ts` (created_at, ms since the epoch, UTC) as decimal
    integers, `body` as JSON object text, `client_id` with "" meaning none,
    `kind` (missing: `message`) and `target_id` (a reply's parent, an event's
    message; required for an event).
    """
    body = fields.get(b"body")
    if body is None:
        raise MalformedEntryError("missing field body")
    try:
        if not isinstance(orjson.loads(body), dict):
            raise MalformedEntryError("body is not a JSON object")
        client_id = fields.get(b"client_id", b"").decode()
    except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedEntryError(f"undecodable body or client_id: {exc}") from None
    kind = fields.get(b"kind", b"message").decode(errors="replace")
    if kind != MESSAGE and kind not in EVENT_KINDS:
        raise MalformedEntryError(f"unknown kind: {kind[:40]!r}")
    target_id = None
    if fields.get(b"target_id", b""):
        target_id = _positive_int(fields, b"target_id")
    elif kind != MESSAGE:
        raise MalformedEntryError(f"a {kind} event without target_id")
    return MessageRow(
        id=_positive_int(fields, b"id"),
        channel_id=_positive_int(fields, b"channel_id"),
        seq=_positive_int(fields, b"seq"),
        user_id=_positive_int(fields, b"user_id"),
        body=body.decode(),
        client_id=client_id or None,
        created_at_ms=_positive_int(fields, b"ts"),
        kind=kind,
        target_id=target_id,
    )


def entries_of(response: object) -> list[Entry]:
    """Flatten an XREADGROUP reply (RESP2 list of pairs, or RESP3 map) into entries."""
    if isinstance(response, dict):
        # RESP3 wraps each stream's entries in one more list.
        pairs = [(stream, items[0]) for stream, items in response.items()]
    elif isinstance(response, list):
        pairs = [(stream, items) for stream, items in response]
    else:
        return []
    return [
        Entry(text(stream), text(entry_id), fields)
        for stream, items in pairs
        for entry_id, fields in items
    ]
