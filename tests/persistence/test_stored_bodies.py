"""Every chat frame the wire model accepts can be stored: a property over random frames.

The frames are built from the model's shape with any Unicode (control
characters, astral planes, U+0000 now and then), edge numbers and client ids,
encoded as a client would send them and validated as the gateway does. Each
accepted frame's body goes into the ingest stream exactly as the send script
writes it, and the real worker writes it into the suite's PostgreSQL: it must
be stored, nothing dead-lettered, and read back equal.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persistence.worker import Worker
from shared.db.messages import list_messages_after
from shared.errors import AppError
from shared.redis_keys import RedisKeys
from shared.wire import CHAT_FRAME, JS_SAFE_MAX, frame_body, parse_json
from tests.persistence.conftest import SettingsFactory

# Everything but surrogates, which no UTF-8 frame can carry (the model's refusal
# of escaped ones is tested with the gateway); U+0000 included, for the model to refuse.
_ANY_CHAR = st.characters(exclude_categories=["Cs"])
_TEXT = st.text(_ANY_CHAR, min_size=1, max_size=60)
# Past the bound too: the model must refuse what a JSON reader of the body rounds.
_EDGE_SIZES = st.sampled_from(
    [0, 1, 2**31 - 1, 2**31, 2**32, JS_SAFE_MAX, JS_SAFE_MAX + 1, 2**63, 2**64, 2**70]
)
_CLIENT_ID = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)

_TEXT_FRAMES = st.fixed_dictionaries(
    {"type": st.just("text"), "content": _TEXT}, optional={"client_id": _CLIENT_ID}
)
_FILE_FRAMES = st.fixed_dictionaries(
    {
        "type": st.just("file"),
        "file_id": st.text(_ANY_CHAR, min_size=1, max_size=128),
        "filename": st.text(_ANY_CHAR, min_size=1, max_size=255),
        "mime_type": st.from_regex(r"[\w.+-]{1,20}/[\w.+-]{1,20}", fullmatch=True),
        "url": st.builds(lambda path: "https://" + path, st.text(_ANY_CHAR, max_size=100)),
        "size_in_bytes": _EDGE_SIZES | st.integers(min_value=0, max_value=2**70),
    },
    optional={"client_id": _CLIENT_ID},
)
_FRAMES = st.lists(_TEXT_FRAMES | _FILE_FRAMES, min_size=1, max_size=8)

_message_ids = itertools.count(50_000)


@pytest.fixture
async def author_and_channel(pg_pool: asyncpg.Pool) -> tuple[int, int]:
    user_id = await pg_pool.fetchval(
        "INSERT INTO users (name, username, email, password) VALUES ('A', 'a', 'a@x.io', 'x')"
        " RETURNING id"
    )
    channel_id = await pg_pool.fetchval("INSERT INTO channels (name) VALUES ('c') RETURNING id")
    return user_id, channel_id


def _accepted(frames: list[dict[str, Any]], escaped: bool) -> list[tuple[bytes, str | None]]:
    """The stored body and client id of each frame the gateway would accept, sent as
    a client encodes it: non-ASCII as `\\u` escapes (astral ones as pairs) or as UTF-8."""
    kept = []
    for frame in frames:
        try:
            parsed = parse_json(CHAT_FRAME, json.dumps(frame, ensure_ascii=escaped).encode())
        except AppError:
            continue
        kept.append((frame_body(parsed), parsed.client_id))
    return kept


@pytest.mark.parametrize("backend", ["single"], indirect=True)
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=_FRAMES, escaped=st.booleans())
async def test_every_accepted_frame_is_stored_and_reads_back_equal(
    make_settings: SettingsFactory,
    pg_pool: asyncpg.Pool,
    redis: aioredis.Redis,
    author_and_channel: tuple[int, int],
    frames: list[dict[str, Any]],
    escaped: bool,
) -> None:
    user_id, channel_id = author_and_channel
    settings = make_settings(redis_partitions=1)
    keys = RedisKeys(settings.redis_key_prefix, settings.redis_partitions)
    after_seq = await pg_pool.fetchval(
        "SELECT COALESCE(max(seq), 0) FROM messages WHERE channel_id = $1", channel_id
    )
    accepted = _accepted(frames, escaped)
    for offset, (body, client_id) in enumerate(accepted, start=1):
        message_id = next(_message_ids)
        # The fields send.lua writes, the body verbatim as the gateway hands it over.
        await redis.xadd(
            keys.ingest_stream(0),
            {
                b"id": b"%d" % message_id,
                b"channel_id": b"%d" % channel_id,
                b"seq": b"%d" % (after_seq + offset),
                b"user_id": b"%d" % user_id,
                b"client_id": (client_id or "").encode(),
                b"body": body,
                b"ts": b"%d" % (1_750_000_000_000 + message_id),
            },
        )

    assert await Worker(settings, redis=redis, pool=pg_pool).run_until_idle() == len(accepted)

    assert await redis.xlen(keys.dead_letters(0)) == 0
    stored = await list_messages_after(pg_pool, channel_id, after_seq, limit=100)
    assert [(m.body, m.client_id) for m in stored] == [
        (orjson.loads(body), client_id) for body, client_id in accepted
    ]
