"""This node's map of channels to local connections, and local fan-out.

The hub owns `channel_id -> set[Connection]`. The first local member of a
channel makes the hub subscribe (through the `Subscriptions` port, which
`gateway.channel_topics` implements); the last one leaving unsubscribes.
Delivery takes the frame with its `seq` (read once, by the channel topics),
frames it once and offers the same bytes to each connection, which queues
them without waiting: the hub never awaits a socket, so fan-out cost does not
depend on the slowest client.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Protocol

from gateway.connection import Connection
from gateway.metrics import GatewayMetrics
from gateway.outbox import Outbox
from gateway.websocket import text_frame
from shared.errors import ChannelRewoundError, CloseCode, TooManySocketsError
from shared.wire import created_ms_of


class Subscriptions(Protocol):
    """Cross-node fan-out, as the hub needs it.

    `subscribe` returns once messages published to the channel after that point
    will reach `Hub.deliver`; it raises if that cannot be promised.
    `unsubscribe` stops them; it never raises.
    """

    async def subscribe(self, channel_id: int) -> None: ...

    async def unsubscribe(self, channel_id: int) -> None: ...


class Hub:
    def __init__(
        self, subscriptions: Subscriptions, metrics: GatewayMetrics, *, max_sockets_per_user: int
    ) -> None:
        self._subscriptions = subscriptions
        self._metrics = metrics
        self._channels: dict[int, set[Connection]] = {}
        # Per gateway, not per cluster: what the cap protects is this node's
        # memory, and counting here costs no round trip per connect.
        self._max_sockets_per_user = max_sockets_per_user
        self._sockets_of_user: dict[int, int] = {}
        self._sockets: set[Outbox] = set()
        # Serializes subscribe/unsubscribe per channel, so a join racing the last
        # leave never ends with members and no subscription.
        self._locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._resync_listeners: list[Callable[[], None]] = []
        # The connections that take live-state events, by channel and user: a
        # user's event (`read`) in a big channel reaches that user's few sockets
        # without a walk over every member. Only the multiplexed socket's
        # connections are here; a per-channel socket costs nothing.
        self._event_takers: dict[int, dict[int, set[Connection]]] = {}

    def open_socket(self, out: Outbox) -> None:
        """Register a socket, counted once for its user however many channels it
        holds (`close_all` closes it); raises TooManySocketsError at the cap."""
        user_id = out.user_id
        held = self._sockets_of_user.get(user_id, 0)
        if held >= self._max_sockets_per_user:
            raise TooManySocketsError()
        self._sockets_of_user[user_id] = held + 1
        self._sockets.add(out)

    def close_socket(self, out: Outbox) -> None:
        """The end of a socket `open_socket` registered."""
        self._sockets.remove(out)
        user_id = out.user_id
        held = self._sockets_of_user[user_id] - 1
        if held:
            self._sockets_of_user[user_id] = held
        else:
            del self._sockets_of_user[user_id]

    async def join(self, connection: Connection) -> None:
        """Register a connection; subscribes the node if it is the channel's first.

        Raises whatever `subscribe` raises, with the hub left unchanged.
        """
        channel_id = connection.channel_id
        async with self._locks[channel_id]:
            members = self._channels.get(channel_id)
            if members is None:
                await self._subscriptions.subscribe(channel_id)
                members = self._channels[channel_id] = set()
            members.add(connection)
            if connection.wants_events:
                takers = self._event_takers.setdefault(channel_id, {})
                takers.setdefault(connection.user_id, set()).add(connection)

    async def leave(self, connection: Connection) -> None:
        channel_id = connection.channel_id
        async with self._locks[channel_id]:
            members = self._channels.get(channel_id)
            if members is None or connection not in members:
                return
            members.remove(connection)
            if connection.wants_events:
                self._drop_event_taker(connection)
            if not members:
                del self._channels[channel_id]
                await self._subscriptions.unsubscribe(channel_id)
        if channel_id not in self._channels and not self._locks[channel_id].locked():
            self._locks.pop(channel_id, None)

    def _drop_event_taker(self, connection: Connection) -> None:
        # Tolerant: a flag turned on after `join` left the connection unindexed.
        takers = self._event_takers.get(connection.channel_id, {})
        mine = takers.get(connection.user_id)
        if mine is None:
            return
        mine.discard(connection)
        if not mine:
            del takers[connection.user_id]
            if not takers:
                del self._event_takers[connection.channel_id]

    def deliver(self, channel_id: int, frame: bytes, seq: int, message_id: int) -> None:
        """Offer one pre-encoded message frame (its `seq` and id read by the caller)
        to every local member of the channel."""
        members = self._channels.get(channel_id)
        if not members:
            return
        metrics = self._metrics
        created_s = created_ms_of(message_id) / 1000
        metrics.delivery_seconds.observe(max(0.0, time.time() - created_s))
        metrics.frames_out.inc(len(members))
        wire = text_frame(frame)  # framed once: every member writes the same bytes
        for connection in members:
            connection.offer(seq, wire)

    def deliver_change(self, channel_id: int, frame: bytes, seq: int) -> None:
        """Offer a change event (`message_edited`, `message_deleted`, `reaction`), which
        takes its seq in the channel's order like a message. Connections that take
        events get it; the per-channel socket's keep the Go server's frame types (a Go
        client would show an edit as a new message), so theirs only count the seq as
        seen: no gap, no catch-up, nothing sent. Framed once."""
        members = self._channels.get(channel_id)
        if not members:
            return
        wire = text_frame(frame)
        for connection in members:
            connection.offer(seq, wire if connection.wants_events else b"")

    def deliver_event(self, channel_id: int, user_id: int | None, frame: bytes) -> None:
        """Offer a live-state event (`read`, ...: no seq, never replayed) to the local
        members of the channel whose connections take events (`wants_events`: the
        multiplexed socket's; the per-channel socket keeps the Go server's frame
        types), only to `user_id`'s when it is given. Framed once."""
        takers = self._event_takers.get(channel_id)
        if not takers:
            return
        if user_id is None:
            targets = [connection for mine in takers.values() for connection in mine]
        else:
            targets = list(takers.get(user_id, ()))
        if not targets:
            return
        wire = text_frame(frame)
        for connection in targets:
            connection.offer_event(wire)

    def resync(self, channel_ids: list[int]) -> None:
        """Publishes to these channels may have been missed (their pub/sub link was
        down, or their slot moved): catch their sockets up."""
        self._metrics.pubsub_resyncs.inc()
        for channel_id in channel_ids:
            for connection in self._channels.get(channel_id, ()):
                connection.resync()
        for listener in self._resync_listeners:
            listener()

    def rewound(self, channel_id: int, after_seq: int, to_seq: int, *, replay: range) -> None:
        """The channel's counter went back (Redis lost writes): seqs `after_seq`+1 to
        `to_seq` may have been lost or given to other messages. Tell each socket that
        saw any of them, and replay it the seqs in `replay` (see Connection.rewound)."""
        self._metrics.channel_rewinds.inc()
        error = ChannelRewoundError(details=[{"from_seq": after_seq + 1, "to_seq": to_seq}])
        for connection in list(self._channels.get(channel_id, ())):
            if connection.last_seq > after_seq:
                connection.rewound(replay, error)

    def remove_user(self, channel_id: int, user_id: int, code: CloseCode, reason: str) -> None:
        """Close the sockets of a user who lost access to a channel (see `Connection.revoke`)."""
        for connection in list(self._channels.get(channel_id, ())):
            if connection.user_id == user_id:
                connection.revoke(code, reason)

    def mute_user(self, channel_id: int, user_id: int, until: float) -> None:
        """Set the user's mute in the channel on their local connections (see gateway.mutes)."""
        for connection in self._channels.get(channel_id, ()):
            if connection.user_id == user_id:
                connection.muted_until = until

    def members(self) -> dict[tuple[int, int, int], list[Connection]]:
        """Every local connection, by (channel_id, user_id, token_generation): what the
        membership audit checks."""
        found: dict[tuple[int, int, int], list[Connection]] = {}
        for channel_id, connections in self._channels.items():
            for connection in connections:
                key = (channel_id, connection.user_id, connection.token_generation)
                found.setdefault(key, []).append(connection)
        return found

    def on_resync(self, listener: Callable[[], None]) -> None:
        """Call `listener` after each resync too (events may have been missed meanwhile)."""
        self._resync_listeners.append(listener)

    def close_all(self, code: CloseCode, reason: str) -> None:
        for members in list(self._channels.values()):
            for connection in list(members):
                connection.close(code, reason)
        for out in list(self._sockets):
            out.close(code, reason)  # a multiplexed socket may hold no channel

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    @property
    def connection_count(self) -> int:
        """Sockets open (a multiplexed one counts once)."""
        return len(self._sockets)
