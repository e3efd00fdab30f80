"""Entry point of the persistence worker: `python -m persistence`.

Builds the settings once, runs one `Worker` until SIGTERM or SIGINT, then
shuts down in two phases: the worker stops reading and finishes (writes and
acks) its in-flight batch; if that takes longer than
`shutdown_timeout_seconds` it is cancelled, and its unacked entries stay
pending for a peer to claim. Exits 0 after a requested shutdown, 2 on a
configuration error, 1 if the worker fails.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from persistence.metrics import metrics_server
from persistence.worker import Worker
from shared.log import configure_logging
from shared.runtime import new_event_loop, settle_gc
from shared.settings import Settings, load_settings

_log = logging.getLogger("persistence")


async def serve(settings: Settings) -> None:
    """Run a worker until a signal asks it to stop; raise if it fails on its own."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    worker = Worker(settings)
    _log.info("persistence worker starting", extra={"consumer": worker.consumer})
    settle_gc()
    async with metrics_server(worker.metrics, settings.host, settings.worker_metrics_port):
        await _run_until_stopped(worker, settings, stop)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(signum)
    _log.info("persistence worker stopped")


async def _run_until_stopped(worker: Worker, settings: Settings, stop: asyncio.Event) -> None:
    run = asyncio.create_task(worker.run(stop), name="persistence-worker")
    stopping = asyncio.create_task(stop.wait(), name="persistence-stop")
    try:
        await asyncio.wait({run, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if run.done():
            run.result()  # run() returns only after stop: reaching here means it raised
            return
        _log.info("stop requested, finishing the in-flight batch")
        try:
            # wait_for cancels the worker at the deadline and waits for it to unwind.
            await asyncio.wait_for(run, settings.shutdown_timeout_seconds)
        except TimeoutError:
            _log.warning(
                "shutdown deadline passed; unacked entries stay pending for a peer",
                extra={"deadline_s": settings.shutdown_timeout_seconds},
            )
    finally:
        stopping.cancel()
        run.cancel()
        await asyncio.gather(run, stopping, return_exceptions=True)


def main() -> None:
    settings = load_settings()
    configure_logging(settings, "persistence")
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(serve(settings))
    except Exception:
        _log.exception("persistence worker failed")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
