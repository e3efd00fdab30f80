"""Server WebSockets that leave aiohttp once upgraded.

aiohttp answers the opening request (routing, middlewares, admission) and then
hands the TCP transport to a `WebSocket`, a plain `asyncio.Protocol`, and
forgets it. An aiohttp WebSocket keeps its request, HTTP protocol, parser,
reader, writer, payload queue and a handler task alive for the socket's whole
life, about 9 KB of Python objects per idle socket; a `WebSocket` is one
object with slots and its transport. Inbound frames are parsed in
`data_received` and handed to the listener synchronously, with no task switch.

It speaks RFC 6455 without extensions, and passes the Autobahn TestSuite's
sections 1-7 and 10 (tests/gateway/test_autobahn.py). Client frames must be
masked, control frames short and final; a text message must be valid UTF-8,
checked fragment by fragment, or the socket fails with 1007; a close frame
must carry a code a peer may send and a UTF-8 reason, or it is answered with
1002. A frame or message over `max_size`, or a message in more than
`max_fragments` frames, fails the socket with 1009; any other violation with
1002. A failed socket sends its close frame and a FIN, then reads and drops
whatever the peer still sends, so the close frame is not lost to a reset.
Pings from the peer are answered. Reading pauses while the transport's write
buffer is over its high-water mark, so a peer that sends and never reads
cannot grow the gateway's memory; `Sockets.heartbeat` (`gateway.sockets`)
pings every socket and aborts the ones that stayed silent, or unwritable, for a whole interval.
`close` sends a close frame and waits, bounded, for the peer's; a peer that
never reads is aborted after `CLOSE_TIMEOUT_SECONDS`.

Hand-written rather than a maintained Sans-I/O implementation because it is
the cheapest per frame and per idle socket of those measured (README, "Design
decisions beyond DESIGN.md"; `python -m loadtests.ws_framing`).
"""

from __future__ import annotations

import asyncio
import codecs
import logging
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol

from shared.errors import CloseCode

if TYPE_CHECKING:
    from gateway.sockets import Sockets

log = logging.getLogger(__name__)

# Bound on the closing handshake with a peer that may no longer read. Past it
# the TCP connection is aborted: a peer that never reads would otherwise keep
# the socket and its buffers until the heartbeat notices.
CLOSE_TIMEOUT_SECONDS = 5.0

_OP_CONTINUATION = 0x0
_OP_TEXT = 0x1
_OP_BINARY = 0x2
_OP_CLOSE = 0x8
_OP_PING = 0x9
_OP_PONG = 0xA
_PING = b"\x89\x00"
_MAX_CONTROL_PAYLOAD = 125
# Close codes a peer may send (RFC 6455, 7.4.1-2, and IANA's registry): 1004
# is reserved, 1005, 1006 and 1015 are never sent, 1016-2999 are unassigned
# protocol codes, 3000-4999 belong to libraries and applications.
_PEER_CLOSE_CODES = frozenset((*range(1000, 1004), *range(1007, 1015)))
_utf8_decoder = codecs.getincrementaldecoder("utf-8")


class Listener(Protocol):
    """What a socket's owner hears: each complete message, then the end.

    `on_message` gets a text message's payload as valid UTF-8 (a text message
    that is not fails the socket before it is heard) and says which kind it is.
    """

    def on_message(self, payload: bytes, binary: bool) -> None: ...

    async def on_closed(self) -> None: ...


class _State(IntEnum):
    OPEN = 0
    CLOSING = 1  # our close frame is sent; waiting for the peer's
    # Nothing more is parsed (the peer's close frame is in, or the socket
    # failed): our last frames flush, then a FIN; what the peer still sends is
    # read and dropped, so that our close frame reaches it instead of a reset.
    FLUSHING = 2
    CLOSED = 3


