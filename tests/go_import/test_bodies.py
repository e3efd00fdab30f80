"""Go message bodies -> stored bodies: every input is copied, trimmed or replaced by
the placeholder, never refused by PostgreSQL and never an exception."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.go_import.bodies import PLACEHOLDER_TEXT, convert_body, plain_bodies
from shared.wire import CHAT_FRAME

LIMIT = 10_240
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
_BODY_LIKE = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "file", "sticker"])},
    optional={
        "content": st.text(),
        "file_id": st.text(),
        "filename": st.text(),
        "mime_type": st.text(),
        "url": st.text(),
        "size_in_bytes": _JSON,
        "client_id": st.text(),
        "extra": _JSON,
    },
)


def _stored(body: str) -> object:
    frame = CHAT_FRAME.validate_json(body)  # what is stored passes the wire model again
    return orjson.loads(body) if frame else None


@given(st.one_of(_JSON, _BODY_LIKE))
def test_any_v2_body_becomes_a_body_the_wire_model_accepts(value: object) -> None:
    converted = convert_body(json.dumps(value), None, LIMIT)
    _stored(converted.body)
    if converted.change is None:
        assert orjson.loads(converted.body) == value


@given(st.text())
def test_any_v1_text_becomes_a_text_body_or_the_placeholder(content: str) -> None:
    converted = convert_body(None, content, LIMIT)
    body = _stored(converted.body)
    expected = content if content.strip() and "\x00" not in content else PLACEHOLDER_TEXT
    assert body == {"type": "text", "content": expected}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"type": "text", "content": "a\\u0000b"}', "U+0000"),  # a `json` column holds it
        ('{"type": "text", "content": "a\\ud800b"}', "Invalid JSON"),  # a lone surrogate
        ('{"type": "text", "content": "' + "x" * LIMIT + '"}', "WS_MAX_BODY_BYTES"),
        ('{"type": "text", "content": "' + "é" * (LIMIT // 2) + '"}', "WS_MAX_BODY_BYTES"),
        ('{"type": "text", "content": "hi", "client_id": "bad id"}', "client_id"),
    ],
)
def test_what_postgresql_or_the_socket_would_refuse_is_replaced(body: str, reason: str) -> None:
    converted = convert_body(body, None, LIMIT)
    assert converted.change == "body_invalid"
    assert reason in converted.reason
    assert orjson.loads(converted.body) == {"type": "text", "content": PLACEHOLDER_TEXT}


def test_a_literal_backslash_u0000_is_text_and_kept() -> None:
    converted = convert_body('{"type": "text", "content": "\\\\u0000"}', None, LIMIT)
    assert converted.change is None
    assert orjson.loads(converted.body) == {"type": "text", "content": "\\u0000"}


def test_unknown_fields_are_dropped_and_reported() -> None:
    converted = convert_body('{"type": "text", "content": "hi", "mood": 1}', None, LIMIT)
    assert (converted.change, converted.reason) == ("body_fields_dropped", "dropped mood")
    assert orjson.loads(converted.body) == {"type": "text", "content": "hi"}


@settings(max_examples=60)
@given(value=st.one_of(_JSON, _BODY_LIKE))
def test_every_stored_body_is_accepted_by_jsonb(value: object, database_dsn: str) -> None:
    converted = convert_body(json.dumps(value), None, LIMIT)

    async def cast() -> object:
        conn = await asyncpg.connect(database_dsn)
        try:
            return await conn.fetchval("SELECT $1::text::jsonb", converted.body)
        finally:
            await conn.close()

    assert asyncio.run(cast()) is not None


def test_a_batch_of_plain_bodies_passes_as_it_is_and_any_exception_sends_it_row_by_row() -> None:
    plain = ['{"type": "text", "content": "a"}', '{"type": "text", "content": "b"}']
    assert plain_bodies(plain, LIMIT) == plain
    for odd in (
        '{"type": "text", "content": " "}',  # refused
        '{"type": "text", "content": "c", "client_id": "c-1"}',  # a transport field
        '{"type": "text", "content": "\\u0000"}',  # U+0000
        '{"type": "text", "content": "' + "é" * (LIMIT // 2) + '"}',  # too large in bytes
    ):
        assert plain_bodies([*plain, odd], LIMIT) is None
