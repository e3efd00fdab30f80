"""`python -m gateway`: run one gateway process (the unit compose and Kubernetes scale).

Shutdown order on SIGTERM or SIGINT: drain first, with the listener still
open so `/readyz` can answer 503 and new sockets are refused with 1012, then
close the listener, give in-flight requests `shutdown_timeout_seconds`, and
close the Redis and PostgreSQL connections.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from aiohttp import web

from gateway.app import create_app, drain
from shared.log import configure_logging
from shared.runtime import new_event_loop, settle_gc
from shared.settings import Settings, load_settings

log = logging.getLogger("gateway")


async def serve(settings: Settings, *, host: str, port: int, reuse_port: bool) -> None:
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=settings.shutdown_timeout_seconds,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
        await site.start()
        log.info("gateway listening", extra={"host": host, "port": port})
        settle_gc()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("draining", extra={"delay_s": settings.drain_delay_seconds})
        await drain(app)
    finally:
        await runner.cleanup()
    log.info("gateway stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="chat-group gateway", description=__doc__)
    parser.add_argument("--host", help="interface to bind (default: HOST)")
    parser.add_argument("--port", type=int, help="TCP port (default: PORT)")
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="share the port with sibling processes (SO_REUSEPORT)",
    )
    args = parser.parse_args(argv)
    settings = load_settings(require_jwt_secret=True)
    configure_logging(settings, "gateway")
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(
            serve(
                settings,
                host=args.host or settings.host,
                port=args.port or settings.port,
                reuse_port=args.reuse_port,
            )
        )


if __name__ == "__main__":
    main()
