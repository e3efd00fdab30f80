"""The asyncpg connection pool every process uses to reach PostgreSQL.

Connections decode `json`/`jsonb` columns to Python objects (and encode them
back) with orjson, so query modules never handle JSON text.
"""

from __future__ import annotations

import asyncio

import asyncpg
import orjson

from shared.settings import Settings

# What a PostgreSQL outage raises, as opposed to a bad query: a refused or
# broken connection, a server shutting down or starting (SQLSTATE class 57),
# a timeout, and asyncpg's InternalClientError for a pooled connection that
# an interrupted query left mid-operation.
POSTGRES_OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
)

# A readiness probe that takes longer than this reports "not ready" rather
# than holding the probe open until the orchestrator's own timeout.
_PING_TIMEOUT_SECONDS = 2.0


async def create_pool(settings: Settings) -> asyncpg.Pool[asyncpg.Record]:
    """Open a pool sized and bounded by settings; the caller closes it.

    Raises whatever asyncpg raises when the first `db_pool_min_size`
    connections cannot be opened (bad DSN, server down, auth failure).
    """
    return await asyncpg.create_pool(
        settings.postgres_dsn(),
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        command_timeout=settings.db_command_timeout_seconds,
        timeout=settings.db_command_timeout_seconds,
        init=_register_json_codecs,
    )


async def ping(
    pool: asyncpg.Pool[asyncpg.Record], *, timeout_seconds: float = _PING_TIMEOUT_SECONDS
) -> None:
    """Round-trip `SELECT 1`; raises on failure, or TimeoutError after `timeout_seconds`."""
    async with asyncio.timeout(timeout_seconds):
        await pool.fetchval("SELECT 1")


def _encode_json(value: object) -> str:
    return orjson.dumps(value).decode()


async def _register_json_codecs(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, schema="pg_catalog", encoder=_encode_json, decoder=orjson.loads
        )
