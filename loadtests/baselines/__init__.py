"""Baseline servers the fan-out benchmark compares our gateway with."""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web


def arguments(description: str, default_port: int) -> argparse.ArgumentParser:
    """The options every baseline takes; a baseline may add its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--uvloop", action="store_true", help="run on uvloop (default: asyncio's own loop)"
    )
    return parser


def serve(app: web.Application, args: argparse.Namespace) -> None:
    """Run a baseline on 127.0.0.1 until SIGTERM, on asyncio's loop unless `--uvloop`."""
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        shutdown_timeout=2,
        loop=_new_loop(uvloop=args.uvloop),
    )


def _new_loop(*, uvloop: bool) -> asyncio.AbstractEventLoop:
    if uvloop:
        import uvloop as _uvloop

        return _uvloop.new_event_loop()
    return asyncio.new_event_loop()
