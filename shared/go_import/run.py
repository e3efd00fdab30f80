"""`chat-group import-go`: move a Go server's database into this service.

A run reads the Go database in one read-only snapshot and goes through the
import's phases, each of which a later run skips once it is committed:

1. **plan** (one transaction, the target's users, channels and memberships
   locked against writes): detect the Go schema, decide every user, channel
   and membership (`policy`), refuse if the target's own data collides, write
   them with their Go id mappings and changes, and set the imported channels'
   seq counters in Redis before committing;
2. **messages**: the copy (`messages`), one transaction per batch;
3. **recent**: each imported channel's recent-history stream in Redis, then
   the foreign keys of `messages` validated, and the import marked done.

A dry run goes through the same steps without writing anything (PostgreSQL
or Redis) and prints the same report. A run after the import is done imports
nothing and says so.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import signal
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO
from urllib.parse import urlsplit

import asyncpg

from shared.db import go_import as target_sql
from shared.db import go_source
from shared.db.messages import list_messages_before
from shared.go_import import redis_state
from shared.go_import.messages import CopyPlan, CopyResult, Position, Redis, copy_messages
from shared.go_import.policy import GoData, Plan, plan
from shared.go_import.progress import Progress
from shared.go_import.report import Change, Counts, render_report
from shared.password_reset import hash_new_password
from shared.redis_client import close_redis, connect_redis
from shared.redis_keys import RedisKeys
from shared.scripts import register_import_scripts
from shared.settings import Settings

if TYPE_CHECKING:
    Connection = asyncpg.Connection[asyncpg.Record]

DONE, FAILED, REFUSED, INTERRUPTED = 0, 1, 3, 130
_CONNECT_TIMEOUT_SECONDS = 10.0
_TABLES = ("users", "channels", "memberships", "messages")


class ImportRefusedError(Exception):
    """The import will not start or continue; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class ImportOptions:
    source_dsn: str
    dry_run: bool = False
    batch_size: int = 50_000


@dataclass(slots=True)
class _Run:
    """What one run learns and does, for its report."""

    settings: Settings
    options: ImportOptions
    schema: go_source.GoSchema
    started_at: dt.datetime  # the import's cut-off (first run's Redis clock)
    frontier: go_source.Frontier
    go_counts: dict[str, int]
    this_run: Counter[str]
    planned: Plan | None = None
    copied: CopyResult | None = None
    position: Position | None = None
    notes: list[str] | None = None


