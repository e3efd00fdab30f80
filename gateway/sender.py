"""The send path, step 2: a validated message made durable and published by one script call.

A socket (`gateway.inbound`) asks for a `SendRoute` once per user and
channel, then for each message `start`s a `PendingSend` and gets its outcome
from `result_now` (in the reply's callback: no task, no coroutine) or, when
that cannot settle it, from `finish`. Either way it is one run of
`shared/redis_scripts/send.lua`, which dedupes on `client_id`, checks the
counter and the rate limit, assigns the message id and the channel's next
`seq`, appends the frame to the recent-history stream and the entry to the
ingest stream, and publishes the frame, atomically. Only once the script has
returned is the message durable, and only then acknowledged.

The script's keys and arguments (send.lua's header has the full list) come in
three groups: the channel's (keys 1-5, ARGV 1-8: built once per route), the
socket's (the rate key, `user_id`), and the message's own: its dedupe key,
`kind`, `client_id`, `body`, `tail` and the channel's floor. `kind` is the
frame's `type` ("message" for chat messages; other kinds, such as edits, take a
seq in the same order) and the ingest entry's `kind`; `tail` is the frame after
the fields the script assigns, which it prepends as
`{"type":<kind>,"id":..,"seq":..,"created_at":"..",` (the layout
`shared.wire.message_frame` builds for stored messages). The script, not each
gateway, finishes the frame and formats `created_at`: the id and time are made
inside it, the frame is published and kept in the recent stream in the same
atomic step, and building it in Python instead, once per message and gateway,
measured about 6 % of a small-channel gateway's CPU (README, "Design decisions
beyond DESIGN.md").

Where the script runs is decided in one place, `Sender.__init__`:

- one Redis server: `PipelinedRedis`, one connection shared by every send of
  this gateway, so the call leaves in the same loop turn as the frame that
  asked for it, already RESP-encoded from parts built once per route;
- a cluster: redis-py's cluster client (`Script`), which routes the call to the
  master of the channel's slot; `start` leaves nothing, so `finish` runs it.

`finish` also handles what `result_now` leaves to it: a lost connection (one
retry when the message has a `client_id`, so the script's dedupe makes it
safe), a Redis that forgot the script (`NOSCRIPT`: run it with EVAL, which
caches it), and a counter to seed or raise (`noseq`/`behind`, through
`gateway.seq_floors`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from gateway.pipelined_redis import PipelinedRedis
from gateway.seq_floors import SeqFloors
from shared.errors import RateLimitedError, UnavailableError
from shared.redis_keys import RECENT_TTL_MS, RedisKeys, partition_of
from shared.scripts import Scripts
from shared.seq_counter import publish_command
from shared.settings import Settings

log = logging.getLogger(__name__)

# The frame `type` (and ingest entry `kind`) of a chat message.
MESSAGE_KIND = "message"
# send.lua takes 7 keys and 15 arguments for a message; a change of a message
# (shared/redis_scripts/message_state.lua) one key and five arguments more.
_SEND_KEY_COUNT = 7
_SEND_ARGV_COUNT = 15
# Script replies that mean "raise the channel's counter, then send again".
_NEEDS_COUNTER = (b"noseq", b"behind")
# Raises before a send gives up: one suffices unless the floor moves meanwhile.
_COUNTER_REPAIRS = 3

ScriptReply = list[bytes]


@dataclass(frozen=True, slots=True)
class SendRoute:
    """What every send of one user to one channel shares; one per socket."""

    channel_id: int
    user_id: int
    keys: tuple[str, ...]  # KEYS[1..6]: the channel's five, then the user's rate key
    args: tuple[int | str, ...]  # ARGV[1..9]: the channel's eight, then `user_id`
    dedupe_prefix: str
    # RESP: the EVALSHA command up to and including `keys`; `args` as bulk strings.
    # The dedupe key (KEYS[7]) goes between them.
    encoded_keys: bytes
    encoded_args: bytes


@dataclass(frozen=True, slots=True)
class ChangeStep:
    """What the send script checks and writes for a change of a message
    (message_state.lua): the message's state key, the op, a reaction's emoji and
    bounds."""

    state_key: str
    op: str
    emoji: str
    max_emojis: int
    max_per_user: int


@dataclass(slots=True)
class PendingSend:
    """One message (or change event) on its way and, once made, its first script call."""

    route: SendRoute
    kind: str
    client_id: str | None
    dedupe_key: str
    body: bytes
    tail: bytes
    floor: int  # the highest seq known to exist in the channel
    first: asyncio.Future[Any] | None = None
    target_id: int | None = None  # a reply's parent, or the message a change changes
    change: ChangeStep | None = None

    def script_keys(self) -> list[str]:
        keys = [*self.route.keys, self.dedupe_key]
        if self.change is not None:
            keys.append(self.change.state_key)
        return keys

    def script_args(self) -> list[str | int | bytes]:
        args: list[str | int | bytes] = [
            *self.route.args,
            self.kind,
            self.client_id or "",
            self.body,
            self.tail,
            self.floor,
            "" if self.target_id is None else self.target_id,
        ]
        change = self.change
        if change is not None:
            args += [change.op, change.emoji, change.max_emojis, change.max_per_user, RECENT_TTL_MS]
        return args

    def encoded_evalsha(self) -> bytes:
        """`EVALSHA` with `script_keys()` and `script_args()`, as RESP: the route's
        part is encoded once, the message's here. Not for a change (`change`), whose
        keys and arguments are more: it is sent as a plain command."""
        route = self.route
        return b"".join(
            (
                route.encoded_keys,
                _bulk(self.dedupe_key.encode()),
                route.encoded_args,
                _KIND_ARGS.get(self.kind) or _bulk(self.kind.encode()),
                _bulk(self.client_id.encode() if self.client_id else b""),
                _bulk(self.body),
                _bulk(self.tail),
                _bulk(b"%d" % self.floor),
                _bulk(b"" if self.target_id is None else b"%d" % self.target_id),
            )
        )


@dataclass(frozen=True, slots=True)
class SendResult:
    message_id: int
    seq: int
    created_at_ms: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class ChangeReply:
    """What the send script made of a change: `ok` (with the event's `result`; a
    reaction's `count`), `same` (a no-op: nothing written, the current `count`), or
    a refusal: `gone` (deleted), `full` (reaction bounds), `noseed` (seed the
    message's state, then send again)."""

    status: str
    result: SendResult | None
    count: int | None


class Sender:
    """Runs the send script for this gateway's sockets; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        sends: PipelinedRedis | Redis,
        scripts: Scripts,
        keys: RedisKeys,
        seq_floors: SeqFloors,
    ) -> None:
        self._settings = settings
        self._scripts = scripts
        self._keys = keys
        self._seq_floors = seq_floors
        self._seen = seq_floors.channels  # read on every send
        # The only place the two ways of running the script part.
        self._pipelined: PipelinedRedis | None = None
        self._client: Redis | None = None
        if isinstance(sends, PipelinedRedis):
            self._pipelined = sends
        else:
            self._client = sends
        self._publish_command = publish_command(settings.redis_cluster)

    def route(self, channel_id: int, user_id: int) -> SendRoute:
        """What `start` needs for every message of this user in this channel."""
        keys, settings = self._keys, self._settings
        script_keys = (
            keys.channel_seq(channel_id),
            keys.channel_recent(channel_id),
            keys.ingest_stream_of(channel_id),
            keys.id_clock(channel_id),
            keys.channel_topic(channel_id),
            keys.message_rate(channel_id, user_id),
        )
        args = (
            settings.ws_message_rate,
            settings.ws_message_rate_window_seconds * 1000,
            settings.client_id_dedupe_seconds,
            settings.recent_history_size,
            RECENT_TTL_MS,
            partition_of(channel_id, settings.redis_partitions),
            self._publish_command,
            channel_id,
            user_id,
        )
        head = ("EVALSHA", self._scripts.send.sha, _SEND_KEY_COUNT, *script_keys)
        return SendRoute(
            channel_id=channel_id,
            user_id=user_id,
            keys=script_keys,
            args=args,
            dedupe_prefix=keys.dedupe_prefix(channel_id, user_id),
            encoded_keys=b"*%d\r\n%b" % (3 + _SEND_KEY_COUNT + _SEND_ARGV_COUNT, _encode(head)),
            encoded_args=_encode(args),
        )

    def start(
        self,
        route: SendRoute,
        *,
        client_id: str | None,
        body: bytes,
        tail: bytes,
        kind: str = MESSAGE_KIND,
        target_id: int | None = None,
    ) -> PendingSend:
        """Begin sending (`target_id`: a reply's parent): the script call leaves now if
        the pipelined connection is up (`first`); settle it with `result_now` once
        that is done, else with `finish`."""
        seen = self._seen.get(route.channel_id)
        floor = 0 if seen is None else seen.floor
        dedupe_key = route.dedupe_prefix + (client_id or "-")
        pending = PendingSend(
            route, kind, client_id, dedupe_key, body, tail, floor, target_id=target_id
        )
        if self._pipelined is not None:
            pending.first = self._pipelined.send_nowait(pending.encoded_evalsha())
        return pending

    def result_now(self, pending: PendingSend) -> SendResult | None:
        """The outcome of a finished first call, or None when `finish` must take over
        (a lost connection, a Redis that forgot the script, a counter to raise).

        Raises like `finish`.
        """
        first = pending.first
        assert first is not None  # done: called from its callback
        error = first.exception()
        if error is None:
            reply: ScriptReply = first.result()
            return None if reply[0] in _NEEDS_COUNTER else _outcome(reply)
        if isinstance(error, RedisConnectionError) or _is_noscript(error):
            return None
        log.warning("send script failed", extra={"error": type(error).__name__})
        raise UnavailableError() from error

    async def finish(self, pending: PendingSend) -> SendResult:
        """Make a message durable and publish it, whatever its first call left to do.

        Raises RateLimitedError (with `retry_after`) or UnavailableError. On
        UnavailableError the message may still have been stored (a timeout after
        Redis ran the script): a client that re-sends with the same `client_id`
        gets the original back instead of a copy.
        """
        return _outcome(await self._final_reply(pending))

    async def send_change(
        self,
        *,
        kind: str,
        channel_id: int,
        user_id: int,
        message_id: int,
        client_id: str | None,
        body: bytes,
        tail: bytes,
        op: str,
        emoji: str,
    ) -> ChangeReply:
        """Send a change of message `message_id` (an edit, a delete, a reaction) as an
        event of `kind` that takes the channel's next seq like a message, with the
        script's check of the message's state (see ChangeReply). Raises like `finish`."""
        route = self.route(channel_id, user_id)
        seen = self._seen.get(channel_id)
        pending = PendingSend(
            route,
            kind,
            client_id,
            route.dedupe_prefix + (client_id or "-"),
            body,
            tail,
            0 if seen is None else seen.floor,
            target_id=message_id,
            change=ChangeStep(
                self._keys.message_state(channel_id, message_id),
                op,
                emoji,
                self._settings.reaction_max_emojis,
                self._settings.reaction_max_per_user,
            ),
        )
        reply = await self._final_reply(pending)
        status = reply[0].decode()
        if status in ("gone", "full", "noseed"):
            return ChangeReply(status, None, None)
        if status == "same":
            return ChangeReply(status, None, int(reply[1]))
        count = int(reply[4]) if len(reply) > 4 else None
        return ChangeReply("ok", _outcome(reply), count)

    async def _final_reply(self, pending: PendingSend) -> ScriptReply:
        """The script's last reply, the channel's counter raised first if it had to be."""
        # With a client_id the script dedupes, so a retry after a lost connection
        # (a pooled connection gone stale when Redis restarted) is safe.
        retries = 1 if pending.client_id else 0
        first, pending.first = pending.first, None
        reply = await self._call_retrying(pending, retries, first)
        channel_id = pending.route.channel_id
        for _ in range(_COUNTER_REPAIRS):
            if reply[0] not in _NEEDS_COUNTER:
                break
            # No counter (a new channel, a Redis without its data), or one behind
            # what exists: seeded or raised once per channel, not per message.
            await self._seq_floors.repair(channel_id)
            pending.floor = self._seq_floors.observe(channel_id, 0)
            reply = await self._call_retrying(pending, retries, None)
        if reply[0] in _NEEDS_COUNTER:
            # Raised each time and behind again: something keeps resetting it.
            log.error(
                "channel counter still behind after raising it", extra={"channel_id": channel_id}
            )
            raise UnavailableError()
        return reply

    async def _call_retrying(
        self, pending: PendingSend, retries: int, first: asyncio.Future[Any] | None
    ) -> ScriptReply:
        """`_call`, again on a lost connection while `retries` last; Redis errors
        become UnavailableError."""
        while True:
            try:
                return await self._call(pending, first)
            except RedisConnectionError as exc:
                if retries > 0:
                    retries -= 1
                    first = None
                    continue
                log.warning("send script failed", extra={"error": type(exc).__name__})
                raise UnavailableError() from exc
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("send script failed", extra={"error": type(exc).__name__})
                raise UnavailableError() from exc

    async def _call(self, pending: PendingSend, first: asyncio.Future[Any] | None) -> ScriptReply:
        """One run of the script; `first`, when given, is a call already made."""
        reply: ScriptReply
        pipelined = self._pipelined
        if pipelined is None:
            # redis-py's Script: EVALSHA to the slot's master, loading it on NOSCRIPT.
            keys, args = pending.script_keys(), pending.script_args()
            reply = await self._scripts.send(keys=keys, args=args, client=self._client)
            return reply
        try:
            if pending.change is not None:
                keys, args = pending.script_keys(), pending.script_args()
                sha = self._scripts.send.sha
                reply = await pipelined.call("EVALSHA", sha, len(keys), *keys, *args)
            else:
                reply = await (
                    first if first is not None else pipelined.send(pending.encoded_evalsha())
                )
        except ResponseError as exc:
            if not _is_noscript(exc):
                raise
            # A restarted or flushed Redis forgot the script: EVAL runs and caches it.
            keys, args = pending.script_keys(), pending.script_args()
            reply = await pipelined.call("EVAL", self._scripts.send_source, len(keys), *keys, *args)
        return reply


def _outcome(reply: ScriptReply) -> SendResult:
    status = reply[0]
    if status == b"rate":
        raise RateLimitedError(
            "Too many messages, slow down", retry_after=max(int(reply[1]), 1) / 1000
        )
    if status not in (b"ok", b"dup"):
        log.error("unexpected send reply", extra={"status": repr(status)})
        raise UnavailableError()
    return SendResult(
        message_id=int(reply[1]),
        seq=int(reply[2]),
        created_at_ms=int(reply[3]),
        duplicate=status == b"dup",
    )


def _bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(value), value)


def _encode(values: tuple[int | str, ...]) -> bytes:
    return b"".join(_bulk(str(value).encode()) for value in values)


def _is_noscript(error: BaseException) -> bool:
    return isinstance(error, ResponseError) and str(error).startswith("NOSCRIPT")


# The kinds sent most, encoded once.
_KIND_ARGS = {MESSAGE_KIND: _bulk(MESSAGE_KIND.encode())}
