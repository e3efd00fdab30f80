"""The hub's live-state events (`Hub.deliver_event`) on their own, without Redis: who
is offered an event, and that the hub forgets the connections that took them."""

from __future__ import annotations

from gateway.connection import Connection
from gateway.hub import Hub
from gateway.metrics import GatewayMetrics
from gateway.outbox import Outbox
from gateway.websocket import text_frame


class _Subscriptions:
    """The hub's cross-node port, kept in memory: this test is about one node."""

    def __init__(self) -> None:
        self.channels: set[int] = set()

    async def subscribe(self, channel_id: int) -> None:
        self.channels.add(channel_id)

    async def unsubscribe(self, channel_id: int) -> None:
        self.channels.discard(channel_id)


def _connection(user_id: int, channel_id: int, *, wants_events: bool) -> Connection:
    metrics = GatewayMetrics()
    return Connection(
        Outbox(user_id=user_id, queue_size=8, metrics=metrics),
        channel_id=channel_id,
        token_generation=0,
        replay=None,  # type: ignore[arg-type]  # never started: nothing is replayed
        metrics=metrics,
        resume_wait_seconds=1.0,
        replay_stall_seconds=1.0,
        wants_events=wants_events,
    )


def _queued(connection: Connection) -> list[bytes]:
    """What the connection would write: a connection not yet started queues everything."""
    return connection.out.pending


async def test_events_reach_only_takers_and_only_the_users_for_a_user_event() -> None:
    hub = Hub(_Subscriptions(), GatewayMetrics(), max_sockets_per_user=8)
    alice_events = _connection(1, 10, wants_events=True)
    alice_plain = _connection(1, 10, wants_events=False)
    bob_events = _connection(2, 10, wants_events=True)
    elsewhere = _connection(1, 11, wants_events=True)
    for connection in (alice_events, alice_plain, bob_events, elsewhere):
        await hub.join(connection)

    hub.deliver_event(10, 1, b'{"type":"read"}')
    assert _queued(alice_events) == [text_frame(b'{"type":"read"}')]
    assert _queued(alice_plain) == _queued(bob_events) == _queued(elsewhere) == []

    hub.deliver_event(10, None, b'{"type":"presence"}')  # for every taker of the channel
    presence = text_frame(b'{"type":"presence"}')
    assert _queued(alice_events)[1:] == _queued(bob_events) == [presence]
    assert _queued(alice_plain) == _queued(elsewhere) == []


async def test_a_taker_that_left_is_forgotten() -> None:
    hub = Hub(_Subscriptions(), GatewayMetrics(), max_sockets_per_user=8)
    gone = _connection(1, 10, wants_events=True)
    stays = _connection(2, 10, wants_events=True)
    await hub.join(gone)
    await hub.join(stays)
    await hub.leave(gone)
    hub.deliver_event(10, None, b'{"type":"presence"}')
    assert _queued(gone) == []
    assert len(_queued(stays)) == 1
    await hub.leave(stays)
    hub.deliver_event(10, None, b'{"type":"presence"}')
    assert len(_queued(stays)) == 1
    assert hub.channel_count == 0
