"""Search benchmark: `GET /api/v1/search`'s query on 1,000,000 generated messages.

    .venv/bin/python -m loadtests.search --messages 1000000 --runs 3 --compare-expression

Starts PostgreSQL (fsync on, as `chat-group up` runs it) in a temporary folder,
migrates to the version before search (006), COPYs the generated messages
(`loadtests.search_data`: a Zipf vocabulary, one channel with half of them), then
times migration 006 itself (the column, the index, ANALYZE). Queries go through
`shared.db.messages.search_messages`, the route's own function, for the two
benchmark users (in the heavy channel and 19 small ones; in 20 small ones only),
a fixed set per kind: common words (stop-words), mid-frequency words, rare
words, phrases, words that match nothing. "cold" is each query's first run
after a restart of PostgreSQL (empty shared buffers; the OS page cache stays
warm), "warm" the `--runs` runs after it. Also reported: what a `ts_headline`
snippet would add to each warm page, the plan of each kind for the heavy
user, and with `--compare-expression` the same queries against a GIN index on
the expression instead of the stored column (built on the same table).

Prints one JSON object; every figure is in milliseconds unless named `_s`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

from loadtests.search_data import HEAVY_USER, LIGHT_USER, Corpus, populate
from shared.db import messages
from shared.db.migrate import apply_migrations, load_migrations
from shared.local_servers import ServerProcess, ensure_database, free_port, start_postgres

_SEARCH_VERSION = "006_search"
_LIMIT = 20
_EXPRESSION = (
    "to_tsvector('simple'::regconfig, lower(left(m.body ->> 'content', 50000) COLLATE pg_c_utf8))"
)
_EXPRESSION_INDEX = (
    "CREATE INDEX messages_search_expression_idx ON messages USING gin ("
    + _EXPRESSION.replace("m.body", "body")
    + ")"
)
_HEADLINE = """
SELECT ts_headline('simple'::regconfig, body ->> 'content',
                   websearch_to_tsquery('simple'::regconfig, lower($2 COLLATE pg_c_utf8)))
FROM messages WHERE id = ANY($1::bigint[])
"""

if TYPE_CHECKING:
    Search = Callable[[asyncpg.Pool[asyncpg.Record], int, str], Awaitable[list[int]]]


def _queries(corpus: Corpus, per_kind: int) -> dict[str, list[str]]:
    words = corpus.vocabulary
    return {
        "common": words[:per_kind],
        "mid": words[50 : 50 + 50 * per_kind : 50],
        "rare": words[5_000 : 5_000 + 3_000 * per_kind : 3_000],
        "phrase": [f'"{phrase}"' for phrase in corpus.phrases[:per_kind]],
        "no_match": [f"zzq{number}" for number in range(per_kind)],
    }


async def _route_search(pool: asyncpg.Pool[asyncpg.Record], user_id: int, query: str) -> list[int]:
    found = await messages.search_messages(
        pool, user_id, query, channel_id=None, before_id=None, limit=_LIMIT
    )
    return [message.id for message in found]


async def _expression_search(
    pool: asyncpg.Pool[asyncpg.Record], user_id: int, query: str
) -> list[int]:
    """The route's query with the expression in place of the stored column."""
    sql = messages.SEARCH_SQL.replace("m.search_vector", _EXPRESSION)
    async with pool.acquire() as conn, conn.transaction():
        channel_ids = [
            row[0]
            for row in await conn.fetch(
                "SELECT channel_id FROM memberships WHERE user_id = $1", user_id
            )
        ]
        await conn.execute(messages.SEARCH_PLANNING)
        rows = await conn.fetch(sql, channel_ids, query, 2**63 - 1, _LIMIT)
    return [row["id"] for row in rows]


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": round(statistics.median(ordered), 2), "p95": round(p95, 2), "n": len(ordered)}


async def _time(search: Search, pool: asyncpg.Pool[asyncpg.Record], user: int, query: str) -> float:
    started = time.perf_counter()
    await search(pool, user, query)
    return (time.perf_counter() - started) * 1000


async def _latencies(
    dsn: str, search: Search, queries: dict[str, list[str]], runs: int
) -> dict[str, Any]:
    """Cold (first run after a restart, done by the caller) and warm, per kind."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        cases = [
            (kind, user, q)
            for kind, qs in queries.items()
            for q in qs
            for user in (HEAVY_USER, LIGHT_USER)
        ]
        cold: dict[str, list[float]] = {kind: [] for kind in queries}
        for kind, user, query in cases:
            cold[kind].append(await _time(search, pool, user, query))
        warm: dict[str, list[float]] = {kind: [] for kind in queries}
        for _ in range(runs):
            for kind, user, query in cases:
                warm[kind].append(await _time(search, pool, user, query))
    finally:
        await pool.close()
    return {kind: {"cold": _summary(cold[kind]), "warm": _summary(warm[kind])} for kind in queries}


async def _headline_cost(dsn: str, queries: dict[str, list[str]]) -> dict[str, float]:
    """What a snippet per result adds to a page, over every warm page of every kind."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    samples: list[float] = []
    try:
        for qs in queries.values():
            for query in qs:
                ids = await _route_search(pool, HEAVY_USER, query)
                started = time.perf_counter()
                await pool.fetch(_HEADLINE, ids, query)
                samples.append((time.perf_counter() - started) * 1000)
    finally:
        await pool.close()
    return _summary(samples)


