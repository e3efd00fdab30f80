"""A minimal WebSocket client on a raw asyncio protocol, built for counting deliveries cheaply.

aiohttp's client wakes a coroutine and builds a message object per frame. On
a 2-core machine that shares its CPU with the servers under test, the load
generator must stay light, so this client parses frames straight out of each
`data_received` chunk and does one cheap parse per frame: it finds the marker
the sender embedded in the message content,

    #S<step>:<sender>:<n>:<send monotonic ns>#

and never decodes the JSON around it. That works the same for our chat
frames, the naive baseline's frames and socket.io's `42["message",{...}]`.

Loss and duplicates are counted by content id (sender, n), which every server
preserves, so servers without a `seq` are measured the same way. For our
server the `seq` of each delivery is also checked for regressions.

It speaks just enough of RFC 6455 for a load generator: no extensions, text
frames, pings answered, and client frames masked with a per-connection key.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Literal, cast

from loadtests.histogram import bucket_of, new_histogram

# "mux": our multiplexed socket, one connection subscribed to several channels.
Kind = Literal["ws", "mux", "sio"]

_OP_CONTINUATION = 0x0
_OP_TEXT = 0x1
_OP_BINARY = 0x2
_OP_CLOSE = 0x8
_OP_PING = 0x9
_MARK = b"#S"
_SEQ = b'"seq":'
_CHANNEL_ID = b'"channel_id":'
_MAX_HANDSHAKE_BYTES = 16384
# Makes a message about as long as a typical chat line; the servers copy it around.
_PADDING = b"the quick brown fox jumps over the lazy dog"
_ERROR_SAMPLES = 3


@dataclass(frozen=True, slots=True)
class SocketSpec:
    """One socket the generator opens: where, which channel, and whether it sends."""

    host: str
    port: int
    path: str  # request target, e.g. /api/v1/chat/7?token=...
    channel: int  # index of the channel in the scenario (expectations are per index)
    channel_id: int  # the server's id of that channel (socket.io join, payloads)
    sender: int = -1  # global sender number, or -1 for a socket that only receives
    # A multiplexed socket's channels instead of `channel`: (index, id) pairs, and
    # the (index, id, global sender number) of each it sends into.
    subscriptions: tuple[tuple[int, int], ...] = ()
    sends: tuple[tuple[int, int, int], ...] = ()

    @property
    def channel_indices(self) -> tuple[int, ...]:
        """The scenario's indices of the channels whose deliveries this socket is owed."""
        if self.subscriptions:
            return tuple(index for index, _ in self.subscriptions)
        return (self.channel,)

    @property
    def lanes(self) -> tuple[tuple[int, int, int], ...]:
        """(channel index, channel id, sender number) of each channel this socket sends into."""
        if self.subscriptions:
            return self.sends
        return ((self.channel, self.channel_id, self.sender),) if self.sender >= 0 else ()


@dataclass
class Tally:
    """What one generator process counted during the current step."""

    step: int = 0
    check_seq: bool = False
    received: int = 0
    duplicates: int = 0
    reordered: int = 0
    late: int = 0
    seq_regressions: int = 0
    acks: int = 0
    errors: int = 0
    closed: int = 0
    error_samples: list[str] = field(default_factory=list)
    histogram: list[int] = field(default_factory=new_histogram)
    max_us: int = 0
    last_delivery_ns: int = 0
    expected: int = sys.maxsize
    drained: asyncio.Event = field(default_factory=asyncio.Event)

    def note_error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < _ERROR_SAMPLES:
            self.error_samples.append(text[:200])


