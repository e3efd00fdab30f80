"""`GET /api/v1/search`: full-text search over the caller's channels only, newest first,
paged by message id, with every query value a client can send answered by a page or a
documented refusal."""

from __future__ import annotations

import itertools
from typing import Any
from urllib.parse import quote

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient

from gateway.api.search import SEARCH_QUERY_MAX_CHARS
from persistence.worker import Worker
from shared.db.messages import MessageRow, insert_messages
from shared.settings import Settings
from tests.gateway import api_client as api
from tests.gateway.api_client import Account, create_channel, error_of, signup

# Ids and seqs of rows written straight with the worker's insert: above anything the
# socket tests in the same database could have stored.
_IDS = itertools.count(10**12)


async def _store(
    pool: asyncpg.Pool[asyncpg.Record], channel_id: int, user_id: int, *texts: str
) -> list[int]:
    """Write text messages as the worker does; their ids, oldest first."""
    start = await pool.fetchval(
        "SELECT COALESCE(max(seq), 0) FROM messages WHERE channel_id = $1", channel_id
    )
    rows = [
        MessageRow(
            id=next(_IDS),
            channel_id=channel_id,
            seq=start + number,
            user_id=user_id,
            body=orjson.dumps({"type": "text", "content": text}).decode(),
            client_id=None,
            created_at_ms=1_700_000_000_000 + number,
        )
        for number, text in enumerate(texts, start=1)
    ]
    await insert_messages(pool, rows)
    return [row.id for row in rows]


