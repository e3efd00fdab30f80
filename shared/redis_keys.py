"""Every Redis name the service uses, built in one place.

All names that one send touches carry the hash tag `{p}` of the channel's
partition, so the send script is single-slot in a Redis Cluster and the
partitions spread over the masters. Pub/sub topics carry the same tag, which
sharded pub/sub (`SPUBLISH`) needs.
"""

from __future__ import annotations

from dataclasses import dataclass

CONSUMER_GROUP = "persistence"
# A channel's recent history outlives a quiet weekend, then frees its memory.
RECENT_TTL_MS = 7 * 24 * 3600 * 1000


def partition_of(channel_id: int, partitions: int) -> int:
    """The partition a channel belongs to: `channel_id mod P`."""
    return channel_id % partitions


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Key builder bound to one deployment's prefix and partition count."""

    prefix: str
    partitions: int

    def _tag(self, channel_id: int) -> str:
        return f"{self.prefix}:{{{partition_of(channel_id, self.partitions)}}}"

    def channel_seq(self, channel_id: int) -> str:
        """Counter holding the channel's last assigned `seq`."""
        return f"{self._tag(channel_id)}:ch:{channel_id}:seq"

    def channel_recent(self, channel_id: int) -> str:
        """Capped stream of the channel's last frames, entry id `<seq>-0`."""
        return f"{self._tag(channel_id)}:ch:{channel_id}:recent"

    def channel_topic(self, channel_id: int) -> str:
        """Pub/sub topic every gateway holding a member of the channel listens to."""
        return f"{self._tag(channel_id)}:ch:{channel_id}:live"

    def message_state(self, channel_id: int, message_id: int) -> str:
        """Hash of what changes of one message are checked against, atomically in the
        send script: `deleted`, and once `seeded` its reactions (`r:<emoji>` counts,
        `u:<user>:<emoji>` who, `n:<user>` per user, `e` distinct emojis)."""
        return f"{self._tag(channel_id)}:ch:{channel_id}:msg:{message_id}"

    def presence_entries(self, channel_id: int) -> str:
        """Sorted set of who is online in the channel: member `<user_id>:<node_id>`,
        score the entry's expiry (ms)."""
        return f"{self._tag(channel_id)}:ch:{channel_id}:presence"

    def presence_users(self, channel_id: int) -> str:
        """Hash `<user_id>` -> how many entries (gateways) hold that user online."""
        return f"{self._tag(channel_id)}:ch:{channel_id}:presence:users"

    def presence_shown(self, channel_id: int) -> str:
        """Hash of the last counts-only presence event: `count`, `at` (ms)."""
        return f"{self._tag(channel_id)}:ch:{channel_id}:presence:shown"

    def id_clock(self, channel_id: int) -> str:
        """Per-partition state of the message-id generator (last ms, counter)."""
        return self.partition_id_clock(partition_of(channel_id, self.partitions))

    def partition_id_clock(self, partition: int) -> str:
        return f"{self.prefix}:{{{partition}}}:idclock"

    def dedupe(self, channel_id: int, user_id: int, client_id: str) -> str:
        """Remembers a `client_id` so a re-sent frame returns the original message."""
        return self.dedupe_prefix(channel_id, user_id) + client_id

    def dedupe_prefix(self, channel_id: int, user_id: int) -> str:
        """What every `dedupe` key of one user in one channel starts with."""
        return f"{self._tag(channel_id)}:dedupe:{channel_id}:{user_id}:"

    def message_rate(self, channel_id: int, user_id: int) -> str:
        """Fixed-window counter of one user's messages in one channel."""
        return f"{self._tag(channel_id)}:rate:{channel_id}:{user_id}"

    def typing(self, channel_id: int, user_id: int) -> str:
        """Set while a typing event of the user in the channel was relayed within the
        interval (expires on its own): the per-user limit across gateways."""
        return f"{self._tag(channel_id)}:typing:{channel_id}:{user_id}"

    def ingest_stream(self, partition: int) -> str:
        """The durable hand-off to persistence for one partition."""
        return f"{self.prefix}:{{{partition}}}:ingest"

    def ingest_stream_of(self, channel_id: int) -> str:
        return self.ingest_stream(partition_of(channel_id, self.partitions))

    def ingest_streams(self) -> list[str]:
        return [self.ingest_stream(p) for p in range(self.partitions)]

    def dead_letters(self, partition: int) -> str:
        """Entries that failed to persist too often, with the reason."""
        return f"{self.prefix}:{{{partition}}}:deadletter"

    def http_rate(self, client_ip: str, window: int) -> str:
        """Fixed-window counter of one client IP's HTTP requests."""
        return f"{self.prefix}:httprate:{client_ip}:{window}"

    def login_failures_of_identity(self, identity_digest: str) -> str:
        """Failed log-ins with one identity (the digest of its lower-cased form) in a window."""
        return f"{self.prefix}:loginfail:id:{identity_digest}"

    def login_failures_of_client(self, client: str) -> str:
        """Failed log-ins from one client address (an IPv6 /64) in a window."""
        return f"{self.prefix}:loginfail:ip:{client}"

    def ws_ticket(self, ticket_digest: str) -> str:
        """A single-use socket ticket, under the digest of its value, with a TTL."""
        return f"{self.prefix}:wsticket:{ticket_digest}"

    def worker_health(self, consumer: str) -> str:
        """Heartbeat key a worker refreshes with a TTL."""
        return f"{self.prefix}:worker:{consumer}:alive"
