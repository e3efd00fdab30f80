"""A Go "Chat Group Server" database, for the import tests and the import benchmark.

`create_schema` writes the Go server's tables as its public repository
defines them (version 1: `messages.content TEXT`; version 2: `messages.body
JSONB`), optionally without the foreign keys its oldest databases lacked.
`generate` fills one with users (bcrypt `$2a$10$` hashes), channels,
memberships and messages through COPY, fast enough for a million messages.

    python -m loadtests.go_database --dsn postgresql://... --messages 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import time

import asyncpg
import bcrypt
import orjson

_TABLES = """
CREATE TABLE users (
    id SERIAL PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    avatar_url TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    username VARCHAR(50) NOT NULL,
    email VARCHAR(255) NOT NULL,
    password TEXT NOT NULL
);
CREATE TABLE channels (
    id SERIAL PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    description TEXT,
    image_url TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE memberships (
    id SERIAL PRIMARY KEY,
    user_id INT NOT NULL {user_fk},
    channel_id INT NOT NULL {channel_fk},
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    role VARCHAR(50) NOT NULL
);
CREATE TABLE messages (
    id SERIAL PRIMARY KEY,
    user_id INT NOT NULL {user_fk},
    channel_id INT NOT NULL {channel_fk},
    {message_column},
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP
);
"""
PASSWORD = "go password 1"
_BASE_TIME = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)


def bcrypt_hash(password: str, rounds: int = 10) -> str:
    """A hash as the Go server wrote them: `$2a$`, cost 10."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds, prefix=b"2a")).decode()


async def create_schema(
    conn: asyncpg.Connection[asyncpg.Record], version: int, *, foreign_keys: bool = True
) -> None:
    await conn.execute(
        _TABLES.format(
            user_fk="REFERENCES users(id)" if foreign_keys else "",
            channel_fk="REFERENCES channels(id)" if foreign_keys else "",
            message_column="content TEXT NOT NULL" if version == 1 else "body JSONB",
        )
    )


async def generate(
    conn: asyncpg.Connection[asyncpg.Record],
    *,
    version: int,
    users: int,
    channels: int,
    messages: int,
    seed: int = 1,
) -> None:
    """Fill an empty Go database: every user in 10 channels, messages spread over a year,
    a few per millisecond at most, by members of their channel."""
    rng = random.Random(seed)
    if version == 2:
        # Bodies go in as JSON bytes, in jsonb's binary format (a version byte, then text).
        await conn.set_type_codec(
            "jsonb",
            schema="pg_catalog",
            encoder=lambda value: b"\x01" + value,
            decoder=lambda data: data[1:],
            format="binary",
        )
    # bcrypt at cost 10 takes ~50 ms: one hash for everyone keeps generation fast;
    # the import copies hashes without looking inside them.
    password = bcrypt_hash(PASSWORD)
    await conn.copy_records_to_table(
        "users",
        records=[
            (f"User {i}", None, _BASE_TIME, f"user{i}", f"user{i}@example.com", password)
            for i in range(1, users + 1)
        ],
        columns=["name", "avatar_url", "created_at", "username", "email", "password"],
    )
    await conn.copy_records_to_table(
        "channels",
        records=[(f"channel {i}", "generated", None, _BASE_TIME) for i in range(1, channels + 1)],
        columns=["name", "description", "image_url", "created_at"],
    )
    members: dict[int, list[int]] = {c: [] for c in range(1, channels + 1)}
    rows = []
    for user in range(1, users + 1):
        for channel in rng.sample(range(1, channels + 1), min(10, channels)):
            role = "user" if members[channel] else "admin"  # the first to join created it
            members[channel].append(user)
            rows.append((user, channel, _BASE_TIME, role))
    await conn.copy_records_to_table(
        "memberships", records=rows, columns=["user_id", "channel_id", "created_at", "role"]
    )
    column = "content" if version == 1 else "body"
    span_us = 365 * 86_400 * 1_000_000
    batch: list[tuple[int, int, object, dt.datetime]] = []
    for index in range(messages):
        channel = rng.randint(1, channels)
        author = rng.choice(members[channel]) if members[channel] else 1
        text = f"message {index} in channel {channel}"
        body: object = text if version == 1 else orjson.dumps({"type": "text", "content": text})
        moment = _BASE_TIME + dt.timedelta(microseconds=index * span_us // max(messages, 1))
        batch.append((author, channel, body, moment))
        if len(batch) == 50_000 or index == messages - 1:
            await conn.copy_records_to_table(
                "messages", records=batch, columns=["user_id", "channel_id", column, "created_at"]
            )
            batch = []


async def build(dsn: str, *, version: int, users: int, channels: int, messages: int) -> float:
    """Create the Go tables in the (empty) database `dsn` and fill them; the seconds it took."""
    conn = await asyncpg.connect(dsn)
    try:
        await create_schema(conn, version)
        started = time.perf_counter()
        await generate(conn, version=version, users=users, channels=channels, messages=messages)
        return time.perf_counter() - started
    finally:
        await conn.close()


async def _main(args: argparse.Namespace) -> None:
    seconds = await build(
        args.dsn,
        version=args.version,
        users=args.users,
        channels=args.channels,
        messages=args.messages,
    )
    print(f"generated {args.messages:,} messages in {seconds:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True, help="an empty database to fill")
    parser.add_argument("--version", type=int, choices=(1, 2), default=2)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--channels", type=int, default=200)
    parser.add_argument("--messages", type=int, default=1_000_000)
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
