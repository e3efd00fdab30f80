"""`python -m gateway`: run one gateway process (the unit compose and Kubernetes scale)."""

from __future__ import annotations

import argparse

from aiohttp import web

from gateway.app import create_app
from shared.log import configure_logging
from shared.runtime import new_event_loop
from shared.settings import load_settings


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
    web.run_app(
        create_app(settings),
        host=args.host or settings.host,
        port=args.port or settings.port,
        reuse_port=args.reuse_port or None,
        shutdown_timeout=settings.shutdown_timeout_seconds,
        access_log=None,
        print=None,
        loop=new_event_loop(),
    )


if __name__ == "__main__":
    main()
