"""What a gateway counts, exposed at `GET /metrics` for Prometheus.

One `GatewayMetrics` per application. The hot paths touch plain counters; the
connection and subscription gauges are read from the hub at scrape time.
"""

from __future__ import annotations

from aiohttp import web

from shared.metrics import CONTENT_TYPE, LATENCY_BUCKETS, Registry


class GatewayMetrics:
    def __init__(self) -> None:
        registry = self.registry = Registry()
        self.messages_in = registry.counter(
            "chat_messages_in_total", "Messages accepted from clients and acknowledged."
        )
        self.duplicate_sends = registry.counter(
            "chat_duplicate_sends_total", "Re-sent client_ids answered with the original message."
        )
        self.send_rejections = registry.labeled_counter(
            "chat_send_rejections_total", "Inbound frames refused, by error code.", "code"
        )
        self.rate_limit_closes = registry.counter(
            "chat_rate_limit_closes_total",
            "Sockets closed with 4429: they kept sending over their message budget.",
        )
        self.send_seconds = registry.histogram(
            "chat_send_seconds",
            "Send path: frame received to acknowledgement queued.",
            LATENCY_BUCKETS,
        )
        self.frames_out = registry.counter(
            "chat_frames_out_total", "Message frames offered to local sockets."
        )
        self.delivery_seconds = registry.histogram(
            "chat_delivery_seconds",
            "Message created (the send script's clock) to fan-out on this gateway.",
            LATENCY_BUCKETS,
        )
        self.slow_disconnects = registry.counter(
            "chat_slow_client_disconnects_total", "Sockets closed with 4408: queue full."
        )
        self.dropped_frames = registry.counter(
            "chat_dropped_frames_total", "Frames discarded when a slow socket was closed."
        )
        self.catch_ups = registry.counter(
            "chat_catch_ups_total", "Replays started: resumes, skipped seqs, pub/sub resyncs."
        )
        self.replayed_frames = registry.counter(
            "chat_replayed_frames_total", "Frames sent by replays."
        )
        self.backlog_reads = registry.counter(
            "chat_backlog_reads_total",
            "Resume pages read from Redis or PostgreSQL (a read shared by sockets counts once).",
        )
        self.backlog_read_joins = registry.counter(
            "chat_backlog_read_joins_total",
            "Resume pages served by a read already in flight for another socket.",
        )
        self.history_gaps = registry.counter(
            "chat_history_gaps_total", "Replays that reported a missing range (history_gap)."
        )
        self.channel_rewinds = registry.counter(
            "chat_channel_rewinds_total",
            "channel_rewound events: a channel's seq counter was found behind and raised.",
        )
        self.membership_revocations = registry.counter(
            "chat_membership_revocations_total",
            "Sockets the membership audit closed: their removal or revocation event was missed.",
        )
        self.pubsub_resyncs = registry.counter(
            "redis_pubsub_resyncs_total", "Pub/sub (re)connections confirmed, the first included."
        )
        self.http_rate_limited = registry.counter(
            "http_rate_limited_total", "HTTP requests refused with 429."
        )


def metrics_response(registry: Registry) -> web.Response:
    return web.Response(body=registry.render(), headers={"Content-Type": CONTENT_TYPE})
