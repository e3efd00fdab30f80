"""SQL for direct messages: the one private two-member channel of a pair of users."""

from __future__ import annotations

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from shared.db.channels import get_channel
from shared.db.records import Channel
from shared.errors import UserNotFoundError

_FIND = "SELECT channel_id FROM direct_channels WHERE user_low = $1 AND user_high = $2"


class _LostRaceError(Exception):
    """Another request created the pair's channel first: this one's is rolled back."""


async def direct_channel(
    pool: asyncpg.Pool[asyncpg.Record], user_id: int, other_id: int
) -> tuple[Channel, bool]:
    """The pair's direct message, created when it does not exist yet; and whether this
    call created it. Idempotent under concurrency: the pair's row in
    `direct_channels` is unique, so of two concurrent creations one commits and
    the other rolls back and returns the winner's channel.

    Raises UserNotFoundError for an unknown `other_id`. `user_id != other_id`.
    """
    low, high = sorted((user_id, other_id))
    async with pool.acquire() as conn:
        for _ in range(2):  # a lost race finds the winner's row on the second pass
            found = await conn.fetchval(_FIND, low, high)
            if found is not None:
                channel = await get_channel(conn, found)
                if channel is not None:
                    return channel, False
            try:
                return await _create(conn, low, high), True
            except _LostRaceError:
                continue
    # Found and gone twice: its channel was deleted meanwhile, with a user (cascade).
    raise UserNotFoundError()


async def _create(conn: PoolConnectionProxy[asyncpg.Record], low: int, high: int) -> Channel:
    async with conn.transaction():
        try:
            row = await conn.fetchrow(
                """INSERT INTO channels (name, description, created_by, kind)
                    VALUES ('', '', $1, 'dm')
                    RETURNING id, name, description, image_url, created_at, kind""",
                low,
            )
            assert row is not None  # INSERT ... RETURNING always yields the row
            await conn.execute(
                """INSERT INTO memberships (channel_id, user_id)
                   VALUES ($1, $2), ($1, $3)""",
                row["id"],
                low,
                high,
            )
        except asyncpg.ForeignKeyViolationError:
            raise UserNotFoundError() from None
        won = await conn.fetchval(
            """INSERT INTO direct_channels (user_low, user_high, channel_id) VALUES ($1, $2, $3)
               ON CONFLICT (user_low, user_high) DO NOTHING RETURNING channel_id""",
            low,
            high,
            row["id"],
        )
        if won is None:
            raise _LostRaceError()  # rolls this channel back
    return Channel.from_record(row)
