"""A socket's outbound side: ordered, gap-free delivery through a bounded queue.

Two objects share the job. An `Outbox` is one socket's bounded queue and
writer; a `Connection` is one channel's stream into an outbox, with the
channel's resume state. The chat socket holds one of each; the multiplexed
socket one outbox and a connection per subscribed channel, so every
guarantee below holds per channel while the queue bound is the socket's.

Fan-out never awaits a socket: `offer` and `enqueue` are synchronous. When the
socket keeps up (nothing waiting in the transport), a frame is written at once,
with no task switch; otherwise it waits in a bounded queue that this
connection's writer task drains, many frames per write, at the pace the
transport allows. A client whose queue fills up is too slow; it is closed with
`CloseCode.TOO_SLOW` and resumes on reconnect, so one slow reader never holds
up anyone else.

The connection remembers the last `seq` it queued. A live frame that is not
the next one is dropped when already sent, and starts a catch-up when it
skips ahead (publishes missed while the pub/sub link was down). While
catching up, live frames are held (bounded, like the queue), the missing ones
are replayed from the backlog, and the held ones follow without duplicates.
A socket starts in that state: it catches up from its `since` (or from the
channel's head) before it goes live, so a resume has no gap and no
duplicate even while messages keep arriving. A replay reads one page at a
time and queues it at the writer's pace, so however long the gap, a
catching-up socket holds one page and its queue; one whose queue stays full
for `replay_stall_seconds` is closed as too slow, like a live one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from gateway.metrics import GatewayMetrics
from gateway.websocket import WebSocket, text_frame
from shared.backoff import Backoff
from shared.errors import AppError, CloseCode, HistoryGapError
from shared.wire import error_frame

log = logging.getLogger(__name__)


class Replay(Protocol):
    """Where missed messages come from (the broker's backlog)."""

    async def head(self, channel_id: int) -> int: ...

    async def page_after(self, channel_id: int, after_seq: int) -> Sequence[tuple[int, bytes]]: ...


# The codes `revoke` closes with; nothing else closes a socket with them.
_LOST_ACCESS = frozenset({CloseCode.FORBIDDEN, CloseCode.UNAUTHORIZED})


class _StalledError(Exception):
    """A replay found its socket's queue full for longer than the stall bound."""


class _ClosedError(Exception):
    """The outbox closed while a catch-up was replaying into it."""


class Outbox:
    """One socket's bounded outbound queue and its writer task.

    Frames are offered finished (`text_frame`, built once per message for
    every local recipient); `enqueue` takes a payload and frames it.
    """

    __slots__ = (
        "_close_request",
        "_metrics",
        "_writer",
        "pending",
        "queue_size",
        "socket",
        "user_id",
    )

    def __init__(self, *, user_id: int, queue_size: int, metrics: GatewayMetrics) -> None:
        self.user_id = user_id
        # A list, not a deque: an empty deque costs ten times the memory of an
        # empty list, and the writer swaps the list whole.
        self.pending: list[bytes] = []
        self.queue_size = queue_size
        self.socket: WebSocket | None = None
        self._metrics = metrics
        # Runs only while frames wait for the transport: an idle socket holds no task.
        self._writer: asyncio.Task[None] | None = None
        self._close_request: tuple[CloseCode, str, bytes | None] | None = None

    @property
    def closing(self) -> bool:
        return self._close_request is not None

    def attach(self, socket: WebSocket) -> None:
        """Start writing to `socket` what was queued before it opened, and all after."""
        self.socket = socket
        if self.pending:
            self._start_writer()

    async def stop(self) -> None:
        """Close (normally, unless a close was already requested) and wait for the writer."""
        self.close(CloseCode.NORMAL, "")
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)

    def enqueue(self, payload: bytes) -> None:
        """Send or queue a frame without waiting. A full queue closes the socket as too slow."""
        self.send(text_frame(payload))

    def send(self, frame: bytes) -> None:
        if self._close_request is not None:
            return
        pending = self.pending
        socket = self.socket
        if not pending and socket is not None and socket.write_if_idle(frame):
            return
        if len(pending) >= self.queue_size:
            self.too_slow(0)
            return
        pending.append(frame)
        if self._writer is None and socket is not None:
            self._start_writer()

    def close(self, code: CloseCode, reason: str, *, last_frame: bytes | None = None) -> None:
        """Stop the writer and close the socket with `code`; idempotent.

        Frames still queued are dropped (a slow client resumes from its last
        seq); `last_frame`, such as an error frame, is sent before the close.
        Catch-ups replaying into the outbox end at their next frame.
        """
        if self._close_request is not None:
            return
        self._close_request = (code, reason, last_frame)
        writer = self._writer
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
        if self.socket is not None:
            last = None if last_frame is None else text_frame(last_frame)
            self.socket.close(code, reason, last_frame=last)

    def revoke(self, code: CloseCode, reason: str) -> bool:
        """Close because the user lost access (`code` 4403: removed from the channel;
        4401: token revoked); False if the socket was closing already."""
        if self._close_request is not None:
            return False
        self.close(code, reason)
        return True

    @property
    def revoked(self) -> bool:
        """Closed because the user lost access: what the socket read is no longer sent."""
        request = self._close_request
        return request is not None and request[0] in _LOST_ACCESS

    def too_slow(self, held: int) -> None:
        """Close as too slow; `held` counts frames dropped outside the queue."""
        self._metrics.slow_disconnects.inc()
        self._metrics.dropped_frames.inc(len(self.pending) + held)
        log.info("closing slow client", extra={"user_id": self.user_id})
        self.close(CloseCode.TOO_SLOW, "too slow: outbound queue full, reconnect to resume")

    async def put(self, frame: bytes, stall_seconds: float) -> None:
        """Queue a finished frame once the queue has room (replays wait for the writer).

        This wait is a replay's backpressure: the next page is read only once
        this one is queued. Raises _StalledError when the writer could not hand
        the queue to the transport within `stall_seconds` (a client that stopped
        reading): it would hold a page and a queue for as long as it liked.
        Raises _ClosedError once the outbox is closing.
        """
        while len(self.pending) >= self.queue_size and self._writer is not None:
            # The writer ends once the queue is written.
            done, _ = await asyncio.wait({self._writer}, timeout=stall_seconds)
            if not done:
                raise _StalledError
        if self._close_request is not None:
            raise _ClosedError
        self.send(frame)

    def _start_writer(self) -> None:
        self._writer = asyncio.create_task(self._write_pending(), name="ws-writer")

    async def _write_pending(self) -> None:
        """Write queued frames, all that wait in one write, at the transport's pace; then end."""
        socket = self.socket
        assert socket is not None  # the writer starts only once there is a socket
        try:
            while self.pending and self._close_request is None and socket.open:
                await socket.drain()  # waits while the transport is over its limit
                frames, self.pending = self.pending, []
                socket.write(b"".join(frames))
        finally:
            self._writer = None


