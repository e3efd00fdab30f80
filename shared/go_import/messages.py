"""The message copy: Go messages in (created_at, id) order -> batches -> COPY.

Each message gets its channel's next seq (1..n per channel, in that order),
a body the wire models accept (`bodies`), and an id in the send script's
layout (`ids`). Each batch is one transaction together with the import's
position (`shared.db.go_import.write_batch`): a run that stops, however it
stops, resumes after the last batch it committed. A dry run does all of it
but the writes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg

from shared.db import go_import as target_sql
from shared.db.go_source import GoSchema, message_query
from shared.go_import import redis_state
from shared.go_import.bodies import convert_body, original_of, plain_bodies
from shared.go_import.ids import IdAllocator
from shared.go_import.progress import Progress
from shared.go_import.report import AT_START as _AT_START
from shared.go_import.report import Change, IdStats
from shared.redis_keys import RedisKeys, partition_of
from shared.scripts import ImportScripts

if TYPE_CHECKING:
    Connection = asyncpg.Connection[asyncpg.Record]

_UNIX_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_MS = dt.timedelta(milliseconds=1)
# Batches converted ahead of the one being written.
_READ_AHEAD = 2


class GoDatabaseChangedError(Exception):
    """The Go database no longer holds what the import began with."""


@dataclass(slots=True)
class Position:
    """Where the copy stands; stored with every batch (`go_import.position`)."""

    created_at: dt.datetime | None = None  # the last message written, None before the first
    go_id: int = 0
    partitions: int = 0
    clocks: dict[int, tuple[int, int]] = field(default_factory=dict)
    ids: IdStats = field(default_factory=IdStats)

    def as_json(self) -> dict[str, Any]:
        return {
            "created_at": None if self.created_at is None else self.created_at.isoformat(),
            "go_id": self.go_id,
            "partitions": self.partitions,
            "clocks": {str(p): list(clock) for p, clock in self.clocks.items()},
            "ids": self.ids.as_json(),
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Position:
        stamp = value["created_at"]
        return cls(
            created_at=None if stamp is None else dt.datetime.fromisoformat(stamp),
            go_id=value["go_id"],
            partitions=value["partitions"],
            clocks={int(p): (clock[0], clock[1]) for p, clock in value["clocks"].items()},
            ids=IdStats.from_json(value["ids"]),
        )


@dataclass(frozen=True, slots=True)
class CopyPlan:
    """What the copy needs to know of the import (from the plan, or the target)."""

    schema: GoSchema
    started_at: dt.datetime
    frontier_message_id: int
    fill_missing_timestamps: bool
    user_ids: dict[int, int]  # Go id -> id here
    channel_ids: dict[int, int]
    written: dict[int, int]  # channel id here -> seqs written so far
    batch_size: int
    max_body_bytes: int


@dataclass(frozen=True, slots=True)
class Redis:
    client: Any
    scripts: ImportScripts
    keys: RedisKeys


@dataclass(slots=True)
class CopyResult:
    copied: int = 0
    changes: list[Change] = field(default_factory=list)  # a dry run's; a real run stores them
    stopped: bool = False


@dataclass(slots=True)
class _Batch:
    messages: list[list[Any]]  # id, channel_id, seq, user_id, body, client_id, created_at
    mappings: list[list[int]]
    partitions: list[int]
    created_ms: list[int]
    changes: list[Change]
    last: tuple[dt.datetime, int]  # (created_at, Go id) of its last message


async def copy_messages(
    source: Connection,
    target: Connection,
    redis: Redis,
    plan: CopyPlan,
    position: Position,
    *,
    total: int,
    progress: Progress,
    stop: asyncio.Event,
    dry_run: bool,
) -> CopyResult:
    """Copy the messages after `position`; return early (stopped) once `stop` is set."""
    floors = await redis_state.live_floors(redis.client, redis.scripts, redis.keys)
    # Read after the floors: every id sent later is above them (see `ids`).
    pending = await redis_state.unpersisted_ids(redis.client, redis.keys)
    lowest_foreign = await target_sql.lowest_foreign_message_id(target)
    foreign_keys = [] if dry_run else await target_sql.message_foreign_keys(target)
    allocator = IdAllocator(redis.keys.partitions, position.clocks, floors, position.ids)
    next_seq = dict(plan.written)
    result = CopyResult()
    cursor = await source.cursor(
        message_query(plan.schema, fill_missing_timestamps=plan.fill_missing_timestamps),
        plan.started_at,
        plan.frontier_message_id,
        position.created_at,
        position.go_id,
    )
    batches: asyncio.Queue[_Batch | BaseException | None] = asyncio.Queue(_READ_AHEAD)
    reader = asyncio.create_task(_read(cursor, plan, next_seq, redis.keys.partitions, batches))
    try:
        while (batch := await batches.get()) is not None:
            if isinstance(batch, BaseException):
                raise batch
            hot = await _assign_ids(target, batch, allocator, pending, lowest_foreign)
            if dry_run:
                allocator.stats.live_clock += sum(len(indexes) for indexes in hot.values())
                result.changes += batch.changes
            else:
                await _take_live_ids(redis, batch, allocator, hot)
            position.created_at, position.go_id = batch.last
            position.clocks, position.ids = allocator.state(), allocator.stats
            if not dry_run:
                await target_sql.write_batch(
                    target,
                    target_sql.MessageBatch(batch.messages, batch.mappings, batch.changes),
                    position.as_json(),
                    foreign_keys,
                )
            result.copied += len(batch.messages)
            progress.advance(len(batch.messages))
            if stop.is_set():
                result.stopped = True
                break
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    return result


async def _read(
    cursor: asyncpg.cursor.Cursor[asyncpg.Record],
    plan: CopyPlan,
    next_seq: dict[int, int],
    partitions: int,
    batches: asyncio.Queue[_Batch | BaseException | None],
) -> None:
    """Fetch and convert batches ahead of the writer: a batch is converted while the
    writer waits for PostgreSQL to take the one before, so the two overlap. (Not in
    a thread: the conversion holds the GIL, and the threads' hand-offs cost a fifth
    more CPU for no speed.)"""
    try:
        while rows := await cursor.fetch(plan.batch_size):
            await batches.put(_convert(rows, plan, next_seq, partitions))
    except Exception as exc:  # handed to the writer, which raises it in the run's task
        await batches.put(exc)
        return
    await batches.put(None)


def _convert(
    rows: Sequence[asyncpg.Record], plan: CopyPlan, next_seq: dict[int, int], partitions: int
) -> _Batch:
    batch = _Batch([], [], [], [], [], (rows[-1]["created_at"], rows[-1]["id"]))
    user_ids, channel_ids, limit = plan.user_ids, plan.channel_ids, plan.max_body_bytes
    partition = {channel_id: partition_of(channel_id, partitions) for channel_id in next_seq}
    plain = _plain_bodies(rows, limit)
    # Bound once: this loop runs a million times per import.
    add_message, add_mapping = batch.messages.append, batch.mappings.append
    add_partition, add_ms, add_change = (
        batch.partitions.append,
        batch.created_ms.append,
        batch.changes.append,
    )
    for index, (
        go_id,
        go_user,
        go_channel,
        created_at,
        missing,
        future,
        body,
        content,
    ) in enumerate(rows):
        try:
            channel_id, user_id = channel_ids[go_channel], user_ids[go_user]
        except KeyError:
            raise GoDatabaseChangedError(
                f"Go message {go_id} names a user or channel the import began without"
            ) from None
        seq = next_seq[channel_id] + 1
        next_seq[channel_id] = seq
        if plain is not None:
            stored = plain[index]
        else:
            converted = convert_body(body, content, limit)
            stored = converted.body
            if converted.change is not None:
                detail = f"{converted.reason}; original: {original_of(body, content)}"
                add_change(Change("messages", go_id, converted.change, detail))
        if missing:
            detail = f"-> {created_at.isoformat()}"
            add_change(Change("messages", go_id, "message_created_at_missing", detail))
        elif future:
            add_change(Change("messages", go_id, "message_created_at_future", _AT_START))
        add_message([0, channel_id, seq, user_id, stored, None, created_at])
        add_mapping([go_id, 0])
        add_partition(partition[channel_id])
        add_ms((created_at - _UNIX_EPOCH) // _ONE_MS)
    return batch


def _plain_bodies(rows: Sequence[asyncpg.Record], limit: int) -> list[str] | None:
    """A v2 batch whose bodies all pass as they are, checked in one call; else None."""
    bodies = [row["body"] for row in rows]
    if any(body is None for body in bodies):
        return None
    return plain_bodies(bodies, limit)


async def _assign_ids(
    target: Connection,
    batch: _Batch,
    allocator: IdAllocator,
    pending: set[int],
    lowest_foreign: int | None,
) -> dict[int, list[int]]:
    """Give the batch its ids; returns, per partition, the rows the live clock must serve.

    When the batch's ids meet those of messages not from the import (`pending`
    ones in the ingest streams, or in PostgreSQL from `lowest_foreign` on), they
    are stepped over and the batch allocated again, until it meets none.
    """
    start, stats = allocator.state(), IdStats(**allocator.stats.as_json())
    while True:
        hot = _allocate(batch, allocator)
        if lowest_foreign is None and not pending:
            return hot  # the usual case: nothing but imported messages to meet
        ids = {m[0] for m in batch.messages if m[0]}
        if not ids:
            return hot
        low, high = min(ids), max(ids)
        taken = {i for i in pending if low <= i <= high}
        if lowest_foreign is not None and high >= lowest_foreign:
            taken |= await target_sql.foreign_message_ids(target, low, high)
        if not taken & ids:
            return hot
        allocator.occupied |= taken
        allocator.restore(start, IdStats(**stats.as_json()))


def _allocate(batch: _Batch, allocator: IdAllocator) -> dict[int, list[int]]:
    hot: dict[int, list[int]] = {}
    allocate = allocator.allocate
    for index, (partition, created_ms) in enumerate(
        zip(batch.partitions, batch.created_ms, strict=True)
    ):
        message_id = allocate(partition, created_ms)
        if message_id is None:
            hot.setdefault(partition, []).append(index)
            message_id = 0
        batch.messages[index][0] = message_id
        batch.mappings[index][1] = message_id
    return hot


async def _take_live_ids(
    redis: Redis, batch: _Batch, allocator: IdAllocator, hot: dict[int, list[int]]
) -> None:
    for partition, indexes in hot.items():
        first_ms, first_counter = await redis_state.take_ids(
            redis.scripts, redis.keys, partition, len(indexes)
        )
        for index, message_id in zip(
            indexes,
            allocator.claimed(partition, first_ms, first_counter, len(indexes)),
            strict=True,
        ):
            batch.messages[index][0] = message_id
            batch.mappings[index][1] = message_id
