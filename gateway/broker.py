"""Cross-node messaging over Redis: the send script, subscriptions, control events.

A send runs the one Lua script that dedupes, rate-limits, assigns the channel's
next `seq` and the message id, appends to the recent-history and ingest streams
and publishes the finished frame, atomically and in one round trip. Once it
returns, the message is durable in the stream: only then is it acknowledged.
`start_send` makes the script call at once when the connection is up, so the
usual send completes in that call's callback (`result_now`), with no task or
coroutine; `send` awaits the rest (connecting, retrying, seeding a counter).
Each send passes the channel's floor (`gateway.seq_floors`), so a counter that
went back with lost Redis writes is raised instead of handing out a seq again.

Incoming publishes reach `Deliveries.deliver` as the bytes that were published;
frames are never decoded or re-encoded on the way to the sockets. Control
events (a member removed, a user's tokens revoked, a read marker moved, a user
typing, a channel's counter raised) share the channel's topic and start with
`!`, which no JSON frame does. A `presence` event, published by the presence
scripts, is `!presence ` and the finished frame for the sockets that take
events (`Deliveries.deliver_event`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
import orjson
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from gateway.cluster_subscriber import ClusterSubscriber
from gateway.pipelined_redis import PipelinedRedis
from gateway.seq_floors import Seen, SeqFloors
from gateway.subscriber import Subscriber
from shared.errors import CloseCode, RateLimitedError, UnavailableError
from shared.redis_keys import RECENT_TTL_MS, RedisKeys, partition_of
from shared.scripts import Scripts
from shared.seq_counter import CHANNEL_REWOUND, publish_command
from shared.settings import Settings
from shared.wire import (
    TYPING_EXPIRES_MS,
    frame_head,
    frame_id,
    frame_seq,
    is_message_frame,
)

log = logging.getLogger(__name__)

_CONTROL_PREFIX = b"!"
# What shared/redis_scripts/presence_common.lua puts before a presence frame.
_PRESENCE_PREFIX = b"!presence "
# send.lua takes 7 keys and 15 arguments for a message; a change of a message
# (message_state.lua) one key and five arguments more.
_SEND_KEY_COUNT = 7
_SEND_ARGV_COUNT = 15
_MESSAGE_KIND = b"message"
# Script replies that mean "raise the channel's counter, then send again".
_NEEDS_COUNTER = (b"noseq", b"behind")
# Raises before a send gives up: one suffices unless the floor moves meanwhile.
_COUNTER_REPAIRS = 3
# What each control event closes, and with which code (the membership audit closes
# with the same when it finds what an event it missed would have closed).
CONTROL_CLOSES: dict[str, tuple[CloseCode, str]] = {
    "member_removed": (CloseCode.FORBIDDEN, "no longer a member of this channel"),
    "tokens_revoked": (CloseCode.UNAUTHORIZED, "token revoked, log in again"),
}
# Control events that become frames for the sockets that take live events
# (`Deliveries.deliver_event`), and whether only the event's user's sockets get
# them. The frame is `{"type": <event>, "channel_id": ..}` plus the event's
# other fields, encoded once per gateway.
CONTROL_FRAMES: dict[str, bool] = {
    "read": True,  # a user's read marker moved: their other sockets update badges
    "typing": False,  # a user types (ephemeral): every taker of the channel shows it
}


class Deliveries(Protocol):
    """Where the broker hands what arrives for this node (the hub)."""

    def deliver(self, channel_id: int, frame: bytes, seq: int, message_id: int) -> None:
        """Offer a message frame, whose `seq` and id the broker read, to the local sockets."""
        ...

    def deliver_change(self, channel_id: int, frame: bytes, seq: int) -> None:
        """Offer a change event (it has a seq, in the channel's order)."""
        ...

    def deliver_event(self, channel_id: int, user_id: int | None, frame: bytes) -> None: ...

    def remove_user(self, channel_id: int, user_id: int, code: CloseCode, reason: str) -> None: ...

    def resync(self, channel_ids: list[int]) -> None: ...

    def rewound(self, channel_id: int, after_seq: int, to_seq: int, *, replay: range) -> None:
        """Seqs `after_seq`+1 to `to_seq` may have been lost or given to other messages:
        tell the sockets that saw any, and replay them the seqs in `replay` (what
        follows comes live)."""
        ...


@dataclass(frozen=True, slots=True)
class _ChannelScript:
    """The send script's keys and arguments shared by every send to one channel,
    and their RESP encoding (see the argument order in send.lua)."""

    keys: tuple[str, ...]  # seq, recent, ingest stream, id clock, topic
    args: tuple[int | str, ...]  # ARGV[1..8]; ARGV[9..] are the user's and the message's
    sha: str
    encoded_keys: bytes  # the EVALSHA command up to and including `keys`
    encoded_args: bytes


@dataclass(frozen=True, slots=True)
class SendRoute:
    """What every send of one user to one channel shares; one per socket."""

    channel_id: int
    user_id: int
    channel: _ChannelScript
    rate_key: str
    dedupe_prefix: str
    encoded_rate_key: bytes
    encoded_user_id: bytes


@dataclass(frozen=True, slots=True)
class ChangeStep:
    """What the send script checks and writes for a change of a message
    (message_state.lua): its state key, the op, a reaction's emoji and bounds."""

    state_key: str
    op: str
    emoji: str
    max_emojis: int
    max_per_user: int


@dataclass(slots=True)
class PendingSend:
    """One message (or change event) on its way and, once made, its first script call."""

    route: SendRoute
    client_id: str | None
    dedupe_key: str
    body: bytes
    tail: bytes
    floor: int  # the highest seq known to exist in the channel
    first: asyncio.Future[Any] | None = None
    kind: bytes = _MESSAGE_KIND
    target_id: int | None = None  # a reply's parent, or the message a change changes
    change: ChangeStep | None = None

    def script_keys(self) -> list[str]:
        keys = [*self.route.channel.keys, self.route.rate_key, self.dedupe_key]
        if self.change is not None:
            keys.append(self.change.state_key)
        return keys

    def script_args(self) -> list[str | int | bytes]:
        route = self.route
        args: list[str | int | bytes] = [
            *route.channel.args,
            route.user_id,
            self.client_id or "",
            self.body,
            self.tail,
            self.floor,
            self.kind,
            "" if self.target_id is None else self.target_id,
        ]
        change = self.change
        if change is not None:
            args += [change.op, change.emoji, change.max_emojis, change.max_per_user, RECENT_TTL_MS]
        return args

    def encoded_evalsha(self) -> bytes:
        """`EVALSHA` with `script_keys()` and `script_args()`, as RESP, from the parts
        encoded once per channel and per socket (a change, rare, is encoded whole)."""
        route = self.route
        if self.change is not None:
            keys, args = self.script_keys(), self.script_args()
            parts = ("EVALSHA", route.channel.sha, len(keys), *keys, *args)
            return b"*%d\r\n" % len(parts) + b"".join(
                _bulk(p if isinstance(p, bytes) else str(p).encode()) for p in parts
            )
        return b"".join(
            (
                route.channel.encoded_keys,
                route.encoded_rate_key,
                _bulk(self.dedupe_key.encode()),
                route.channel.encoded_args,
                route.encoded_user_id,
                _bulk(self.client_id.encode() if self.client_id else b""),
                _bulk(self.body),
                _bulk(self.tail),
                _bulk(b"%d" % self.floor),
                _bulk(self.kind),
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


class Broker:
    """Implements the hub's `Subscriptions` port and the send path."""

    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        sends: PipelinedRedis | Redis,
        scripts: Scripts,
        pool: asyncpg.Pool[asyncpg.Record],
    ) -> None:
        self._settings = settings
        self._redis = redis
        self._sends = sends
        self._scripts = scripts
        self._pool = pool
        self._keys = RedisKeys(settings.redis_key_prefix, settings.redis_partitions)
        self._publish_command = publish_command(settings.redis_cluster)
        self._topics: dict[bytes, int] = {}
        self._seq_floors = SeqFloors(settings, redis, scripts, pool, self._keys)
        self._seen = self._seq_floors.channels  # read on every send and delivery
        # The send script's per-channel keys and arguments, built once per
        # subscribed channel instead of once per message.
        self._channels: dict[int, _ChannelScript] = {}
        self._deliveries: Deliveries | None = None
        self.subscriber: Subscriber | ClusterSubscriber
        if settings.redis_cluster:
            self.subscriber = ClusterSubscriber(
                settings.redis_url.get_secret_value(),
                self._on_publish,
                self._on_resync,
                timeout=settings.redis_timeout_seconds,
            )
        else:
            self.subscriber = Subscriber(
                settings.redis_url.get_secret_value(),
                self._on_publish,
                self._on_resync,
                timeout=settings.redis_timeout_seconds,
                sharded=False,
            )

    def bind(self, deliveries: Deliveries) -> None:
        self._deliveries = deliveries

    async def subscribe(self, channel_id: int) -> None:
        await self._seq_floors.open(channel_id)
        topic = self._keys.channel_topic(channel_id)
        self._topics[topic.encode()] = channel_id
        try:
            await self.subscriber.subscribe(topic)
        except BaseException:
            self._topics.pop(topic.encode(), None)
            self._seq_floors.close(channel_id)
            raise
        self._channels[channel_id] = self._channel_script(channel_id)

    async def unsubscribe(self, channel_id: int) -> None:
        topic = self._keys.channel_topic(channel_id)
        self._topics.pop(topic.encode(), None)
        self._channels.pop(channel_id, None)
        self._seq_floors.close(channel_id)
        await self.subscriber.unsubscribe(topic)

    def known_head(self, channel_id: int, head: int) -> int:
        """The channel's head as a new socket should start from: `head` (just read from
        the counter) or, if the counter went back, the highest seq known to exist."""
        return self._seq_floors.observe(channel_id, head)

    def route(self, channel_id: int, user_id: int) -> SendRoute:
        """What `start_send` needs for every message of this user in this channel."""
        channel = self._channels.get(channel_id) or self._channel_script(channel_id)
        rate_key = self._keys.message_rate(channel_id, user_id)
        return SendRoute(
            channel_id=channel_id,
            user_id=user_id,
            channel=channel,
            rate_key=rate_key,
            dedupe_prefix=self._keys.dedupe_prefix(channel_id, user_id),
            encoded_rate_key=_bulk(rate_key.encode()),
            encoded_user_id=_bulk(b"%d" % user_id),
        )

    def _channel_script(self, channel_id: int) -> _ChannelScript:
        keys, settings = self._keys, self._settings
        script_keys = (
            keys.channel_seq(channel_id),
            keys.channel_recent(channel_id),
            keys.ingest_stream_of(channel_id),
            keys.id_clock(channel_id),
            keys.channel_topic(channel_id),
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
        )
        # All keys but the socket's rate key and the message's dedupe key come
        # here, all arguments but the user's and the message's own.
        head = ("EVALSHA", self._scripts.send.sha, _SEND_KEY_COUNT, *script_keys)
        return _ChannelScript(
            keys=script_keys,
            args=args,
            sha=self._scripts.send.sha,
            encoded_keys=b"*%d\r\n%b" % (3 + _SEND_KEY_COUNT + _SEND_ARGV_COUNT, _encode(head)),
            encoded_args=_encode(args),
        )

    def _on_publish(self, topic: bytes, payload: bytes) -> None:
        channel_id = self._topics.get(topic)
        if channel_id is None or self._deliveries is None:
            return
        if payload.startswith(_CONTROL_PREFIX):
            self._on_control(channel_id, payload)
            return
        try:
            # Read once, here: the hub needs them, and so does the check below.
            message = is_message_frame(payload)
            if message:
                seq = frame_seq(payload)
                message_id = frame_id(payload)
            else:
                _, message_id, seq = frame_head(payload)
        except ValueError:
            log.warning("published frame without a seq dropped", extra={"channel_id": channel_id})
            return
        if message:
            self._deliveries.deliver(channel_id, payload, seq, message_id)
        else:
            # An edit, a delete, a reaction: in the seq order, shown to event takers only.
            self._deliveries.deliver_change(channel_id, payload, seq)
        seen = self._seen.get(channel_id)
        if seen is not None and seen.delivered(seq, message_id):
            self._seq_reused(channel_id, seq, seen)

    def _seq_reused(self, channel_id: int, seq: int, seen: Seen) -> None:
        """A live message took a seq that an older message had here: the counter went
        back at a node that knew less. Replay it to the sockets, which dropped it as a
        repeat, and raise the counter to what this node has seen."""
        log.error(
            "a message reused a delivered seq (Redis lost writes)",
            extra={"channel_id": channel_id, "seq": seq, "floor": seen.floor},
        )
        assert self._deliveries is not None  # it just delivered
        self._deliveries.rewound(channel_id, seq - 1, seen.floor, replay=range(seq, seq + 1))
        self._seq_floors.repair_soon(channel_id)

    def _on_resync(self, topics: list[bytes]) -> None:
        if self._deliveries is not None:
            channel_ids = [self._topics[t] for t in topics if t in self._topics]
            self._deliveries.resync(channel_ids)
            # A reconnect is when Redis may have come back with less than it had.
            self._seq_floors.verify(channel_ids)

    def _on_control(self, channel_id: int, payload: bytes) -> None:
        assert self._deliveries is not None  # checked by the caller
        if payload.startswith(_PRESENCE_PREFIX):
            self._deliveries.deliver_event(channel_id, None, payload[len(_PRESENCE_PREFIX) :])
            return
        try:
            event = orjson.loads(payload[1:])
            name = event.pop("event")
            closing = CONTROL_CLOSES.get(name)
            if closing is not None:
                self._deliveries.remove_user(channel_id, int(event["user_id"]), *closing)
            elif name == CHANNEL_REWOUND:
                seq = int(event["seq"])
                self._deliveries.rewound(
                    channel_id, int(event["after_seq"]), seq, replay=range(seq + 1, seq + 1)
                )
                seen = self._seen.get(channel_id)
                if seen is not None and seen.floor > seq:
                    # Raised by a node that knew less than this one: raise it further.
                    self._seq_floors.repair_soon(channel_id)
            elif name in CONTROL_FRAMES:
                user_id = int(event["user_id"]) if CONTROL_FRAMES[name] else None
                frame = orjson.dumps({"type": name, "channel_id": channel_id, **event})
                self._deliveries.deliver_event(channel_id, user_id, frame)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("malformed control event ignored", extra={"channel_id": channel_id})

    async def publish_member_removed(self, channel_id: int, user_id: int) -> None:
        """Tell every node to close `user_id`'s sockets in the channel."""
        await self._publish_control([channel_id], "member_removed", user_id)

    async def publish_tokens_revoked(self, channel_ids: list[int], user_id: int) -> None:
        """Tell every node to close `user_id`'s sockets in these channels (4401):
        the tokens they were opened with are revoked."""
        await self._publish_control(channel_ids, "tokens_revoked", user_id)

    async def publish_typing(self, channel_id: int, user_id: int) -> None:
        """Tell every node's event-taking sockets in the channel that `user_id` types."""
        await self._publish_control(
            [channel_id], "typing", user_id, expires_in_ms=TYPING_EXPIRES_MS
        )

    async def publish_read(self, channel_id: int, user_id: int, last_read_seq: int) -> None:
        """Tell every node that `user_id`'s read marker in the channel is now `last_read_seq`."""
        await self._publish_control([channel_id], "read", user_id, last_read_seq=last_read_seq)

    async def _publish_control(
        self, channel_ids: list[int], event: str, user_id: int, **fields: int
    ) -> None:
        """Publish one control event on each channel's topic, pipelined: a user in
        many channels costs one round trip per pipeline, not one per channel.

        Raises UnavailableError.
        """
        body = {"event": event, "user_id": user_id, **fields}
        payload = _CONTROL_PREFIX + orjson.dumps(body)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for channel_id in channel_ids:
                    topic = self._keys.channel_topic(channel_id)
                    if self._settings.redis_cluster:
                        pipe.spublish(topic, payload)
                    else:
                        pipe.publish(topic, payload)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise UnavailableError() from exc

    def start_send(
        self,
        route: SendRoute,
        *,
        client_id: str | None,
        body: bytes,
        tail: bytes,
        target_id: int | None = None,
    ) -> PendingSend:
        """Begin sending a message (`target_id`: the parent of a reply): its first
        script call leaves now if a connection is up (`first`); finish with
        `result_now` once that is done, or with `send`."""
        dedupe_key = route.dedupe_prefix + (client_id or "-")
        seen = self._seen.get(route.channel_id)
        floor = 0 if seen is None else seen.floor
        pending = PendingSend(route, client_id, dedupe_key, body, tail, floor, target_id=target_id)
        if isinstance(self._sends, PipelinedRedis):
            pending.first = self._sends.send_nowait(pending.encoded_evalsha())
        return pending

    def result_now(self, pending: PendingSend) -> SendResult | None:
        """The outcome of a finished first call, or None when `send` must take over
        (a lost connection, a Redis that forgot the script, a counter to raise).

        Raises like `send`.
        """
        first = pending.first
        assert first is not None  # done: called from its callback
        error = first.exception()
        if error is None:
            reply: list[bytes] = first.result()
            return None if reply[0] in _NEEDS_COUNTER else _outcome(reply)
        if isinstance(error, RedisConnectionError) or _is_noscript(error):
            return None
        log.warning("send script failed", extra={"error": type(error).__name__})
        raise UnavailableError() from error

    async def send(self, pending: PendingSend) -> SendResult:
        """Make a message durable and publish it; see the module docstring.

        Raises RateLimitedError (with `retry_after`) or UnavailableError. On
        UnavailableError the message may still have been stored (a timeout after
        Redis ran the script): a client that re-sends with the same `client_id`
        gets the original back instead of a copy.
        """
        return _outcome(await self._send_reply(pending))

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
        event that takes the channel's next seq, like a message, with the script's
        check of the message's state (see ChangeReply). Raises like `send`."""
        route = self.route(channel_id, user_id)
        seen = self._seen.get(channel_id)
        pending = PendingSend(
            route,
            client_id,
            route.dedupe_prefix + (client_id or "-"),
            body,
            tail,
            0 if seen is None else seen.floor,
            kind=kind.encode(),
            target_id=message_id,
            change=ChangeStep(
                self._keys.message_state(channel_id, message_id),
                op,
                emoji,
                self._settings.reaction_max_emojis,
                self._settings.reaction_max_per_user,
            ),
        )
        reply = await self._send_reply(pending)
        status = reply[0].decode()
        if status in ("gone", "full", "noseed"):
            return ChangeReply(status, None, None)
        if status == "same":
            return ChangeReply(status, None, int(reply[1]))
        count = int(reply[4]) if len(reply) > 4 else None
        return ChangeReply("ok", _outcome(reply), count)

    async def _send_reply(self, pending: PendingSend) -> list[bytes]:
        """The script's final reply, the counter raised first if it had to be."""
        # With a client_id the script dedupes, so a retry after a lost connection
        # (a pooled connection gone stale when Redis restarted) is safe.
        retries = 1 if pending.client_id else 0
        first, pending.first = pending.first, None
        reply = await self._run_send(pending, retries, first)
        channel_id = pending.route.channel_id
        for _ in range(_COUNTER_REPAIRS):
            if reply[0] not in _NEEDS_COUNTER:
                break
            # No counter (a new channel, a Redis without its data), or one behind
            # what exists: seeded or raised once per channel, not per message.
            await self._seq_floors.repair(channel_id)
            pending.floor = self._seq_floors.observe(channel_id, 0)
            reply = await self._run_send(pending, retries, None)
        if reply[0] in _NEEDS_COUNTER:
            # Raised each time and behind again: something keeps resetting it.
            log.error(
                "channel counter still behind after raising it", extra={"channel_id": channel_id}
            )
            raise UnavailableError()
        return reply

    async def _run_send(
        self, pending: PendingSend, retries: int, first: asyncio.Future[Any] | None
    ) -> list[bytes]:
        while True:
            try:
                reply = await self._eval_send(pending, first)
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
            return reply

    async def _eval_send(
        self, pending: PendingSend, first: asyncio.Future[Any] | None
    ) -> list[bytes]:
        """One run of the script; `first`, when given, is a call already made."""
        sends = self._sends
        reply: list[bytes]
        if not isinstance(sends, PipelinedRedis):
            script_keys, args = pending.script_keys(), pending.script_args()
            reply = await self._scripts.send(keys=script_keys, args=args, client=sends)
            return reply
        try:
            if first is None:
                reply = await sends.send(pending.encoded_evalsha())
            else:
                reply = await first
        except ResponseError as exc:
            if not _is_noscript(exc):
                raise
            # A restarted or flushed Redis forgot the script: EVAL runs and caches it.
            script_keys, args = pending.script_keys(), pending.script_args()
            reply = await sends.call(
                "EVAL", self._scripts.send_source, len(script_keys), *script_keys, *args
            )
        return reply

    async def aclose(self) -> None:
        await self._seq_floors.aclose()
        await self.subscriber.aclose()


def _outcome(reply: list[bytes]) -> SendResult:
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