async def _plans(dsn: str, queries: dict[str, list[str]]) -> dict[str, Any]:
    """The heavy user's plan for the first query of each kind: nodes and time."""
    conn = await asyncpg.connect(dsn)
    plans: dict[str, Any] = {}
    try:
        channel_ids = [
            row[0]
            for row in await conn.fetch(
                "SELECT channel_id FROM memberships WHERE user_id = $1", HEAVY_USER
            )
        ]
        async with conn.transaction():
            await conn.execute(messages.SEARCH_PLANNING)
            for kind, qs in queries.items():
                text = await conn.fetchval(
                    "EXPLAIN (ANALYZE, FORMAT JSON) " + messages.SEARCH_SQL,
                    channel_ids,
                    qs[0],
                    2**63 - 1,
                    _LIMIT,
                )
                plan = json.loads(text)[0]
                plans[kind] = {
                    "query": qs[0],
                    "nodes": _nodes(plan["Plan"]),
                    "execution_ms": round(plan["Execution Time"], 2),
                }
    finally:
        await conn.close()
    return plans


def _nodes(node: dict[str, Any]) -> list[str]:
    name = node["Node Type"] + (f" on {node['Index Name']}" if "Index Name" in node else "")
    return [name, *(child for sub in node.get("Plans", []) for child in _nodes(sub))]


async def _execute_timed(dsn: str, sql: str) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        await conn.execute(sql)
        return time.perf_counter() - started
    finally:
        await conn.close()


async def _prepare(dsn: str, args: argparse.Namespace) -> tuple[Corpus, dict[str, Any]]:
    versions = [migration.version for migration in load_migrations()]
    await apply_migrations(dsn, target=versions[versions.index(_SEARCH_VERSION) - 1])
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        corpus = await populate(
            conn, messages=args.messages, channels=args.channels, users=1_000, heavy=args.heavy
        )
        generated = time.perf_counter() - started
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CHECKPOINT")
        table = await conn.fetchval("SELECT pg_total_relation_size('messages')")
    finally:
        await conn.close()
    started = time.perf_counter()
    await apply_migrations(dsn, target=_SEARCH_VERSION)
    migration = time.perf_counter() - started
    conn = await asyncpg.connect(dsn)
    try:
        after = await conn.fetchval("SELECT pg_total_relation_size('messages')")
        index = await conn.fetchval("SELECT pg_relation_size('messages_search_idx')")
    finally:
        await conn.close()
    sizes = {
        "generate_s": round(generated, 1),
        "migration_006_s": round(migration, 1),
        "messages_total_mb_before": round(table / 2**20),
        "messages_total_mb_after": round(after / 2**20),
        "search_index_mb": round(index / 2**20),
    }
    return corpus, sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--channels", type=int, default=1_000)
    parser.add_argument("--heavy", type=int, default=500_000, help="messages in channel 1")
    parser.add_argument("--per-kind", type=int, default=10, help="queries of each kind")
    parser.add_argument("--runs", type=int, default=3, help="warm runs of each query")
    parser.add_argument("--compare-expression", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="chat-search-bench-"))
    folder.chmod(0o755)  # under root PostgreSQL runs as `nobody`
    port = free_port()
    dsn = f"postgresql://postgres@127.0.0.1:{port}/chat?sslmode=disable"
    server: ServerProcess | None = None
    try:
        server = start_postgres(folder / "postgres", port)
        asyncio.run(ensure_database(dsn.replace("/chat?", "/postgres?"), "chat"))
        corpus, result = asyncio.run(_prepare(dsn, args))
        queries = _queries(corpus, args.per_kind)
        print(f"generated and migrated: {result}", file=sys.stderr)
        server.stop()
        server = start_postgres(folder / "postgres", port)
        result["stored_column"] = asyncio.run(_latencies(dsn, _route_search, queries, args.runs))
        result["headline_per_page"] = asyncio.run(_headline_cost(dsn, queries))
        result["plans_heavy_user"] = asyncio.run(_plans(dsn, queries))
        if args.compare_expression:
            result["expression_index_build_s"] = round(
                asyncio.run(_execute_timed(dsn, _EXPRESSION_INDEX)), 1
            )
            asyncio.run(_execute_timed(dsn, "ANALYZE messages"))
            server.stop()
            server = start_postgres(folder / "postgres", port)
            result["expression_index"] = asyncio.run(
                _latencies(dsn, _expression_search, queries, args.runs)
            )
        result["queries"] = queries
        result["args"] = vars(args)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
