"""Channel topics: this gateway's pub/sub subscriptions and what arrives on them.

The hub subscribes a channel when its first local socket joins and
unsubscribes when the last one leaves (`ChannelTopics` is its `Subscriptions`
port). Step 3 of the send path: a message frame published by the send script
(`gateway.sender`) reaches `Deliveries.deliver` (a change event, such as an
edit, `Deliveries.deliver_change`) as the bytes that were published, with the
`seq` and id read from its head once; frames are never decoded or re-encoded
on the way to the sockets. Anything starting with `!` is
a control event (`gateway.control_events`). Every delivery also updates the
channel's known seqs (`gateway.seq_floors`), which catch a counter that went
back with lost Redis writes.
"""

from __future__ import annotations

import logging
from typing import Protocol

from gateway.cluster_subscriber import ClusterSubscriber
from gateway.control_events import CONTROL_PREFIX, handle_control_event
from gateway.seq_floors import Seen, SeqFloors
from gateway.subscriber import Subscriber
from shared.errors import CloseCode
from shared.redis_keys import RedisKeys
from shared.settings import Settings
from shared.wire import frame_id, frame_seq, is_message_frame

log = logging.getLogger(__name__)


class Deliveries(Protocol):
    """Where what arrives on a channel's topic is handed (the hub)."""

    def deliver(self, channel_id: int, frame: bytes, seq: int, message_id: int) -> None:
        """Offer a message frame, whose `seq` and id were read once, to the local sockets."""
        ...

    def deliver_change(self, channel_id: int, frame: bytes, seq: int) -> None:
        """Offer a change event (an edit, a delete, a reaction: it has a seq in the
        channel's order) to the local sockets that take events."""
        ...

    def deliver_event(self, channel_id: int, user_id: int | None, frame: bytes) -> None: ...

    def remove_user(self, channel_id: int, user_id: int, code: CloseCode, reason: str) -> None: ...

    def mute_user(self, channel_id: int, user_id: int, until: float) -> None: ...

    def resync(self, channel_ids: list[int]) -> None: ...

    def rewound(self, channel_id: int, after_seq: int, to_seq: int, *, replay: range) -> None:
        """Seqs `after_seq`+1 to `to_seq` may have been lost or given to other messages:
        tell the sockets that saw any, and replay them the seqs in `replay` (what
        follows comes live)."""
        ...


class ChannelTopics:
    """Implements the hub's `Subscriptions` port; hands what arrives to `Deliveries`."""

    def __init__(self, settings: Settings, keys: RedisKeys, seq_floors: SeqFloors) -> None:
        self._keys = keys
        self._seq_floors = seq_floors
        self._seen = seq_floors.channels  # read on every delivery
        self._topics: dict[bytes, int] = {}
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

    async def unsubscribe(self, channel_id: int) -> None:
        topic = self._keys.channel_topic(channel_id)
        self._topics.pop(topic.encode(), None)
        self._seq_floors.close(channel_id)
        await self.subscriber.unsubscribe(topic)

    def known_head(self, channel_id: int, head: int) -> int:
        """The channel's head as a new socket should start from: `head` (just read from
        the counter) or, if the counter went back, the highest seq known to exist."""
        return self._seq_floors.observe(channel_id, head)

    def _on_publish(self, topic: bytes, payload: bytes) -> None:
        channel_id = self._topics.get(topic)
        deliveries = self._deliveries
        if channel_id is None or deliveries is None:
            return
        if payload.startswith(CONTROL_PREFIX):
            handle_control_event(channel_id, payload, deliveries, self._seq_floors)
            return
        try:
            # Read once, here: the hub needs them, and so does the check below.
            seq = frame_seq(payload)
            message_id = frame_id(payload)
        except ValueError:
            log.warning("published frame without a seq dropped", extra={"channel_id": channel_id})
            return
        if is_message_frame(payload):
            deliveries.deliver(channel_id, payload, seq, message_id)
        else:
            # An edit, a delete, a reaction: in the seq order, shown to event takers only.
            deliveries.deliver_change(channel_id, payload, seq)
        seen = self._seen.get(channel_id)
        if seen is not None and seen.delivered(seq, message_id):
            self._seq_reused(deliveries, channel_id, seq, seen)

    def _seq_reused(self, deliveries: Deliveries, channel_id: int, seq: int, seen: Seen) -> None:
        """A live message took a seq that an older message had here: the counter went
        back at a node that knew less. Replay it to the sockets, which dropped it as a
        repeat, and raise the counter to what this node has seen."""
        log.error(
            "a message reused a delivered seq (Redis lost writes)",
            extra={"channel_id": channel_id, "seq": seq, "floor": seen.floor},
        )
        deliveries.rewound(channel_id, seq - 1, seen.floor, replay=range(seq, seq + 1))
        self._seq_floors.repair_soon(channel_id)

    def _on_resync(self, topics: list[bytes]) -> None:
        if self._deliveries is not None:
            channel_ids = [self._topics[t] for t in topics if t in self._topics]
            self._deliveries.resync(channel_ids)
            # A reconnect is when Redis may have come back with less than it had.
            self._seq_floors.verify(channel_ids)

    async def aclose(self) -> None:
        await self.subscriber.aclose()