async def run_import(settings: Settings, options: ImportOptions, out: TextIO, err: TextIO) -> int:
    """Run one import; print its report to `out` and progress to `err`; return the exit code.

    SIGINT and SIGTERM stop it after the batch being written: run it again to
    continue. Raises ImportRefusedError (nothing written) and the errors of
    PostgreSQL and Redis as they come.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    source = await asyncpg.connect(options.source_dsn, timeout=_CONNECT_TIMEOUT_SECONDS)
    try:
        target = await asyncpg.connect(settings.postgres_dsn(), timeout=_CONNECT_TIMEOUT_SECONDS)
        try:
            # The lock goes with the session: a killed run leaves none behind.
            if not options.dry_run and not await target_sql.lock_run(target):
                raise ImportRefusedError("another import-go is running against this target")
            redis = await connect_redis(settings, socket_timeout=settings.redis_timeout_seconds)
            try:
                keys = RedisKeys(settings.redis_key_prefix, settings.redis_partitions)
                ctx = Redis(redis, register_import_scripts(redis), keys)
                async with go_source.snapshot(source):
                    return await _run(settings, options, source, target, ctx, stop, out, err)
            finally:
                await close_redis(redis)
        finally:
            await target.close()
    finally:
        await source.close()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _run(
    settings: Settings,
    options: ImportOptions,
    source: Connection,
    target: Connection,
    redis: Redis,
    stop: asyncio.Event,
    out: TextIO,
    err: TextIO,
) -> int:
    run_started = dt.datetime.now(dt.UTC)
    schema = await go_source.detect_schema(source)
    fingerprint = await go_source.fingerprint(source, schema)
    state = await target_sql.read_state(target)
    if state is not None:
        _check_same_import(state, fingerprint, schema, settings)
    if state is None:
        started_at = _from_ms(await redis_state.redis_time_ms(redis.client))
        frontier = await go_source.read_frontier(source)
    else:
        started_at, frontier = state.started_at, go_source.Frontier.from_json(state.frontier)
    counts = await go_source.count_rows(source, frontier)
    run = _Run(settings, options, schema, started_at, frontier, counts, Counter())
    if counts["late"]:
        run.notes = [
            f"{counts['late']:,} Go rows were added after the import began: not imported"
            " (stop the Go server before importing)"
        ]
    if state is not None and state.phase == "done":
        finished = "" if state.finished_at is None else f"{state.finished_at:%Y-%m-%d %H:%M:%S}"
        outcome = f"already complete (finished {finished} UTC): nothing to import"
        await _finish_report(run, target, run_started, outcome, out)
        return DONE
    if state is None:
        copy_plan = await _plan_phase(run, source, target, redis, fingerprint)
        position = Position(partitions=settings.redis_partitions)
    else:
        copy_plan = await _resume_plan(run, source, target, redis)
        position = Position.from_json(state.position)
    run.position = position
    total = counts["messages"] - (0 if state is None else state.messages_done)
    progress = Progress(err, "messages", total)
    run.copied = await copy_messages(
        source,
        target,
        redis,
        copy_plan,
        position,
        total=total,
        progress=progress,
        stop=stop,
        dry_run=options.dry_run,
    )
    progress.finish()
    run.this_run["messages"] = run.copied.copied
    if run.copied.stopped:
        outcome = (
            f"interrupted after {run.copied.copied:,} messages of {total:,}:"
            " run the same command again to continue"
        )
        await _finish_report(run, target, run_started, outcome, out)
        return INTERRUPTED
    if not options.dry_run:
        await _check_written(target)
        await target_sql.set_phase(target, "recent")
        await _seed_recent(settings, target, redis, err)
        await target_sql.validate_foreign_keys(target)
        await target_sql.set_phase(target, "done")
    await _finish_report(run, target, run_started, "complete", out)
    return DONE


def _check_same_import(
    state: target_sql.ImportState,
    fingerprint: str,
    schema: go_source.GoSchema,
    settings: Settings,
) -> None:
    if state.fingerprint != fingerprint or state.schema_version != schema.version:
        raise ImportRefusedError(
            f"the target already holds an import from another Go database ({state.source});"
            " a target takes one Go database: import into an empty one"
        )
    partitions = Position.from_json(state.position).partitions
    if partitions != settings.redis_partitions:
        raise ImportRefusedError(
            f"the import began with REDIS_PARTITIONS={partitions}; it is now"
            f" {settings.redis_partitions}, which must not change"
        )


async def _plan_phase(
    run: _Run, source: Connection, target: Connection, redis: Redis, fingerprint: str
) -> CopyPlan:
    go = GoData(
        users=await go_source.read_users(source, run.frontier),
        channels=await go_source.read_channels(source, run.frontier),
        memberships=await go_source.read_memberships(source, run.frontier),
        message_counts=await go_source.count_messages_per_channel(source, run.frontier),
        authorship=await go_source.read_authorship(source, run.frontier),
    )
    # One hash of a random secret nobody keeps, for every account without a usable
    # password: it can never be matched, and checking it costs what a real check costs.
    locked_hash = await asyncio.to_thread(hash_new_password, secrets.token_urlsafe(32))

    async def decide() -> Plan:
        state = await target_sql.read_target_state(target)
        result = plan(go, state, started_at=run.started_at, locked_hash=lambda: locked_hash)
        _refuse_collisions(result)
        return result

    if run.options.dry_run:
        async with target.transaction(readonly=True, isolation="repeatable_read"):
            result = await decide()
    else:
        async with target.transaction():
            await target_sql.lock_for_plan(target)
            result = await decide()
            state = target_sql.ImportState(
                fingerprint=fingerprint,
                source=describe_dsn(run.options.source_dsn),
                schema_version=run.schema.version,
                started_at=run.started_at,
                frontier=run.frontier.as_json(),
                phase="messages",
                position=Position(partitions=run.settings.redis_partitions).as_json(),
                messages_done=0,
                finished_at=None,
            )
            await target_sql.write_plan(target, result, state)
            # Before the commit makes the channels visible: see redis_state.
            await redis_state.set_counters(
                redis.client, redis.keys, {c.id: c.message_count for c in result.channels}
            )
    run.planned = result
    run.this_run.update(
        users=len(result.users),
        channels=len(result.channels),
        memberships=sum(len(m.go_ids) for m in result.memberships),
    )
    return _copy_plan(
        run,
        await go_source.has_missing_timestamps(source, run.frontier),
        result.user_ids(),
        result.channel_ids(),
        {c.id: 0 for c in result.channels},
    )


async def _resume_plan(run: _Run, source: Connection, target: Connection, redis: Redis) -> CopyPlan:
    channels = await target_sql.imported_channels(target)
    counts = await go_source.count_messages_per_channel(source, run.frontier)
    changed = [c.go_id for c in channels if counts.get(c.go_id, 0) != c.message_count]
    if changed or set(counts) - {c.go_id for c in channels}:
        raise ImportRefusedError(
            "the Go database changed since the import began (messages of Go channels"
            f" {', '.join(map(str, changed[:10])) or 'unknown to it'} were added or deleted):"
            " restore it, or start over on an empty target"
        )
    if not run.options.dry_run:
        low = await redis_state.raise_counters(
            redis.client,
            redis.scripts,
            redis.keys,
            {c.channel_id: c.message_count for c in channels},
        )
        if low:
            run.notes = [
                *(run.notes or []),
                f"seq counters had been lost in Redis for channels"
                f" {', '.join(map(str, low))}: restored",
            ]
    return _copy_plan(
        run,
        await go_source.has_missing_timestamps(source, run.frontier),
        await target_sql.imported_users(target),
        {c.go_id: c.channel_id for c in channels},
        {c.channel_id: c.written for c in channels},
    )


def _copy_plan(
    run: _Run,
    fill: bool,
    user_ids: dict[int, int],
    channel_ids: dict[int, int],
    written: dict[int, int],
) -> CopyPlan:
    return CopyPlan(
        schema=run.schema,
        started_at=run.started_at,
        frontier_message_id=run.frontier.messages,
        fill_missing_timestamps=fill,
        user_ids=user_ids,
        channel_ids=channel_ids,
        written=written,
        batch_size=run.options.batch_size,
        max_body_bytes=run.settings.ws_max_body_bytes,
    )


def _refuse_collisions(result: Plan) -> None:
    if result.collisions:
        raise ImportRefusedError(
            "the target has data of its own that the Go data collides with; nothing was"
            " written. Rename these (here or in the Go database) and run again:\n  "
            + "\n  ".join(result.collisions)
        )


async def _check_written(target: Connection) -> None:
    short = [c for c in await target_sql.imported_channels(target) if c.written != c.message_count]
    if short:
        raise ImportRefusedError(
            "the Go database changed during the import: channels "
            + ", ".join(f"{c.channel_id} ({c.written}/{c.message_count})" for c in short[:10])
            + " did not get all their messages"
        )


async def _seed_recent(settings: Settings, target: Connection, redis: Redis, err: TextIO) -> None:
    size = settings.recent_history_size
    channels = [c for c in await target_sql.imported_channels(target) if c.message_count]
    if size == 0 or not channels:
        return
    progress = Progress(err, "recent history", len(channels))
    for channel in channels:
        newest = await list_messages_before(
            target, channel.channel_id, channel.message_count + 1, size
        )
        await redis_state.seed_recent(
            redis.scripts,
            redis.keys,
            channel.channel_id,
            channel.message_count,
            reversed(newest),
            size,
        )
        progress.advance(1)
    progress.finish()


async def _finish_report(
    run: _Run, target: Connection, run_started: dt.datetime, outcome: str, out: TextIO
) -> None:
    text = await _report(run, target, outcome=outcome)
    if not run.options.dry_run:
        await target_sql.record_run(target, started_at=run_started, outcome=outcome, report=text)
    out.write(text)


async def _report(run: _Run, target: Connection, *, outcome: str) -> str:
    counts = Counts()
    counts.go.update({table: run.go_counts[table] for table in _TABLES})
    counts.this_run.update(run.this_run)
    stored = await target_sql.stored_changes(target)
    changes: list[Change] = list(stored)
    if run.options.dry_run:
        if run.planned is not None:
            changes += run.planned.changes
        if run.copied is not None:
            changes += run.copied.changes
    already = await target_sql.imported_counts(target)
    counts.written.update(already)
    if run.options.dry_run:
        counts.written.update(run.this_run)
    ids = run.position.ids if run.position is not None else Position().ids
    if run.position is None:
        state = await target_sql.read_state(target)
        if state is not None:
            ids = Position.from_json(state.position).ids
    mode = "dry run: nothing was written" if run.options.dry_run else "stored in go_import_runs"
    header = [
        f"Go server import report ({mode})",
        f"  source   {describe_dsn(run.options.source_dsn)}"
        f" (schema v{run.schema.version}: messages."
        + ("body " + (run.schema.body_type or "") if run.schema.version == 2 else "content text")
        + ")",
        f"  target   {describe_dsn(run.settings.postgres_dsn())}",
        f"  began    {run.started_at.isoformat()} (later Go timestamps are clamped to it)",
        f"  outcome  {outcome}",
    ]
    return render_report(
        header=header, counts=counts, changes=changes, ids=ids, footer=run.notes or []
    )


def describe_dsn(dsn: str) -> str:
    """host:port/database of a PostgreSQL URL, without user or password."""
    parts = urlsplit(dsn)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path or '/'}"


def _from_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
