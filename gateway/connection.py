"""One channel's stream into a socket: ordered, gap-free delivery, resumed after gaps.

Two objects share the job. An `Outbox` is one socket's bounded queue and
writer; a `Connection` is one channel's stream into an outbox, with the
channel's resume state. The chat socket holds one of each; the multiplexed
socket one outbox and a connection per subscribed channel, so every
guarantee below holds per channel while the queue bound is the socket's.

Fan-out never awaits a socket: `offer` is synchronous, and the outbox
(`gateway.outbox`) writes at once or queues, bounded.

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
from gateway.outbox import DETACHED, ClosedError, Outbox, StalledError
from gateway.websocket import text_frame
from shared.backoff import Backoff
from shared.errors import AppError, CloseCode, HistoryGapError
from shared.wire import error_frame, is_message_frame

log = logging.getLogger(__name__)


class Replay(Protocol):
    """Where missed messages come from (the gateway's backlog)."""

    async def head(self, channel_id: int) -> int: ...

    async def page_after(self, channel_id: int, after_seq: int) -> Sequence[tuple[int, bytes]]: ...


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
        "muted_until",
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
        # When the user's mute in the channel ends (epoch seconds; 0: not muted):
        # see gateway.mutes, which keeps it current.
        self.muted_until = 0.0
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
        self.out = DETACHED
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
        """A live message, as a finished frame, in the channel's publish order; an
        empty `frame` takes its seq and shows nothing (a change event, to a socket
        that does not take events: see `Hub.deliver_change`)."""
        out = self.out
        if out.close_request is not None:
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
            if not frame:
                return  # an event this socket does not show: it only takes its seq
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

    def rewound(self, replay: range, error: AppError) -> None:
        """The channel's counter went back (Redis lost writes): send `error` (the
        `channel_rewound` frame), then replay the seqs in `replay` from Redis and
        PostgreSQL, from the lower of `last_seq` and the range's start, so that a
        new message which took a seq this socket already saw is delivered, not
        dropped as a repeat. Later seqs come live, held meanwhile: the replay's
        goal is the range's end, not the head, which could count held frames."""
        if self.out.closing:
            return
        self.out.enqueue(self._gap_frame(error))
        if self._held is None:
            self.last_seq = min(self.last_seq, replay.start - 1)
            self._held = deque()
            self._start_catch_up(self.last_seq, goal=max(self.last_seq, replay.stop - 1))
        # Catching up already: that replay goes on from where it is.

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
        except ClosedError:
            pass
        except StalledError:
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
                if frame:
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
                raise ClosedError
            page = await self._replay.page_after(self.channel_id, last)
            if page:
                for seq, frame in page:
                    if self.wants_events or is_message_frame(frame):
                        # The writer's pace is the replay's pace.
                        await self._put(text_frame(frame))
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