class Client(asyncio.Protocol):
    """One WebSocket (or socket.io over WebSocket) connection of the load generator."""

    def __init__(self, spec: SocketSpec, kind: Kind, tally: Tally, nonce: str) -> None:
        self.spec = spec
        self.kind = kind
        self.tally = tally
        self.nonce = nonce.encode()
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.received = 0
        self.closing = False
        # A socket the scenario gives no lane still sends as its own (tests do).
        self._lanes = spec.lanes or ((spec.channel, spec.channel_id, spec.sender),)
        self._sent = [0] * len(self._lanes)  # per lane: a lane's numbers are its own
        self._next_lane = 0
        self._unsubscribed = len(spec.subscriptions)
        self._transport: asyncio.Transport | None = None
        self._upgraded = False
        self._buffer = b""
        self._fragments: list[bytes] = []
        self._mask = os.urandom(4)
        self._last: dict[int, int] = {}
        self._gaps: dict[int, set[int]] = {}
        self._last_seq: dict[int, int] = {}  # per channel id (0: the only channel)

    # --- connection -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {self.spec.path} HTTP/1.1\r\nHost: {self.spec.host}:{self.spec.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self._transport.write(request.encode())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed during handshake: {exc}"))
        elif not self.closing:
            self.tally.closed += 1

    def close(self) -> None:
        self.closing = True
        if self._transport is not None:
            self._transport.close()

    def reset_step(self) -> None:
        """Forget per-sender bookkeeping; a step's message numbers start at 1 again."""
        self.received = 0
        self._sent = [0] * len(self._lanes)
        self._last.clear()
        self._gaps.clear()

    # --- receiving ------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if not self._upgraded:
            data = self._finish_handshake(data)
            if not data:
                return
        buffer = self._buffer + data if self._buffer else data
        end = len(buffer)
        at = 0
        while end - at >= 2:
            length = buffer[at + 1] & 0x7F
            header = 2
            if length == 126:
                if end - at < 4:
                    break
                length = int.from_bytes(buffer[at + 2 : at + 4], "big")
                header = 4
            elif length == 127:
                if end - at < 10:
                    break
                length = int.from_bytes(buffer[at + 2 : at + 10], "big")
                header = 10
            if end - at < header + length:
                break
            first = buffer[at]
            payload = buffer[at + header : at + header + length]
            at += header + length
            self._on_frame(first, payload)
        self._buffer = buffer[at:]

    def _finish_handshake(self, data: bytes) -> bytes:
        """Consume the HTTP answer; return the bytes after it (frames), if any."""
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > _MAX_HANDSHAKE_BYTES:
                self._fail("handshake answer too long")
            return b""
        head, rest = self._buffer[:end], self._buffer[end + 4 :]
        self._buffer = b""
        if not head.startswith(b"HTTP/1.1 101"):
            self._fail(head.split(b"\r\n", 1)[0].decode(errors="replace"))
            return b""
        self._upgraded = True
        if self.kind == "ws":
            self.ready.set_result(None)
        elif self.kind == "mux":
            for _, channel_id in self.spec.subscriptions:
                self._write_frame(_OP_TEXT, b'{"type":"subscribe","channel_id":%d}' % channel_id)
        return rest

    def _fail(self, reason: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
        self.close()

    def _on_frame(self, first: int, payload: bytes) -> None:
        opcode = first & 0x0F
        if opcode in (_OP_TEXT, _OP_BINARY, _OP_CONTINUATION):
            if not first & 0x80:  # not FIN: a fragment (servers here do not fragment)
                self._fragments.append(payload)
                return
            if self._fragments:
                payload = b"".join(self._fragments) + payload
                self._fragments.clear()
            self._on_message(payload)
        elif opcode == _OP_PING:
            self._write_frame(0xA, payload)
        elif opcode == _OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if not self.closing:
                self.tally.note_error(f"close {code} {payload[2:].decode(errors='replace')}")
            self._fail(f"closed by server with {code}")

    def _on_message(self, payload: bytes) -> None:
        at = payload.find(_MARK)
        if at < 0:
            self._on_other(payload)
            return
        now = time.monotonic_ns()
        tally = self.tally
        step_text, sender_text, n_text, sent_text = payload[
            at + 2 : payload.find(b"#", at + 2)
        ].split(b":")
        if int(step_text) != tally.step:
            tally.late += 1
            return
        sender = int(sender_text)
        n = int(n_text)
        last = self._last.get(sender, 0)
        if n > last:
            if n > last + 1:
                self._gaps.setdefault(sender, set()).update(range(last + 1, n))
            self._last[sender] = n
        else:
            gaps = self._gaps.get(sender)
            if gaps is None or n not in gaps:
                tally.duplicates += 1
                return
            gaps.discard(n)
            tally.reordered += 1
        if tally.check_seq:
            start = payload.find(_SEQ) + 6
            seq = int(payload[start : payload.find(b",", start)])
            channel_id = 0
            if self.kind == "mux":  # seqs go up per channel
                start = payload.find(_CHANNEL_ID) + 13
                channel_id = int(payload[start : payload.find(b",", start)])
            if seq <= self._last_seq.get(channel_id, 0):
                tally.seq_regressions += 1
            else:
                self._last_seq[channel_id] = seq
        latency_us = (now - int(sent_text)) // 1000
        tally.histogram[bucket_of(latency_us)] += 1
        if latency_us > tally.max_us:
            tally.max_us = latency_us
        self.received += 1
        tally.received += 1
        tally.last_delivery_ns = now
        if tally.received == tally.expected:
            tally.drained.set()

    def _on_other(self, payload: bytes) -> None:
        if self.kind == "sio":
            self._on_engine_io(payload)
        elif payload.startswith(b'{"success":true'):
            self.tally.acks += 1
        elif self.kind == "mux" and payload.startswith(b'{"type":"presence"'):
            pass  # members subscribing, before the measured step
        elif self.kind == "mux" and payload.startswith(b'{"type":"subscribed"'):
            self._unsubscribed -= 1
            if not self._unsubscribed and not self.ready.done():
                self.ready.set_result(None)
        else:
            if not self.ready.done():
                self._fail(payload.decode(errors="replace"))
            self.tally.note_error(payload.decode(errors="replace"))

    def _on_engine_io(self, payload: bytes) -> None:
        """socket.io over engine.io v4: open, connect, join ack, pings."""
        if payload == b"2":  # engine.io ping
            self._write_frame(_OP_TEXT, b"3")
        elif payload.startswith(b"0{"):  # engine.io open: connect to the default namespace
            self._write_frame(_OP_TEXT, b"40")
        elif payload.startswith(b"40"):  # namespace connected: join the channel's room, ack 0
            self._write_frame(_OP_TEXT, b'420["join",%d]' % self.spec.channel_id)
        elif payload.startswith(b"430"):  # the join's ack
            if not self.ready.done():
                self.ready.set_result(None)
        else:
            self.tally.note_error(payload.decode(errors="replace"))

    # --- sending --------------------------------------------------------------

    def send_message(self, client_ids: bool) -> int:
        """Send the next message of this sender in the current step, stamped with the time,
        into its next channel in turn; returns that channel's index in the scenario."""
        lane = self._next_lane
        self._next_lane = (lane + 1) % len(self._lanes)
        channel, channel_id, sender = self._lanes[lane]
        self._sent[lane] = sent = self._sent[lane] + 1
        content = b"#S%d:%d:%d:%d# %s" % (
            self.tally.step,
            sender,
            sent,
            time.monotonic_ns(),
            _PADDING,
        )
        if self.kind == "sio":
            payload = b'42["chat",{"channel_id":%d,"content":"%s"}]' % (
                self.spec.channel_id,
                content,
            )
        elif self.kind == "mux":
            payload = (
                b'{"type":"send","channel_id":%d,"body":{"type":"text","content":"%s"},'
                b'"client_id":"%s.%d.%d.%d"}'
                % (channel_id, content, self.nonce, self.tally.step, sender, sent)
            )
        elif client_ids:
            payload = b'{"type":"text","content":"%s","client_id":"%s.%d.%d.%d"}' % (
                content,
                self.nonce,
                self.tally.step,
                sender,
                sent,
            )
        else:
            payload = b'{"type":"text","content":"%s"}' % content
        self._write_frame(_OP_TEXT, payload)
        return channel

    def _write_frame(self, opcode: int, payload: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        key = self._mask
        mask = (key * (length // 4 + 1))[:length]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(
            length, "big"
        )
        transport.write(header + key + masked)
