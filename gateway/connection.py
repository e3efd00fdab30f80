"""One chat socket's outbound side: ordered, gap-free delivery through a bounded queue.

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


class Connection:
    """The outbound half of one WebSocket.

    Message frames are offered finished (`text_frame`, built once per message
    for every local recipient); `enqueue` takes a payload and frames it.
    """

    __slots__ = (
        "_catch_up",
        "_close_request",
        "_held",
        "_metrics",
        "_pending",
        "_queue_size",
        "_replay",
        "_resume_wait_seconds",
        "_socket",
        "_stall_seconds",
        "_writer",
        "channel_id",
        "last_seq",
        "token_generation",
        "user_id",
        "wants_events",
    )

    def __init__(
        self,
        *,
        user_id: int,
        channel_id: int,
        token_generation: int,
        queue_size: int,
        replay: Replay,
        metrics: GatewayMetrics,
        resume_wait_seconds: float,
        replay_stall_seconds: float,
        wants_events: bool = False,
    ) -> None:
        self.user_id = user_id
        self.channel_id = channel_id
        # Of the token the socket was opened with: the membership audit re-checks it.
        self.token_generation = token_generation
        self.last_seq = 0  # the last message seq queued to this socket
        # Whether live-state events (`Hub.deliver_event`) reach this socket: the
        # multiplexed socket's do; the per-channel one keeps the Go server's
        # frames. Fixed before `Hub.join`, which indexes the takers.
        self.wants_events = wants_events
        # Lists, not deques, for what every socket holds: an empty deque costs
        # ten times the memory of an empty list, and the writer swaps the list whole.
        self._pending: list[bytes] = []
        self._queue_size = queue_size
        self._socket: WebSocket | None = None
        self._replay = replay
        self._metrics = metrics
        self._resume_wait_seconds = resume_wait_seconds
        self._stall_seconds = replay_stall_seconds
        # Live frames held while catching up; None once live. A new socket
        # holds from the start: it is subscribed before it has caught up.
        self._held: deque[tuple[int, bytes]] | None = deque()
        # Runs only while frames wait for the transport: an idle socket holds no task.
        self._writer: asyncio.Task[None] | None = None
        self._catch_up: asyncio.Task[None] | None = None
        self._close_request: tuple[CloseCode, str, bytes | None] | None = None

    def start(self, socket: WebSocket, after_seq: int, *, head: int) -> None:
        """Start writing: replay after `after_seq` up to at least `head`, then go live."""
        self._socket = socket
        if self._pending:
            self._start_writer()
        held = self._held
        if after_seq >= head and held is not None and all(seq <= after_seq for seq, _ in held):
            # Nothing to replay (the usual connect): live at once, no task.
            self._held = None
            self.last_seq = after_seq
            return
        self._start_catch_up(after_seq, goal=head)

    async def stop(self) -> None:
        """Close (normally, unless a close was already requested) and wait for the tasks."""
        self.close(CloseCode.NORMAL, "")
        tasks = [task for task in (self._catch_up, self._writer) if task]
        await asyncio.gather(*tasks, return_exceptions=True)

    def offer(self, seq: int, frame: bytes) -> None:
        """A live message, as a finished frame, in the channel's publish order."""
        if self._close_request is not None:
            return
        held = self._held
        if held is not None:
            if len(held) >= self._queue_size:
                self._too_slow()
            else:
                held.append((seq, frame))
            return
        if seq <= self.last_seq:
            return  # already replayed
        if seq == self.last_seq + 1:
            self.last_seq = seq
            # `_send`'s fast path, inlined: this runs once per delivery.
            socket = self._socket
            if self._pending or socket is None or not socket.write_if_idle(frame):
                self._send(frame)
            return
        self._held = deque([(seq, frame)])
        self._start_catch_up(self.last_seq, goal=seq - 1)

    def resync(self) -> None:
        """The pub/sub link was re-established: replay what was published meanwhile."""
        if self._close_request is None and self._held is None:
            self._held = deque()
            self._start_catch_up(self.last_seq, goal=None)

    def offer_event(self, frame: bytes) -> None:
        """A live-state event, as a finished frame: sent now or queued like any frame,
        outside the seq order (an event has no seq), also while catching up."""
        self._send(frame)

    def enqueue(self, payload: bytes) -> None:
        """Send or queue a frame without waiting. A full queue closes the socket as too slow."""
        self._send(text_frame(payload))

    def _send(self, frame: bytes) -> None:
        if self._close_request is not None:
            return
        pending = self._pending
        socket = self._socket
        if not pending and socket is not None and socket.write_if_idle(frame):
            return
        if len(pending) >= self._queue_size:
            self._too_slow()
            return
        pending.append(frame)
        if self._writer is None and socket is not None:
            self._start_writer()

    def close(self, code: CloseCode, reason: str, *, last_frame: bytes | None = None) -> None:
        """Stop the catch-up and the writer, and close the socket with `code`; idempotent.

        Frames still queued are dropped (a slow client resumes from its last
        seq); `last_frame`, such as an error frame, is sent before the close.
        """
        if self._close_request is not None:
            return
        self._close_request = (code, reason, last_frame)
        current = asyncio.current_task()
        for task in (self._catch_up, self._writer):
            if task is not None and task is not current:
                task.cancel()
        if self._socket is not None:
            last = None if last_frame is None else text_frame(last_frame)
            self._socket.close(code, reason, last_frame=last)

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

    def _too_slow(self) -> None:
        self._metrics.slow_disconnects.inc()
        self._metrics.dropped_frames.inc(len(self._pending) + len(self._held or ()))
        log.info(
            "closing slow client", extra={"user_id": self.user_id, "channel_id": self.channel_id}
        )
        self.close(CloseCode.TOO_SLOW, "too slow: outbound queue full, reconnect to resume")

    def _start_catch_up(self, after_seq: int, *, goal: int | None) -> None:
        self._metrics.catch_ups.inc()
        self._catch_up = asyncio.create_task(
            self._run_catch_up(after_seq, goal), name="ws-catch-up"
        )

    async def _run_catch_up(self, after_seq: int, goal: int | None) -> None:
        try:
            await self._replay_then_go_live(after_seq, goal)
        except _StalledError:
            self._too_slow()
        except AppError as exc:
            frame = error_frame(exc.code, exc.message)
            self.close(exc.close_code, exc.message, last_frame=frame)
        except Exception:
            log.exception("catch-up failed", extra={"channel_id": self.channel_id})
            self.close(CloseCode.INTERNAL_ERROR, "internal error")
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
            page = await self._replay.page_after(self.channel_id, last)
            if page:
                for seq, frame in page:
                    await self._put(text_frame(frame))  # the writer's pace is the replay's pace
                    last = seq
                self._metrics.replayed_frames.inc(len(page))
                deadline = loop.time() + self._resume_wait_seconds
                backoff = Backoff()
            elif loop.time() >= deadline:
                self._metrics.history_gaps.inc()
                gap = HistoryGapError(details=[{"from_seq": last + 1, "to_seq": goal}])
                log.warning("resume gap", extra={"channel_id": self.channel_id, "to_seq": goal})
                await self._put(text_frame(error_frame(gap.code, gap.message, gap.details)))
                last = goal
            else:
                await backoff.sleep()
        return last

    async def _put(self, frame: bytes) -> None:
        """Queue a finished frame once the queue has room (replays wait for the writer).

        This wait is the replay's backpressure: the next page is read only once
        this one is queued. Raises _StalledError when the writer could not hand
        the queue to the transport within the stall bound (a client that stopped
        reading): it would hold a page and a queue for as long as it liked.
        """
        while len(self._pending) >= self._queue_size and self._writer is not None:
            # The writer ends once the queue is written.
            done, _ = await asyncio.wait({self._writer}, timeout=self._stall_seconds)
            if not done:
                raise _StalledError
        self._send(frame)

    def _start_writer(self) -> None:
        self._writer = asyncio.create_task(self._write_pending(), name="ws-writer")

    async def _write_pending(self) -> None:
        """Write queued frames, all that wait in one write, at the transport's pace; then end."""
        socket = self._socket
        assert socket is not None  # the writer starts only once there is a socket
        try:
            while self._pending and self._close_request is None and socket.open:
                await socket.drain()  # waits while the transport is over its limit
                frames, self._pending = self._pending, []
                socket.write(b"".join(frames))
        finally:
            self._writer = None