# What a detached connection writes to: closed from the start, it takes nothing.
_DETACHED = Outbox(user_id=0, queue_size=0, metrics=None)  # type: ignore[arg-type]
_DETACHED._close_request = (CloseCode.NORMAL, "", None)


class Connection:
    """One channel's stream into a socket's `Outbox`, with the channel's resume state.

    What the hub holds, per channel.
    """

    __slots__ = (
        "_catch_up",
        "_held",
        "_replay",
        "_resume_wait_seconds",
        "_stall_seconds",
        "channel_id",
        "last_seq",
        "metrics",
        "out",
        "token_generation",
        "user_id",
        "wants_events",
    )

    def __init__(
        self,
        out: Outbox,
        *,
        channel_id: int,
        token_generation: int,
        replay: Replay,
        metrics: GatewayMetrics,
        resume_wait_seconds: float,
        replay_stall_seconds: float,
        wants_events: bool = False,
    ) -> None:
        self.out = out
        self.user_id = out.user_id
        self.channel_id = channel_id
        # Of the token the socket was opened with: the membership audit re-checks it.
        self.token_generation = token_generation
        self.last_seq = 0  # the last message seq queued to this socket
        # Whether live-state events (`Hub.deliver_event`) reach this socket: the
        # multiplexed socket's do; the per-channel one keeps the Go server's
        # frames. Fixed before `Hub.join`, which indexes the takers.
        self.wants_events = wants_events
        self.metrics = metrics
        self._replay = replay
        self._resume_wait_seconds = resume_wait_seconds
        self._stall_seconds = replay_stall_seconds
        # Live frames held while catching up; None once live. A new connection
        # holds from the start: it is subscribed before it has caught up.
        self._held: deque[tuple[int, bytes]] | None = deque()
        self._catch_up: asyncio.Task[None] | None = None

    def start(self, after_seq: int, *, head: int) -> None:
        """Replay after `after_seq` up to at least `head`, then go live."""
        held = self._held
        if after_seq >= head and held is not None and all(seq <= after_seq for seq, _ in held):
            # Nothing to replay (the usual connect): live at once, no task.
            self._held = None
            self.last_seq = after_seq
            return
        self._start_catch_up(after_seq, goal=head)

    async def stop(self) -> None:
        """Stop the catch-up, if any, and wait for it."""
        task = self._catch_up
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def detach(self) -> None:
        """Take nothing more into the socket's outbox (an unsubscribe): from now on
        this connection writes to a closed outbox, and its catch-up ends."""
        self.out = _DETACHED
        if self._catch_up is not None:
            self._catch_up.cancel()

    def close(self, code: CloseCode, reason: str) -> None:
        self.out.close(code, reason)
        if self._catch_up is not None and self._catch_up is not asyncio.current_task():
            self._catch_up.cancel()

    def revoke(self, code: CloseCode, reason: str) -> bool:
        """The user lost access (see `Outbox.revoke`); False if nothing changed."""
        return self.out.revoke(code, reason)

    def offer(self, seq: int, frame: bytes) -> None:
        """A live message, as a finished frame, in the channel's publish order."""
        out = self.out
        if out._close_request is not None:
            return
        held = self._held
        if held is not None:
            if len(held) >= out.queue_size:
                self._too_slow()
            else:
                held.append((seq, frame))
            return
        if seq <= self.last_seq:
            return  # already replayed
        if seq == self.last_seq + 1:
            self.last_seq = seq
            # `Outbox.send`'s fast path, inlined: this runs once per delivery.
            socket = out.socket
            if out.pending or socket is None or not socket.write_if_idle(frame):
                out.send(frame)
            return
        self._held = deque([(seq, frame)])
        self._start_catch_up(self.last_seq, goal=seq - 1)

    def offer_event(self, frame: bytes) -> None:
        """A live-state event, as a finished frame: sent now or queued like any frame,
        outside the seq order (an event has no seq), also while catching up."""
        self.out.send(frame)

    def resync(self) -> None:
        """The pub/sub link was re-established: replay what was published meanwhile."""
        if not self.out.closing and self._held is None:
            self._held = deque()
            self._start_catch_up(self.last_seq, goal=None)

    def _too_slow(self) -> None:
        self.out.too_slow(len(self._held or ()))

    def _start_catch_up(self, after_seq: int, *, goal: int | None) -> None:
        self.metrics.catch_ups.inc()
        self._catch_up = asyncio.create_task(
            self._run_catch_up(after_seq, goal), name="ws-catch-up"
        )

    async def _run_catch_up(self, after_seq: int, goal: int | None) -> None:
        try:
            await self._replay_then_go_live(after_seq, goal)
        except _ClosedError:
            pass
        except _StalledError:
            self._too_slow()
        except AppError as exc:
            frame = error_frame(exc.code, exc.message)
            self.out.close(exc.close_code, exc.message, last_frame=frame)
        except Exception:
            log.exception("catch-up failed", extra={"channel_id": self.channel_id})
            self.out.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            if self._catch_up is asyncio.current_task():
                self._catch_up = None  # a finished task still holds memory

    async def _replay_then_go_live(self, last: int, goal: int | None) -> None:
        if goal is None:
            goal = await self._replay.head(self.channel_id)
        while True:
            last = await self._replay_until(last, goal)
            held = self._held
            assert held is not None  # only this task turns holding off
            while held and held[0][0] <= last:
                held.popleft()
            if not held:
                # No await between the check and the switch: nothing can slip in.
                self._held = None
                self.last_seq = last
                return
            seq, frame = held[0]
            if seq == last + 1:
                held.popleft()
                await self._put(frame)
                last = seq
            else:
                goal = seq - 1  # published before the held ones, not replayed yet

    async def _replay_until(self, last: int, goal: int) -> int:
        """Queue the backlog's frames after `last` up to `goal`; return the new last seq.

        Waits, bounded, for messages that are not available yet (neither in
        Redis nor written by a worker); past the bound the client is told
        which range is missing and the replay skips it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._resume_wait_seconds
        backoff = Backoff()
        while last < goal:
            if self.out.closing:
                raise _ClosedError
            page = await self._replay.page_after(self.channel_id, last)
            if page:
                for seq, frame in page:
                    await self._put(text_frame(frame))  # the writer's pace is the replay's pace
                    last = seq
                self.metrics.replayed_frames.inc(len(page))
                deadline = loop.time() + self._resume_wait_seconds
                backoff = Backoff()
            elif loop.time() >= deadline:
                self.metrics.history_gaps.inc()
                gap = HistoryGapError(details=[{"from_seq": last + 1, "to_seq": goal}])
                log.warning("resume gap", extra={"channel_id": self.channel_id, "to_seq": goal})
                await self._put(text_frame(self._gap_frame(gap)))
                last = goal
            else:
                await backoff.sleep()
        return last

    def _gap_frame(self, gap: AppError) -> bytes:
        return error_frame(gap.code, gap.message, gap.details)

    async def _put(self, frame: bytes) -> None:
        await self.out.put(frame, self._stall_seconds)
