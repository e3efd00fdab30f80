"""Edits, deletes and reactions as the persistence worker stores them.

Events are rows of `messages` at their own seqs; the batch write applies them
to their targets in the same transaction (`shared.db.message_changes`), in
any order of arrival: several workers share a partition, so an edit can be
committed before the message it edits, and an add after the remove that
followed it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from persistence.worker import Worker
from shared.db.message_changes import reaction_counts, reply_counts
from shared.db.messages import (
    MessageRow,
    insert_messages,
    list_messages_after,
    list_messages_before,
)
from tests.persistence.test_worker import MakeSettings, make_sender, poll_until

_ids = itertools.count(50_000)


@pytest.fixture
async def author(pg_pool: asyncpg.Pool[asyncpg.Record]) -> tuple[int, int]:
    """(user_id, channel_id) for the foreign keys."""
    user_id = await pg_pool.fetchval(
        "INSERT INTO users (name, username, email, password) VALUES ('Al', 'al', 'al@x.io', 'x')"
        " RETURNING id"
    )
    channel_id = await pg_pool.fetchval("INSERT INTO channels (name) VALUES ('c') RETURNING id")
    return user_id, channel_id


def row(
    channel_id: int, user_id: int, seq: int, body: object, kind: str, target: int | None
) -> MessageRow:
    return MessageRow(
        next(_ids),
        channel_id,
        seq,
        user_id,
        orjson.dumps(body).decode(),
        None,
        1_750_000_000_000 + seq,
        kind=kind,
        target_id=target,
    )


def message(
    channel_id: int, user_id: int, seq: int, content: str = "hi", reply_to: int | None = None
) -> MessageRow:
    return row(channel_id, user_id, seq, {"type": "text", "content": content}, "message", reply_to)


def edit(channel_id: int, user_id: int, seq: int, target: int, content: str) -> MessageRow:
    body = {"body": {"type": "text", "content": content}}
    return row(channel_id, user_id, seq, body, "message_edited", target)


def delete(channel_id: int, user_id: int, seq: int, target: int) -> MessageRow:
    return row(channel_id, user_id, seq, {}, "message_deleted", target)


def reaction(
    channel_id: int, user_id: int, seq: int, target: int, op: str, emoji: str = "👍"
) -> MessageRow:
    body = {"op": op, "emoji": emoji, "count": 1}
    return row(channel_id, user_id, seq, body, "reaction", target)


def _waiting_on_lock(pool: asyncpg.Pool[asyncpg.Record]) -> Callable[[], Awaitable[bool]]:
    async def waiting() -> bool:
        return bool(
            await pool.fetchval(
                "SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )
        )

    return waiting


async def write(pool: asyncpg.Pool[asyncpg.Record], *rows: MessageRow) -> int:
    async with pool.acquire() as conn, conn.transaction():
        return await insert_messages(conn, list(rows))


async def stored(pool: asyncpg.Pool[asyncpg.Record], message_id: int) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM messages WHERE id = $1", message_id)
    assert row is not None
    return row


async def test_an_edit_replaces_the_body_and_keeps_the_original(
    pg_pool: asyncpg.Pool[asyncpg.Record], author: tuple[int, int]
) -> None:
    user_id, channel_id = author
    target = message(channel_id, user_id, 1, "first")
    await write(pg_pool, target)
    await write(pg_pool, edit(channel_id, user_id, 2, target.id, "second"))
    await write(pg_pool, edit(channel_id, user_id, 3, target.id, "third"))

    row = await stored(pg_pool, target.id)
    assert row["body"] == {"type": "text", "content": "third"}
    assert row["original_body"] == {"type": "text", "content": "first"}
    assert int(row["edited_at"].timestamp() * 1000) == 1_750_000_000_003
    [page] = await list_messages_before(pg_pool, channel_id, None, 10)
    assert (page.id, page.body["content"], page.edited_at) == (target.id, "third", row["edited_at"])


async def test_an_edit_committed_before_its_target_is_applied_when_the_target_comes(
    pg_pool: asyncpg.Pool[asyncpg.Record], author: tuple[int, int]
) -> None:
    user_id, channel_id = author
    target = message(channel_id, user_id, 1, "first")
    # Two workers: the later batch (two edits, newest first) commits first.
    await write(
        pg_pool,
        edit(channel_id, user_id, 3, target.id, "third"),
        edit(channel_id, user_id, 2, target.id, "second"),
    )
    await write(pg_pool, target)

    row = await stored(pg_pool, target.id)
    assert row["body"] == {"type": "text", "content": "third"}
    assert row["original_body"] == {"type": "text", "content": "first"}


async def test_a_delete_leaves_a_tombstone_without_any_version_of_the_content(
    pg_pool: asyncpg.Pool[asyncpg.Record], author: tuple[int, int]
) -> None:
    user_id, channel_id = author
    target = message(channel_id, user_id, 1, "secret")
    early = edit(channel_id, user_id, 2, target.id, "still secret")
    await write(pg_pool, target, early, delete(channel_id, user_id, 4, target.id))
    # An edit older than the delete, written late by a peer, restores nothing.
    versions = edit(channel_id, user_id, 3, target.id, "late secret")
    await write(pg_pool, versions)

    row = await stored(pg_pool, target.id)
    assert (row["body"], row["original_body"]) == ({}, None)
    assert row["deleted_at"] is not None
    assert (await stored(pg_pool, early.id))["body"] == {}
    assert (await stored(pg_pool, versions.id))["body"] == {}
    text = await pg_pool.fetchval("SELECT string_agg(body::text, ' ') FROM messages")
    assert "secret" not in text
    # Still at its seq: every seq, events included, replays in order.
    replay = await list_messages_after(pg_pool, channel_id, 0, 10)
    assert [(m.seq, m.kind) for m in replay] == [
        (1, "message"),
        (2, "message_edited"),
        (3, "message_edited"),
        (4, "message_deleted"),
    ]
    assert await list_messages_after(pg_pool, channel_id, 0, 10, events=False) == replay[:1]


async def test_reactions_end_right_whatever_order_their_batches_commit_in(
    pg_pool: asyncpg.Pool[asyncpg.Record], author: tuple[int, int]
) -> None:
    user_id, channel_id = author
    other = await pg_pool.fetchval(
        "INSERT INTO users (name, username, email, password) VALUES ('Bo', 'bo', 'bo@x.io', 'x')"
        " RETURNING id"
    )
    target = message(channel_id, user_id, 1)
    # The reactions come before their target, and the remove before the add it undoes.
    await write(
        pg_pool,
        reaction(channel_id, user_id, 3, target.id, "remove"),
        reaction(channel_id, other, 4, target.id, "add"),
    )
    await write(
        pg_pool,
        reaction(channel_id, user_id, 2, target.id, "add"),
        reaction(channel_id, user_id, 5, target.id, "add", "🎉"),
    )
    await write(pg_pool, target)

    counts = await reaction_counts(pg_pool, [target.id], user_id)
    assert [(r.emoji, r.count, r.me) for r in counts[target.id]] == [
        ("👍", 1, False),
        ("🎉", 1, True),
    ]


async def test_writing_a_batch_of_events_twice_changes_nothing(
    pg_pool: asyncpg.Pool[asyncpg.Record], author: tuple[int, int]
) -> None:
    user_id, channel_id = author
    target = message(channel_id, user_id, 1, "a")
    batch = [
        target,
        edit(channel_id, user_id, 2, target.id, "b"),
        reaction(channel_id, user_id, 3, target.id, "add"),
    ]
    assert await write(pg_pool, *batch) == 3
    before = await stored(pg_pool, target.id)

    assert await write(pg_pool, *batch) == 0

    assert await stored(pg_pool, target.id) == before
    assert (await reaction_counts(pg_pool, [target.id], user_id))[target.id][0].count == 1


async def test_an_event_and_its_target_written_at_once_by_two_workers_meet(
    pg_pool: asyncpg.Pool[asyncpg.Record], author: tuple[int, int]
) -> None:
    """Without the channel lock each transaction misses the other's uncommitted row,
    and the edit is never applied."""
    user_id, channel_id = author
    target = message(channel_id, user_id, 1, "first")
    async with pg_pool.acquire() as first, pg_pool.acquire() as second:
        transaction = first.transaction()
        await transaction.start()
        await insert_messages(first, [target])
        async with second.transaction():
            editing = asyncio.create_task(
                insert_messages(second, [edit(channel_id, user_id, 2, target.id, "second")])
            )
            # The second waits for the channel's lock: PostgreSQL tells nobody, so look.
            await poll_until(_waiting_on_lock(pg_pool), deadline=5)
            await transaction.commit()
            await editing

    assert (await stored(pg_pool, target.id))["body"]["content"] == "second"


async def test_replies_name_their_parent_and_are_counted(
    pg_pool: asyncpg.Pool[asyncpg.Record], author: tuple[int, int]
) -> None:
    user_id, channel_id = author
    parent = message(channel_id, user_id, 1)
    first = message(channel_id, user_id, 2, reply_to=parent.id)
    second = message(channel_id, user_id, 3, reply_to=parent.id)
    await write(pg_pool, parent, first, second, delete(channel_id, user_id, 4, second.id))

    assert await reply_counts(pg_pool, [parent.id, first.id]) == {parent.id: 1}
    assert (await stored(pg_pool, first.id))["target_id"] == parent.id


async def test_the_worker_stores_events_from_the_ingest_stream(
    make_settings: MakeSettings, pg_pool: asyncpg.Pool[asyncpg.Record], redis: aioredis.Redis
) -> None:
    settings = make_settings(redis_partitions=2)
    sender = await make_sender(pg_pool, redis, settings, channels=1)
    channel_id = sender.channel_ids[0]
    target = await sender.send(channel_id)
    await sender.send(
        channel_id,
        kind=b"message_edited",
        target_id=str(target).encode(),
        body=b'{"body":{"type":"text","content":"edited"}}',
    )
    await sender.send(
        channel_id,
        kind=b"reaction",
        target_id=str(target).encode(),
        body='{"op":"add","emoji":"👍","count":1}'.encode(),
    )
    bad = await sender.send(channel_id, kind=b"message_edited", body=b"{}")  # no target
    unknown = await sender.send(channel_id, kind=b"poll")

    assert await Worker(settings, redis=redis, pool=pg_pool).run_until_idle() == 3

    assert (await stored(pg_pool, target))["body"]["content"] == "edited"
    assert await pg_pool.fetchval("SELECT count(*) FROM message_reactions") == 1
    dead = await redis.xrange(sender.keys.dead_letters(channel_id % 2))
    reasons = {fields[b"id"]: fields[b"reason"] for _, fields in dead}
    assert b"without target_id" in reasons[str(bad).encode()]
    assert b"unknown kind" in reasons[str(unknown).encode()]
