"""Message ids for imported history, in the send script's layout. No I/O.

An id is `(ms since 2024-01-01) << 12 | partition << 5 | counter` (send.lua):
the partition is the imported channel's, and within a partition the ids of a
run of messages taken in (created_at, Go id) order only grow, exactly as the
live clock hands them out: the message's millisecond, or, when 32 ids of that
millisecond and partition are used, the next one. So ids sort like created_at.

They never meet a live id:

- Live ids of the future are above the partition's live clock (`live_floor`,
  read from Redis when a run starts). An imported message whose millisecond
  reaches it (a timestamp at the import's start, or the tail of a burst) does
  not get an id here: `allocate` returns None, and the caller takes the ids
  from the live clock itself (`claimed`).
- Ids the target already holds (its own messages, live messages in imported
  channels, not yet persisted entries of the ingest streams) are stepped over
  when the caller passes them in `occupied`.

Messages older than the id epoch have no millisecond of their own in the
layout: they are packed in order from the epoch on.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.go_import.report import IdStats
from shared.wire import ID_COUNTER_SPAN, ID_EPOCH_MS, ID_PARTITION_SHIFT, ID_TIME_SHIFT

_LAST_COUNTER = ID_COUNTER_SPAN - 1


def compose_id(ms: int, partition: int, counter: int) -> int:
    """The id of millisecond `ms` (since the Unix epoch), partition and counter."""
    return ((ms - ID_EPOCH_MS) << ID_TIME_SHIFT) | (partition << ID_PARTITION_SHIFT) | counter


@dataclass(slots=True)
class _Clock:
    ms: int  # the last millisecond used (Unix ms); below the epoch when none yet
    counter: int


class IdAllocator:
    """The id generator of the imported history, one clock per partition."""

    def __init__(
        self,
        partitions: int,
        state: dict[int, tuple[int, int]],
        live_floor: dict[int, int],
        stats: IdStats,
    ) -> None:
        self._clocks = {
            p: _Clock(*state.get(p, (ID_EPOCH_MS - 1, ID_COUNTER_SPAN - 1)))
            for p in range(partitions)
        }
        self._live_floor = live_floor
        self.stats = stats
        self.occupied: set[int] = set()

    def state(self) -> dict[int, tuple[int, int]]:
        """What `__init__` takes to continue where this allocator stands."""
        return {p: (clock.ms, clock.counter) for p, clock in self._clocks.items()}

    def restore(self, state: dict[int, tuple[int, int]], stats: IdStats) -> None:
        for p, (ms, counter) in state.items():
            clock = self._clocks[p]
            clock.ms, clock.counter = ms, counter
        self.stats = stats

    def allocate(self, partition: int, created_ms: int) -> int | None:
        """The next id of `partition` for a message created at `created_ms` (Unix ms).

        None when the id would reach the live clock: take it with `claimed`.
        """
        clock = self._clocks[partition]
        wanted = created_ms
        if wanted < ID_EPOCH_MS:
            self.stats.before_epoch += 1
            wanted = ID_EPOCH_MS
        floor, occupied = self._live_floor[partition], self.occupied
        while True:
            # As send.lua: this ms, or the next counter of the last one, or the ms after.
            if wanted > clock.ms:
                ms, counter = wanted, 0
            elif clock.counter < _LAST_COUNTER:
                ms, counter = clock.ms, clock.counter + 1
            else:
                ms, counter = clock.ms + 1, 0
            if ms >= floor:
                return None
            clock.ms, clock.counter = ms, counter
            message_id = (
                ((ms - ID_EPOCH_MS) << ID_TIME_SHIFT) | (partition << ID_PARTITION_SHIFT) | counter
            )  # compose_id, inlined: this runs once per message
            if not occupied or message_id not in occupied:
                break
            self.stats.skipped += 1
        if ms != wanted:
            self.stats.moved += 1
        return message_id

    def claimed(self, partition: int, first_ms: int, first_counter: int, count: int) -> list[int]:
        """The `count` ids the live clock handed out from (`first_ms`, `first_counter`) on."""
        ids: list[int] = []
        ms, counter = first_ms, first_counter
        for _ in range(count):
            ids.append(compose_id(ms, partition, counter))
            last_ms, last_counter = ms, counter
            counter += 1
            if counter == ID_COUNTER_SPAN:
                ms, counter = ms + 1, 0
        if ids:
            clock = self._clocks[partition]
            clock.ms, clock.counter = last_ms, last_counter
            self.stats.live_clock += count
        return ids
