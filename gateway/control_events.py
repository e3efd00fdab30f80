"""Control events: what a channel's topic carries besides message frames.

Publishing: a member removed, a user's tokens revoked, a user muted, a read
marker moved (`ControlEvents`). Other publishers are Lua scripts: a user typing
(`gateway.typing_indicators`, `typing.lua`, which limits it per user and
channel), a channel's counter raised (`shared/redis_scripts/raise_seq.lua`,
`channel_rewound`) and presence (`presence_common.lua`, `!presence ` and the
finished frame).

Handling: `handle_control_event` turns one that arrived on a channel's topic
into what the hub does with it (close a user's sockets, hand an event frame to
the sockets that take live events, tell sockets a channel was rewound).

An event starts with `!`, which no JSON frame does, then a JSON object with
`event`, `user_id` and the event's own fields.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.seq_floors import SeqFloors
from shared.errors import CloseCode, UnavailableError
from shared.redis_keys import RedisKeys
from shared.seq_counter import CHANNEL_REWOUND

if TYPE_CHECKING:
    from gateway.channel_topics import Deliveries

log = logging.getLogger(__name__)

CONTROL_PREFIX = b"!"
# What shared/redis_scripts/presence_common.lua puts before a presence frame.
_PRESENCE_PREFIX = b"!presence "
# What each control event closes, and with which code (the membership audit closes
# with the same when it finds what an event it missed would have closed).
CONTROL_CLOSES: dict[str, tuple[CloseCode, str]] = {
    "member_removed": (CloseCode.FORBIDDEN, "no longer a member of this channel"),
    "tokens_revoked": (CloseCode.UNAUTHORIZED, "token revoked, log in again"),
}
# A user's mute in a channel changed: `until_ms` (0: unmuted) goes onto their
# connections there (`Deliveries.mute_user`), then to their multiplexed sockets
# subscribed to the channel as a frame `{"type": "muted", "channel_id", "user_id",
# "until_ms"}`.
MUTED = "muted"
# Control events that become frames for the sockets that take live events
# (`Deliveries.deliver_event`), and whether only the event's user's sockets get
# them. The frame is `{"type": <event>, "channel_id": ..}` plus the event's
# other fields, encoded once per gateway.
CONTROL_FRAMES: dict[str, bool] = {
    "read": True,  # a user's read marker moved: their other sockets update badges
    "typing": False,  # a user types (ephemeral): every taker of the channel shows it
}


class ControlEvents:
    """Publishes control events on channel topics, for every gateway to handle."""

    def __init__(self, redis: Redis, keys: RedisKeys, *, cluster: bool) -> None:
        self._redis = redis
        self._keys = keys
        self._cluster = cluster

    async def publish_member_removed(self, channel_id: int, user_id: int) -> None:
        """Tell every node to close `user_id`'s sockets in the channel."""
        await self._publish([channel_id], "member_removed", user_id)

    async def publish_muted(self, channel_id: int, user_id: int, until_ms: int) -> None:
        """Tell every node that `user_id`'s mute in the channel ends at `until_ms`
        (0: unmuted); see gateway.mutes."""
        await self._publish([channel_id], MUTED, user_id, until_ms=until_ms)

    async def publish_tokens_revoked(self, channel_ids: list[int], user_id: int) -> None:
        """Tell every node to close `user_id`'s sockets in these channels (4401):
        the tokens they were opened with are revoked."""
        await self._publish(channel_ids, "tokens_revoked", user_id)

    async def publish_read(self, channel_id: int, user_id: int, last_read_seq: int) -> None:
        """Tell every node that `user_id`'s read marker in the channel is now `last_read_seq`."""
        await self._publish([channel_id], "read", user_id, last_read_seq=last_read_seq)

    async def _publish(
        self, channel_ids: list[int], event: str, user_id: int, **fields: int
    ) -> None:
        """Publish one control event on each channel's topic, pipelined: a user in
        many channels costs one round trip per pipeline, not one per channel.

        Raises UnavailableError.
        """
        payload = control_payload(event, user_id, **fields)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for channel_id in channel_ids:
                    topic = self._keys.channel_topic(channel_id)
                    if self._cluster:
                        pipe.spublish(topic, payload)
                    else:
                        pipe.publish(topic, payload)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise UnavailableError() from exc


def control_payload(event: str, user_id: int, **fields: int) -> bytes:
    """A control event as published on a channel's topic (and read by
    `handle_control_event`); also what `gateway.typing_indicators`' script publishes."""
    return CONTROL_PREFIX + orjson.dumps({"event": event, "user_id": user_id, **fields})


def handle_control_event(
    channel_id: int, payload: bytes, deliveries: Deliveries, seq_floors: SeqFloors
) -> None:
    """Act on one control event (`payload` starts with CONTROL_PREFIX); a malformed
    one is logged and ignored."""
    if payload.startswith(_PRESENCE_PREFIX):
        deliveries.deliver_event(channel_id, None, payload[len(_PRESENCE_PREFIX) :])
        return
    try:
        event = orjson.loads(payload[1:])
        name = event.pop("event")
        closing = CONTROL_CLOSES.get(name)
        if closing is not None:
            deliveries.remove_user(channel_id, int(event["user_id"]), *closing)
        elif name == MUTED:
            muted_id = int(event["user_id"])
            deliveries.mute_user(channel_id, muted_id, int(event["until_ms"]) / 1000)
            # Then the user's multiplexed sockets learn it: it holds once they see it.
            frame = orjson.dumps({"type": name, "channel_id": channel_id, **event})
            deliveries.deliver_event(channel_id, muted_id, frame)
        elif name == CHANNEL_REWOUND:
            seq = int(event["seq"])
            deliveries.rewound(
                channel_id, int(event["after_seq"]), seq, replay=range(seq + 1, seq + 1)
            )
            seen = seq_floors.channels.get(channel_id)
            if seen is not None and seen.floor > seq:
                # Raised by a node that knew less than this one: raise it further.
                seq_floors.repair_soon(channel_id)
        elif name in CONTROL_FRAMES:
            user_id = int(event["user_id"]) if CONTROL_FRAMES[name] else None
            frame = orjson.dumps({"type": name, "channel_id": channel_id, **event})
            deliveries.deliver_event(channel_id, user_id, frame)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        log.warning("malformed control event ignored", extra={"channel_id": channel_id})
