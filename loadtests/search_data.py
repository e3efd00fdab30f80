"""Generated messages for the search benchmark: a Zipf vocabulary, one heavy channel.

`populate` COPYs users, channels, memberships and messages into a migrated
database. Message texts draw words from a vocabulary whose frequencies follow
Zipf's law (as natural language does), the most common ones being English
stop-words, so a query for "the" matches about a third of the messages and a
rare word a few dozen. Channel 1 holds `heavy` of the messages; the others
share the rest evenly. Two benchmark users: `HEAVY_USER` is in channel 1 and
19 small channels, `LIGHT_USER` in 20 small channels only, so a common word
matches hundreds of thousands of rows of which few are theirs.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
import orjson

HEAVY_USER = 1
LIGHT_USER = 2
HEAVY_CHANNEL = 1
_MEMBERSHIPS_PER_USER = 20
_STOP_WORDS = [
    "the",
    "and",
    "to",
    "of",
    "a",
    "in",
    "is",
    "it",
    "you",
    "that",
    "for",
    "on",
    "was",
    "with",
    "are",
    "be",
    "this",
    "have",
    "not",
    "at",
]
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]  # 70 syllables
_BASE_TIME = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Corpus:
    """What the queries are built from: words by rank, and phrases that occur."""

    vocabulary: list[str]
    phrases: list[str]


def vocabulary(size: int) -> list[str]:
    """`size` distinct words, most frequent first: stop-words, then made-up words."""
    made_up = (
        "".join(parts)
        for length in itertools.count(2)
        for parts in itertools.product(_SYLLABLES, repeat=length)
    )
    return [*_STOP_WORDS, *itertools.islice(made_up, size - len(_STOP_WORDS))]


def _texts(words: list[str], count: int, rng: random.Random) -> Iterator[str]:
    weights = list(itertools.accumulate(1.0 / rank**1.05 for rank in range(1, len(words) + 1)))
    for _ in range(count):
        yield " ".join(rng.choices(words, cum_weights=weights, k=rng.randint(3, 20)))


async def populate(
    conn: asyncpg.Connection[asyncpg.Record],
    *,
    messages: int,
    channels: int,
    users: int,
    heavy: int,
    seed: int = 13,
) -> Corpus:
    """Fill an empty migrated database; return the corpus the queries come from."""
    rng = random.Random(seed)
    words = vocabulary(50_000)
    await conn.copy_records_to_table(
        "users",
        records=[
            (i, f"user {i}", f"user{i}", f"user{i}@example.com", "x") for i in range(1, users + 1)
        ],
        columns=["id", "name", "username", "email", "password"],
    )
    await conn.copy_records_to_table(
        "channels",
        records=[(i, f"channel {i}", "") for i in range(1, channels + 1)],
        columns=["id", "name", "description"],
    )
    small = list(range(2, channels + 1))
    member_of = {
        HEAVY_USER: [HEAVY_CHANNEL, *rng.sample(small, _MEMBERSHIPS_PER_USER - 1)],
        LIGHT_USER: rng.sample(small, _MEMBERSHIPS_PER_USER),
    }
    for user in range(3, users + 1):
        member_of[user] = rng.sample(range(1, channels + 1), 5)
    await conn.copy_records_to_table(
        "memberships",
        records=[(c, u) for u, joined in member_of.items() for c in joined],
        columns=["channel_id", "user_id"],
    )
    seqs = [0] * (channels + 1)
    phrases: list[str] = []

    def rows() -> Iterator[tuple[object, ...]]:
        for number, text in enumerate(_texts(words, messages, rng), start=1):
            channel = HEAVY_CHANNEL if rng.random() < heavy / messages else rng.choice(small)
            seqs[channel] += 1
            if number % (messages // 50 or 1) == 0:
                phrases.append(" ".join(text.split()[:2]))
            body = orjson.dumps({"type": "text", "content": text}).decode()
            created_at = _BASE_TIME + dt.timedelta(seconds=number)
            yield (number, channel, seqs[channel], rng.randint(1, users), body, created_at)

    batch: list[tuple[object, ...]] = []
    for row in rows():
        batch.append(row)
        if len(batch) == 100_000:
            await _copy_messages(conn, batch)
            batch = []
    await _copy_messages(conn, batch)
    return Corpus(vocabulary=words, phrases=phrases)


async def _copy_messages(
    conn: asyncpg.Connection[asyncpg.Record], batch: list[tuple[object, ...]]
) -> None:
    await conn.copy_records_to_table(
        "messages",
        records=batch,
        columns=["id", "channel_id", "seq", "user_id", "body", "created_at"],
    )