async def _search(client: TestClient[Any, Any], account: Account, query: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/search?{query}", headers=account.auth)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["message"] == "messages found"
    data: dict[str, Any] = body["data"]
    return data


def _ids(page: dict[str, Any]) -> list[int]:
    return [message["id"] for message in page["messages"]]


async def _found(client: TestClient[Any, Any], account: Account, q: str) -> list[int]:
    """The ids of the first page of a search for `q` (percent-encoded here)."""
    return _ids(await _search(client, account, "q=" + quote(q)))


@pytest.fixture
async def alice(gateway: TestClient[Any, Any]) -> Account:
    return await signup(gateway, "alice")


async def test_a_sent_message_is_found_in_the_live_frames_shape(
    make_gateway: Any, make_settings: Any, pg_pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    gateway = await make_gateway()
    alice = await signup(gateway, "alice")
    channel_id = await create_channel(gateway, alice, "general")
    ws = await api.connect(gateway, alice, channel_id)
    await ws.send_str(orjson.dumps({"type": "text", "content": "Lunch at noon?"}).decode())
    live = await api.receive_until(ws, "message")
    settings: Settings = make_settings()
    assert await Worker(settings, pool=pg_pool).run_until_idle() == 1

    page = await _search(gateway, alice, "q=lunch")

    assert page == {"messages": [live], "next_cursor": None}


async def test_matches_come_newest_first_across_the_callers_channels(
    gateway: TestClient[Any, Any], alice: Account, pg_pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    first = await create_channel(gateway, alice, "first")
    second = await create_channel(gateway, alice, "second")
    old = await _store(pg_pool, first, alice.user_id, "deploy on friday", "unrelated")
    new = await _store(pg_pool, second, alice.user_id, "Friday deploy went fine")

    page = await _search(gateway, alice, "q=deploy+friday")

    assert _ids(page) == [new[0], old[0]]
    history = await gateway.get(f"/api/v1/channels/{first}/messages", headers=alice.auth)
    stored = {m["id"]: m for m in (await history.json())["data"]["messages"]}
    # One shape, from one implementation (a history item adds reactions and replies).
    in_history = {k: v for k, v in stored[old[0]].items() if k not in ("reactions", "reply_count")}
    assert page["messages"][1] == in_history


async def test_channels_the_caller_is_not_in_are_never_searched(
    gateway: TestClient[Any, Any], alice: Account, pg_pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    mallory = await signup(gateway, "mallory")
    secret = await create_channel(gateway, alice, "secret")
    await _store(pg_pool, secret, alice.user_id, "the password is swordfish")

    assert await _found(gateway, mallory, "swordfish") == []
    named = await gateway.get(
        f"/api/v1/search?q=swordfish&channel_id={secret}", headers=mallory.auth
    )
    assert await error_of(named) == (403, "not_a_member")
    unknown = await gateway.get(
        "/api/v1/search?q=swordfish&channel_id=999999", headers=mallory.auth
    )
    assert await error_of(unknown) == (404, "channel_not_found")
    assert await error_of(await gateway.get("/api/v1/search?q=swordfish")) == (400, "missing_token")


async def test_a_channel_left_is_no_longer_searched(
    gateway: TestClient[Any, Any], alice: Account, pg_pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    bob = await signup(gateway, "bob")
    channel_id = await create_channel(gateway, alice, "general")
    await api.join(gateway, bob, channel_id)
    await _store(pg_pool, channel_id, alice.user_id, "offsite in march")
    assert len(await _found(gateway, bob, "offsite")) == 1

    left = await gateway.post(
        "/api/v1/channels/leave", json={"channel_id": channel_id}, headers=bob.auth
    )
    assert left.status == 200

    assert await _found(gateway, bob, "offsite") == []


async def test_channel_id_narrows_the_search_to_one_channel(
    gateway: TestClient[Any, Any], alice: Account, pg_pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    first = await create_channel(gateway, alice, "first")
    second = await create_channel(gateway, alice, "second")
    [in_first] = await _store(pg_pool, first, alice.user_id, "standup notes")
    await _store(pg_pool, second, alice.user_id, "standup moved")

    assert _ids(await _search(gateway, alice, f"q=standup&channel_id={first}")) == [in_first]


async def test_pages_follow_the_before_id_cursor_to_the_end(
    gateway: TestClient[Any, Any], alice: Account, pg_pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    channel_id = await create_channel(gateway, alice, "general")
    ids = await _store(pg_pool, channel_id, alice.user_id, *(f"ping {n}" for n in range(5)))

    pages = [await _search(gateway, alice, "q=ping&limit=2")]
    while pages[-1]["next_cursor"] is not None:
        pages.append(
            await _search(gateway, alice, f"q=ping&limit=2&before_id={pages[-1]['next_cursor']}")
        )

    assert [_ids(page) for page in pages] == [ids[4:2:-1], ids[2:0:-1], ids[:1]]


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (
            ("ΚΑΛΗΜΕΡΑ σε όλους", "Привет, мир", "Running late"),
            # Whole words in any case and script; `simple` does not stem "run".
            {"καλημερα": [0], "ПРИВЕТ": [1], "RUNNING": [2], "run": []},
        ),
        (
            ("red car parked", "car red", "blue boat"),
            # Web search syntax: a phrase keeps its order, `-` excludes, `or` widens.
            {'"red car"': [0], "red -parked": [1], "parked or boat": [2, 0]},
        ),
    ],
    ids=["case-and-script", "web-search-syntax"],
)
async def test_queries_find_exactly_the_matching_messages(
    gateway: TestClient[Any, Any],
    alice: Account,
    pg_pool: asyncpg.Pool[asyncpg.Record],
    texts: tuple[str, ...],
    expected: dict[str, list[int]],
) -> None:
    channel_id = await create_channel(gateway, alice, "general")
    ids = await _store(pg_pool, channel_id, alice.user_id, *texts)

    found = {query: await _found(gateway, alice, query) for query in expected}

    assert found == {query: [ids[i] for i in which] for query, which in expected.items()}


async def test_an_edited_body_is_found_by_its_new_text_and_a_tombstone_not_at_all(
    gateway: TestClient[Any, Any], alice: Account, pg_pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    """Edits replace `body` and deletes leave a body without `content` (migration 007):
    the stored search vector follows the row."""
    channel_id = await create_channel(gateway, alice, "general")
    edited, deleted = await _store(pg_pool, channel_id, alice.user_id, "teh typo", "secret plan")
    await pg_pool.execute(
        "UPDATE messages SET body = $2 WHERE id = $1",
        edited,
        {"type": "text", "content": "the fix"},
    )
    await pg_pool.execute(
        "UPDATE messages SET body = $2 WHERE id = $1", deleted, {"type": "deleted"}
    )

    assert await _found(gateway, alice, "fix") == [edited]
    assert await _found(gateway, alice, "teh") == []
    assert await _found(gateway, alice, "secret") == []


async def test_a_body_too_big_for_a_tsvector_is_stored_and_found_by_its_beginning(
    gateway: TestClient[Any, Any], alice: Account, pg_pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    """Regression: 1,000,000 characters of distinct words make a tsvector over its 1 MB
    limit, which failed the insert of a message the gateway had acknowledged (with a
    raised WS_MAX_BODY_BYTES). Only the first 50,000 characters are indexed."""
    channel_id = await create_channel(gateway, alice, "general")
    words = " ".join(f"w{number:06d}" for number in range(125_000))
    [stored] = await _store(pg_pool, channel_id, alice.user_id, words)

    assert await _found(gateway, alice, "w000001") == [stored]
    assert await _found(gateway, alice, "w124999") == []


@pytest.mark.parametrize(
    "raw",
    [
        "the",  # a stop-word in English, a word like any other in `simple`
        "the+a",
        quote("&|!():*<->"),
        quote('"unterminated'),
        quote("-"),
        quote("or or or"),
        quote("!!!the"),
        quote("the:*"),
        "%FF%FE",  # invalid UTF-8: decoded to U+FFFD, searched as such
        quote("\u202e\u0301"),
        quote("x" * SEARCH_QUERY_MAX_CHARS),
    ],
)
async def test_any_storable_query_is_searched_without_an_error(
    gateway: TestClient[Any, Any], alice: Account, pg_pool: asyncpg.Pool[asyncpg.Record], raw: str
) -> None:
    channel_id = await create_channel(gateway, alice, "general")
    await _store(pg_pool, channel_id, alice.user_id, "the a or")

    page = await _search(gateway, alice, f"q={raw}")

    assert page["next_cursor"] is None
    assert all(message["channel_id"] == channel_id for message in page["messages"])


async def test_stop_words_are_words_and_operators_alone_find_nothing(
    gateway: TestClient[Any, Any], alice: Account, pg_pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    channel_id = await create_channel(gateway, alice, "general")
    [stored] = await _store(pg_pool, channel_id, alice.user_id, "to be or not to be")

    assert await _found(gateway, alice, "to be") == [stored]
    assert await _found(gateway, alice, "&|!():*") == []


@pytest.mark.parametrize(
    "query",
    [
        "",
        "q=",
        "q=+++",
        "q=%09%0A",
        "q=%00",
        "q=a%00b",
        "q=" + "x" * (SEARCH_QUERY_MAX_CHARS + 1),
        "q=" + "x" * 8_000,  # longer request lines are refused by aiohttp's parser
        "q=" + quote("é" * (SEARCH_QUERY_MAX_CHARS + 1)),
        "q=a&limit=0",
        "q=a&limit=101",
        "q=a&limit=" + "9" * 30,
        "q=a&limit=-1",
        "q=a&before_id=0",
        "q=a&before_id=" + str(2**53 + 1),
        "q=a&before_id=" + "9" * 5000,
        "q=a&channel_id=abc",
    ],
)
async def test_a_missing_oversized_or_unstorable_query_is_refused(
    gateway: TestClient[Any, Any], alice: Account, query: str
) -> None:
    response = await gateway.get(f"/api/v1/search?{query}", headers=alice.auth)

    assert await error_of(response) == (422, "invalid_parameter")


async def test_a_10_kb_query_is_refused_before_it_reaches_the_handler(
    gateway: TestClient[Any, Any], alice: Account
) -> None:
    """aiohttp refuses request lines over 8190 bytes itself, with a plain 400."""
    response = await gateway.get("/api/v1/search?q=" + "x" * 10_240, headers=alice.auth)

    assert response.status == 400
