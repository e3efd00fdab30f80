"""The frame parser and the timestamp format, checked over arbitrary input."""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from collections.abc import Callable

import orjson
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.wire import (
    CHAT_FRAME,
    JS_SAFE_MAX,
    ChannelRefBody,
    ReadBody,
    ReadFrame,
    SignupBody,
    TextFrame,
    frame_body,
    iso_from_datetime,
    iso_from_ms,
    validation_details,
)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)
FRAME_LIKE = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "file", "video", 1, None])},
    optional={
        "content": JSON_VALUES,
        "client_id": JSON_VALUES,
        "file_id": JSON_VALUES,
        "filename": JSON_VALUES,
        "mime_type": JSON_VALUES,
        "url": JSON_VALUES,
        "size_in_bytes": JSON_VALUES,
    },
)


def _refusal(parse: Callable[[], object]) -> list[dict[str, object]] | None:
    """None when accepted; the field list when refused. Any other exception escapes."""
    try:
        parse()
    except ValidationError as exc:
        return validation_details(exc)
    return None


@given(st.binary(max_size=200))
def test_any_bytes_are_accepted_or_refused_with_details(payload: bytes) -> None:
    details = _refusal(lambda: CHAT_FRAME.validate_json(payload))
    assert details is None or all(isinstance(detail["field"], str) for detail in details)


@given(FRAME_LIKE)
def test_frame_like_objects_never_raise_anything_else(candidate: dict[str, object]) -> None:
    details = _refusal(lambda: CHAT_FRAME.validate_python(candidate))
    if details is None:
        assert CHAT_FRAME.validate_python(candidate).type == candidate["type"]
    else:
        assert details


@given(FRAME_LIKE)
def test_stored_body_is_the_frame_as_json_without_its_client_id(
    candidate: dict[str, object],
) -> None:
    if _refusal(lambda: CHAT_FRAME.validate_python(candidate)) is not None:
        return
    body = frame_body(CHAT_FRAME.validate_python(candidate))
    expected = {key: value for key, value in candidate.items() if key != "client_id"}
    assert orjson.loads(body) == expected
    assert body == orjson.dumps(expected)  # compact, in the frame's field order


# Any code point, lone surrogates included: what a Python caller could hand the model.
_ANY_TEXT = st.text(st.characters(exclude_categories=[]), min_size=1, max_size=20)
STORABLE_CANDIDATES = st.fixed_dictionaries(
    {"type": st.just("text"), "content": _ANY_TEXT}
) | st.fixed_dictionaries(
    {
        "type": st.just("file"),
        "file_id": _ANY_TEXT,
        "filename": _ANY_TEXT,
        "mime_type": st.sampled_from(["a/b", "a/\x00", "\ud800/b"]),
        "url": st.builds(lambda rest: "https://" + rest, _ANY_TEXT),
        "size_in_bytes": st.integers(min_value=0, max_value=2**70),
    }
)


@given(STORABLE_CANDIDATES)
def test_accepted_frames_hold_only_what_postgres_stores(candidate: dict[str, object]) -> None:
    if _refusal(lambda: CHAT_FRAME.validate_python(candidate)) is not None:
        return
    body = frame_body(CHAT_FRAME.validate_python(candidate))
    strings = [value for value in candidate.values() if isinstance(value, str)]
    assert not any("\x00" in value for value in strings)
    assert all(value.encode() for value in strings)  # no lone surrogate: UTF-8 holds them
    assert orjson.loads(body).get("size_in_bytes", 0) <= JS_SAFE_MAX


def _with_seq(seq: object, **fields: object) -> bytes:
    """`{"seq": seq, ...}` as JSON, by the standard library: orjson refuses integers
    past 64 bits, which a hostile client can send."""
    return json.dumps({"seq": seq, **fields}).encode()


@given(st.one_of(JSON_VALUES, st.integers(min_value=-(2**70), max_value=2**70)))
@example(0)
@example(2**53)
@example(2**53 + 1)
@example(-1)
@example(2**64)
@example(True)
@example(1.0)
@example(1.5)
@example(2.0**53 + 2)
@example("1")
def test_a_read_seq_is_an_integer_from_0_to_2_53_and_nothing_else(seq: object) -> None:
    """Only integers in range are accepted (`5.0` is 5, as in JSON Schema), never a
    fraction, bool or string coerced into one; anything else is refused with details,
    not another exception."""
    integral = type(seq) is int or (type(seq) is float and seq.is_integer())
    accepted = integral and 0 <= seq <= 2**53
    body = _refusal(lambda: ReadBody.model_validate_json(_with_seq(seq)))
    frame = _refusal(
        lambda: ReadFrame.model_validate_json(_with_seq(seq, type="read", channel_id=1))
    )
    assert (body is None) == (frame is None) == accepted, (seq, body, frame)


def test_text_frame_keeps_content_exactly() -> None:
    frame = CHAT_FRAME.validate_json(b'{"type": "text", "content": " hi\\n", "client_id": "c-1"}')
    assert frame == TextFrame(type="text", content=" hi\n", client_id="c-1")


@given(st.integers(min_value=0, max_value=2**41 + 1_704_067_200_000))
def test_iso_from_ms_round_trips(ms: int) -> None:
    text = iso_from_ms(ms)
    assert len(text) == 24
    assert text.endswith("Z")
    parsed = dt.datetime.fromisoformat(text)
    assert round(parsed.timestamp() * 1000) == ms
    assert iso_from_datetime(parsed) == text


def test_an_integral_number_is_an_integer_id() -> None:
    """Regression (schemathesis): `{"channel_id": 5.0}` is an integer to JSON Schema,
    so to the OpenAPI document, and was refused."""
    assert ChannelRefBody.model_validate_json(b'{"channel_id": 5.0}').channel_id == 5
    for refused in (b"5.5", b'"5"', b"true", b"0.0", b"1e300"):
        body = b'{"channel_id": %s}' % refused
        assert _refusal(lambda body=body: ChannelRefBody.model_validate_json(body)), refused


_SPACES = [chr(point) for point in range(sys.maxunicode + 1) if chr(point).isspace()]


def test_names_and_emails_refuse_every_space_their_schema_pattern_refuses() -> None:
    """Regression (schemathesis): the schema said `\\S` and the check was `str.strip()`,
    which differ on U+0085 and U+001C-U+001F; `\\s` also differs between pydantic's
    Rust regex and the ECMA 262 regexes JSON Schema is read with."""
    properties = SignupBody.model_json_schema()["properties"]
    not_blank = re.compile(properties["name"]["pattern"])
    email = re.compile(properties["email"]["pattern"])
    valid = {"name": "A", "username": "abc", "email": "a@b.co", "password": "12345678"}
    for space in _SPACES:
        assert not_blank.search(space) is None, hex(ord(space))
        assert email.search(f"a{space}b@example.com") is None, hex(ord(space))
        for field, value in (("name", space), ("email", f"a{space}b@example.com")):
            body = orjson.dumps({**valid, field: value})
            assert _refusal(lambda body=body: SignupBody.model_validate_json(body)), (field, space)
    assert _refusal(lambda: SignupBody.model_validate_json(orjson.dumps(valid))) is None
    for pattern in (properties["name"]["pattern"], properties["email"]["pattern"]):
        assert not re.search(r"\\[sSdDwW]", pattern), "a class shorthand differs by dialect"
