"""The load generator's frame parser and delivery bookkeeping, fed hand-made server bytes."""

from __future__ import annotations

import asyncio
import struct
import time

from loadtests.histogram import bucket_of, bucket_upper_us, new_histogram, percentile_ms
from loadtests.wsclient import Client, SocketSpec, Tally

_SPEC = SocketSpec("127.0.0.1", 1, "/api/v1/chat/7?token=t", channel=0, channel_id=7)


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def _frame(payload: bytes, opcode: int = 0x1) -> bytes:
    if len(payload) < 126:
        return struct.pack("!BB", 0x80 | opcode, len(payload)) + payload
    return struct.pack("!BBH", 0x80 | opcode, 126, len(payload)) + payload


def _message(step: int, sender: int, n: int, seq: int, *, sent_ns: int | None = None) -> bytes:
    stamp = time.monotonic_ns() if sent_ns is None else sent_ns
    return (
        b'{"type":"message","id":1,"seq":%d,"created_at":"x","user_id":1,"channel_id":7,'
        b'"body":{"type":"text","content":"#S%d:%d:%d:%d# pad"},"client_id":null}'
        % (seq, step, sender, n, stamp)
    )


async def _open_client(check_seq: bool = True) -> tuple[Client, Tally, _Transport]:
    tally = Tally(step=2, check_seq=check_seq)
    client = Client(_SPEC, "ws", tally, "nonce")
    transport = _Transport()
    client.connection_made(transport)
    client.data_received(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
    await client.ready
    return client, tally, transport


async def test_counts_each_delivery_once_and_flags_duplicates() -> None:
    client, tally, _ = await _open_client()

    client.data_received(_frame(_message(2, 5, 1, 1)) + _frame(_message(2, 5, 2, 2)))
    client.data_received(_frame(_message(2, 5, 2, 2)))

    assert (tally.received, tally.duplicates, tally.seq_regressions) == (2, 1, 0)
    assert client.received == 2


async def test_a_late_message_filling_a_gap_is_reordered_not_duplicate() -> None:
    client, tally, _ = await _open_client(check_seq=False)

    client.data_received(_frame(_message(2, 5, 2, 2)) + _frame(_message(2, 5, 1, 1)))

    assert (tally.received, tally.duplicates, tally.reordered) == (2, 0, 1)


async def test_a_seq_going_back_is_a_regression() -> None:
    client, tally, _ = await _open_client()

    client.data_received(_frame(_message(2, 5, 1, 9)) + _frame(_message(2, 6, 1, 3)))

    assert tally.seq_regressions == 1


async def test_frames_split_across_reads_and_other_steps_are_handled() -> None:
    client, tally, _ = await _open_client()
    data = _frame(_message(1, 5, 1, 1)) + _frame(_message(2, 5, 1, 2) + b" " * 200)

    for at in range(0, len(data), 7):
        client.data_received(data[at : at + 7])

    assert (tally.late, tally.received) == (1, 1)


async def test_acks_errors_and_pings_are_told_apart() -> None:
    client, tally, transport = await _open_client()
    transport.written.clear()

    client.data_received(_frame(b'{"success":true,"type":"ack","id":1,"seq":1}'))
    client.data_received(_frame(b'{"success":false,"type":"error","code":"unavailable"}'))
    client.data_received(_frame(b"hi", opcode=0x9))

    assert (tally.acks, tally.errors) == (1, 1)
    assert transport.written[0][0] == 0x8A  # a pong, FIN set
    assert transport.written[0][1] == 0x80 | 2  # masked, two bytes


async def test_drained_is_set_when_the_expected_count_arrives() -> None:
    client, tally, _ = await _open_client()
    tally.expected = 2

    client.data_received(_frame(_message(2, 5, 1, 1)))
    assert not tally.drained.is_set()
    client.data_received(_frame(_message(2, 5, 2, 2)))

    assert tally.drained.is_set()


async def test_sent_frames_are_masked_text_with_the_marker() -> None:
    client, _, transport = await _open_client()
    transport.written.clear()

    client.send_message(client_ids=True)

    frame = transport.written[0]
    length = frame[1] & 0x7F
    key, masked = frame[2:6], frame[6 : 6 + length]
    payload = bytes(byte ^ key[index % 4] for index, byte in enumerate(masked))
    assert frame[0] == 0x81
    assert payload.startswith(b'{"type":"text","content":"#S2:-1:1:')
    assert b'"client_id":"nonce.2.-1.1"' in payload


def test_percentiles_never_understate_and_buckets_cover_their_values() -> None:
    histogram = new_histogram()
    for latency_us in (5, 1_234, 9_999, 10_000, 45_600, 999_999, 1_000_000, 70_000_000):
        bucket = bucket_of(latency_us)
        assert latency_us < bucket_upper_us(bucket) or bucket == len(histogram) - 1
        assert bucket == 0 or bucket_upper_us(bucket - 1) <= latency_us
        histogram[bucket] += 1

    assert percentile_ms(histogram, 0.5) == 10.0 + 1.0  # 10,000 us lands in [10, 11) ms
    assert percentile_ms(new_histogram(), 0.99) is None


async def test_a_multiplexed_client_subscribes_then_checks_seqs_per_channel() -> None:
    spec = SocketSpec(
        "127.0.0.1",
        1,
        "/api/v1/ws?token=t",
        channel=-1,
        channel_id=0,
        subscriptions=((0, 7), (1, 8)),
        sends=((1, 8, 4),),
    )
    tally = Tally(step=2, check_seq=True)
    client = Client(spec, "mux", tally, "nonce")
    transport = _Transport()
    client.connection_made(transport)
    client.data_received(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
    assert len(transport.written) == 3  # the upgrade, then a subscribe per channel
    client.data_received(_frame(b'{"type":"subscribed","channel_id":7,"last_seq":0}'))
    assert not client.ready.done()
    client.data_received(_frame(b'{"type":"subscribed","channel_id":8,"last_seq":0}'))
    await client.ready

    # seq 1 in channel 8 after seq 5 in channel 7 is no regression.
    client.data_received(_frame(_message(2, 5, 1, 5)))
    client.data_received(_frame(_message(2, 6, 1, 1).replace(b'"channel_id":7', b'"channel_id":8')))
    assert (tally.received, tally.seq_regressions, tally.errors) == (2, 0, 0)
    assert spec.channel_indices == (0, 1)
    assert client.send_message(client_ids=True) == 1