class _Fragments:
    """A fragmented message being reassembled; exists only while one is."""

    __slots__ = ("binary", "count", "decoder", "parts", "size")

    def __init__(self, binary: bool) -> None:
        self.binary = binary
        self.parts: list[bytes] = []
        self.size = 0  # running total: checking the limit never walks the parts
        self.count = 0  # frames so far, empty ones included
        # Text is checked fragment by fragment, so bad UTF-8 fails the socket
        # at the frame that holds it, not at the end of the message.
        self.decoder = None if binary else _utf8_decoder()


class WebSocket(asyncio.Protocol):
    """One upgraded connection. Writes take finished frames (see `text_frame`).

    Reading stops for either of two reasons, and resumes only when neither
    holds: the listener asked (`pause_reading`), or the transport's write
    buffer is over its high-water mark (`pause_writing`). The second keeps a
    peer that sends (pings, say) and never reads from growing the buffer of
    our answers; the heartbeat drops it if it stays so for a whole interval.
    """

    __slots__ = (
        "_abort_handle",
        "_buffer",
        "_fragments",
        "_max_size",
        "_reading_paused",
        "_seen",
        "_sockets",
        "_state",
        "_transport",
        "_writable",
        "listener",
    )

    def __init__(
        self, transport: asyncio.Transport, sockets: Sockets, listener: Listener | None
    ) -> None:
        self._transport = transport
        self._sockets = sockets
        self.listener = listener
        self._max_size = sockets.max_size
        # The start of a frame not yet complete; a bytearray grown in place
        # while one is, so a frame that arrives in many pieces costs linear time.
        self._buffer: bytearray | None = None
        self._fragments: _Fragments | None = None
        self._state = _State.OPEN
        # Data arrived (or writes resumed) since the last heartbeat.
        self._seen = True
        self._reading_paused = False  # by the listener
        self._abort_handle: asyncio.TimerHandle | None = None
        # Set while the transport is over its high-water mark (and reading is
        # paused for it); None while it takes writes.
        self._writable: asyncio.Future[None] | None = None

    # --- writing --------------------------------------------------------------

    @property
    def open(self) -> bool:
        return self._state is _State.OPEN

    def write_if_idle(self, data: bytes) -> bool:
        """Write `data` at once if the socket is open and nothing waits in the
        transport ahead of it; False (nothing written) otherwise."""
        transport = self._transport
        if self._state is _State.OPEN and transport.get_write_buffer_size() == 0:
            transport.write(data)
            return True
        return False

    def write(self, data: bytes) -> None:
        """Write finished frames; nothing once closing."""
        if self._state is _State.OPEN:
            self._transport.write(data)

    async def drain(self) -> None:
        """Wait until the transport takes writes again (returns at once when closed)."""
        while self._writable is not None and self._state is not _State.CLOSED:
            await asyncio.shield(self._writable)

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()
        if self._state < _State.FLUSHING:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._release_writers()
        self._seen = True  # the peer reads again: it is alive
        if not self._reading_paused and self._state < _State.FLUSHING:
            self._transport.resume_reading()

    def pause_reading(self) -> None:
        """Stop reading until `resume_reading`; the heartbeat spares the socket meanwhile."""
        if self._state < _State.FLUSHING:
            self._reading_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._reading_paused = False
        if self._writable is None and self._state < _State.FLUSHING:
            self._transport.resume_reading()

    def close(self, code: CloseCode, reason: str, *, last_frame: bytes | None = None) -> None:
        """Send `last_frame` (a finished frame) and a close frame, then wait for the peer's."""
        if self._state is not _State.OPEN:
            return
        frame = close_frame(code, reason)
        self._transport.write(frame if last_frame is None else last_frame + frame)
        self._state = _State.CLOSING
        self._bound_closing()

    def abort(self) -> None:
        if self._state is not _State.CLOSED:
            self._transport.abort()

    def heartbeat(self) -> None:
        """Abort a socket silent since the last beat; ping the others.

        A socket whose reading the listener paused is spared (it cannot hear the
        pong). One paused because the peer does not read is not: its writes
        stayed paused for the whole interval.
        """
        if self._state is not _State.OPEN:
            return
        if not self._seen and not self._reading_paused:
            log.info("peer missed its heartbeat, dropping it")
            self.abort()
            return
        self._seen = False
        self._transport.write(_PING)

    # --- reading --------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._seen = True
        if self._state >= _State.FLUSHING:
            return  # failed, or the peer's close is in: the rest is dropped
        pending = self._buffer
        buffer: bytes | bytearray = data
        if pending is not None:
            pending += data  # grown in place: amortized, never a copy of all so far
            buffer = pending
        position, size = 0, len(buffer)
        while size - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            length = second & 0x7F
            header = 6
            if length == 126:
                header = 8
                if size - position < header:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 4], "big")
            elif length == 127:
                header = 14
                if size - position < header:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 10], "big")
            if first & 0x70 or not second & 0x80:
                self._fail(CloseCode.PROTOCOL_ERROR, "unmasked frame or reserved bits")
                return
            if length > self._max_size:
                self._fail(CloseCode.MESSAGE_TOO_BIG, "message too big")
                return
            end = position + header + length
            if end > size:
                break
            mask = buffer[position + header - 4 : position + header]
            payload = _unmask(buffer[position + header : end], mask)
            position = end
            self._on_frame(first & 0x0F, bool(first & 0x80), payload)
            if self._state is _State.FLUSHING:
                return
        if position == size:
            self._buffer = None
        elif pending is None:
            self._buffer = bytearray(memoryview(data)[position:])
        else:
            del pending[:position]  # a bytearray drops its head without moving the rest

    def _on_frame(self, opcode: int, final: bool, payload: bytes) -> None:
        if opcode >= _OP_CLOSE:
            if not final or len(payload) > _MAX_CONTROL_PAYLOAD:
                self._fail(CloseCode.PROTOCOL_ERROR, "bad control frame")
            elif opcode == _OP_CLOSE:
                self._on_close_frame(payload)
            elif opcode == _OP_PING:
                if self._state is _State.OPEN:
                    self._transport.write(_control_frame(_OP_PONG, payload))
            elif opcode != _OP_PONG:
                self._fail(CloseCode.PROTOCOL_ERROR, "unknown opcode")
            return
        if self._state is not _State.OPEN:
            return  # closing: data frames are ignored until the peer's close
        fragments = self._fragments
        if opcode == _OP_CONTINUATION:
            if fragments is None:
                self._fail(CloseCode.PROTOCOL_ERROR, "continuation without a message")
                return
            if not self._add_fragment(fragments, payload, final) or not final:
                return
            self._fragments = None
            parts = fragments.parts
            payload = parts[0] if len(parts) == 1 else b"".join(parts)
            binary = fragments.binary
        elif opcode in (_OP_TEXT, _OP_BINARY):
            if fragments is not None:
                self._fail(CloseCode.PROTOCOL_ERROR, "new message inside a fragmented one")
                return
            binary = opcode == _OP_BINARY
            if not final:
                self._add_fragment(self._start_fragments(binary), payload, final)
                return
            # isascii is a fast scan that allocates nothing: most chat text is ASCII.
            if not binary and not payload.isascii() and not _is_utf8(payload):
                self._fail(CloseCode.INVALID_PAYLOAD, "text message is not valid UTF-8")
                return
        else:
            self._fail(CloseCode.PROTOCOL_ERROR, "unknown opcode")
            return
        if self.listener is not None:
            self.listener.on_message(payload, binary)

    def _start_fragments(self, binary: bool) -> _Fragments:
        fragments = self._fragments = _Fragments(binary)
        return fragments

    def _add_fragment(self, fragments: _Fragments, payload: bytes, final: bool) -> bool:
        """Take one fragment of a message; False if the socket failed on it."""
        fragments.count += 1
        fragments.size += len(payload)
        if fragments.size > self._max_size:
            self._fail(CloseCode.MESSAGE_TOO_BIG, "message too big")
            return False
        if fragments.count > self._sockets.max_fragments:
            # Each frame costs a call however small it is: 40,000 empty
            # continuations would hold the loop for as long as they are read.
            # 1009, not 1008: the cap bounds the message's size, counted in
            # frames, and a client should treat it as it treats the byte limit.
            self._fail(CloseCode.MESSAGE_TOO_BIG, "message in too many fragments")
            return False
        if fragments.decoder is not None:
            try:
                fragments.decoder.decode(payload, final)
            except UnicodeDecodeError:
                self._fail(CloseCode.INVALID_PAYLOAD, "text message is not valid UTF-8")
                return False
        if payload:
            fragments.parts.append(payload)
        return True

    def _on_close_frame(self, payload: bytes) -> None:
        if self._state is _State.OPEN:
            code = int.from_bytes(payload[:2], "big") if payload else CloseCode.NORMAL
            if len(payload) == 1 or not _peer_may_send(code) or not _is_utf8(payload[2:]):
                code = CloseCode.PROTOCOL_ERROR
            self._transport.write(close_frame(code, ""))
        # The server ends the TCP connection once both close frames are out (RFC 6455, 7.1.1).
        self._finish()

    def _fail(self, code: CloseCode, reason: str) -> None:
        # Failing a WebSocket (RFC 6455, 7.1.7): the close frame goes out, then
        # the TCP connection ends; nothing more the peer sent is processed.
        log.info("closing a socket that broke the protocol", extra={"close_code": int(code)})
        self.close(code, reason)  # an open socket sends its close frame
        self._finish()

    # --- lifecycle ------------------------------------------------------------

    def eof_received(self) -> bool:
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _State.CLOSED
        if self._abort_handle is not None:
            self._abort_handle.cancel()
            self._abort_handle = None
        self._release_writers()
        self._sockets.closed(self)

    def _finish(self) -> None:
        """Parse nothing more; flush, send a FIN, and drop what the peer still sends."""
        self._state = _State.FLUSHING
        self._bound_closing()
        self._buffer = None
        self._fragments = None
        transport = self._transport
        if transport.is_closing():
            return
        # Reading on (whatever paused it) empties the kernel's receive queue:
        # closing over unread data would send a reset, which can destroy our
        # close frame before the peer reads it.
        transport.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()  # the peer's FIN (eof_received) then closes it
        else:
            transport.close()

    def _bound_closing(self) -> None:
        # Every way of closing ends here: the abort bounds the flush of the
        # last frames, and the close handshake, for a peer that stopped reading.
        if self._abort_handle is None:
            loop = asyncio.get_running_loop()
            self._abort_handle = loop.call_later(CLOSE_TIMEOUT_SECONDS, self._transport.abort)

    def _release_writers(self) -> None:
        waiter, self._writable = self._writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def text_frame(payload: bytes) -> bytes:
    """One unmasked, uncompressed, final WebSocket text frame (RFC 6455, 5.2)."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return b"\x81\x7e" + size.to_bytes(2, "big") + payload
    return b"\x81\x7f" + size.to_bytes(8, "big") + payload


def close_frame(code: int, reason: str) -> bytes:
    # Cut to fit a control frame without splitting a character.
    encoded = reason.encode()[: _MAX_CONTROL_PAYLOAD - 2].decode(errors="ignore").encode()
    return _control_frame(_OP_CLOSE, code.to_bytes(2, "big") + encoded)


def _control_frame(opcode: int, payload: bytes) -> bytes:
    return bytes((0x80 | opcode, len(payload))) + payload


def _peer_may_send(code: int) -> bool:
    return code in _PEER_CLOSE_CODES or 3000 <= code <= 4999


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _unmask(payload: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    size = len(payload)
    if not size:
        return b""
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        size, "little"
    )
