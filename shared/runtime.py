"""Process start-up helpers shared by the gateway and the worker."""

from __future__ import annotations

import asyncio
import gc

# CPython collects its youngest generation every 700 container allocations. The
# send path allocates a few dozen per message, so that is hundreds of
# collections a second, and each promotes survivors toward the full
# collections that walk every socket's objects. Nearly all of a message's
# objects are freed by reference counting, not by the collector, so it can run
# far less often: the cyclic garbage it would have found earlier is bounded by
# the threshold.
_GC_THRESHOLDS = (50_000, 20, 20)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed (it is not built for Windows), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def settle_gc() -> None:
    """Collect less often, and never again walk what start-up allocated (the
    modules, the app, the pools): call once the process is up and serving."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)
