"""Dead letters: ingest entries the worker gave up on, kept for inspection.

Side branch of the persistence path: an entry that is malformed, or that
PostgreSQL rejected `worker_max_attempts` times, is copied here (original
fields plus `reason` and `stream_id`, the id it had in the ingest stream)
before it is acked, so one bad entry never blocks its partition.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from shared.redis_keys import RedisKeys

_log = logging.getLogger(__name__)

# Dead letters are for inspection, not a second queue: cap them (approximately,
# which is cheap) so a flood of bad entries cannot fill Redis.
DEAD_LETTER_MAXLEN = 100_000


@dataclass(frozen=True, slots=True)
class Rejected:
    """An ingest entry that will not be persisted, and why."""

    partition: int
    stream: str
    entry_id: str
    fields: dict[bytes, bytes]
    reason: str


async def add_dead_letters(
    redis: aioredis.Redis, keys: RedisKeys, rejected: Sequence[Rejected]
) -> None:
    """Append each rejected entry to its partition's dead-letter stream, in one round trip.

    Not idempotent: if this succeeds but the following ack fails, the entry
    is dead-lettered again on re-delivery. A duplicate dead letter is the
    price of never dropping one.
    """
    if not rejected:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for item in rejected:
            fields: dict[FieldT, EncodableT] = dict(item.fields.items())
            fields[b"reason"] = item.reason.encode()
            fields[b"stream_id"] = item.entry_id.encode()
            pipe.xadd(
                keys.dead_letters(item.partition),
                fields,
                maxlen=DEAD_LETTER_MAXLEN,
                approximate=True,
            )
        await pipe.execute()
    for item in rejected:
        _log.error(
            "entry moved to the dead-letter stream",
            extra={
                "stream": item.stream,
                "entry_id": item.entry_id,
                "partition": item.partition,
                "reason": item.reason,
            },
        )
