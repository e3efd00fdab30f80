"""Baseline: python-socketio's AsyncServer on aiohttp, scaled out with `AsyncRedisManager`.

What a Python team would reach for instead of writing a gateway: a room per
channel, and python-socketio's Redis manager to fan out between processes (the
benchmark runs two on one Redis). Like the naive baseline it has no
authentication, sequence numbers, stream or persistence: the `token` query
parameter is taken as the user id, unchecked.

Protocol (socket.io v5 over engine.io v4, WebSocket transport):
connect to `/socket.io/?EIO=4&transport=websocket&token=<user id>`, emit
`join` with the channel id (acknowledged once the socket is in the room), emit
`chat` with `{"channel_id", "content"}`; everyone in the room, the sender
included, gets a `message` event shaped like our message frame.

Run: `python -m loadtests.baselines.socketio_server --port 4200 --redis-url redis://...`
Needs python-socketio (the `bench` extra).
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any
from urllib.parse import parse_qs

import socketio  # type: ignore[import-untyped]
from aiohttp import web

from loadtests.baselines import arguments, serve

_ids = itertools.count(1)


def create_app(redis_url: str, channel: str) -> web.Application:
    manager = socketio.AsyncRedisManager(redis_url, channel=channel)
    sio = socketio.AsyncServer(
        client_manager=manager, async_mode="aiohttp", cors_allowed_origins="*"
    )

    async def connect(sid: str, environ: dict[str, Any], auth: object = None) -> None:
        token = parse_qs(environ.get("QUERY_STRING", "")).get("token", ["0"])[0]
        await sio.save_session(sid, {"user_id": int(token) if token.isdigit() else 0})

    async def join(sid: str, channel_id: int) -> str:
        await sio.enter_room(sid, f"ch:{channel_id}")
        return "ok"

    async def chat(sid: str, data: dict[str, Any]) -> None:
        session = await sio.get_session(sid)
        channel_id = int(data["channel_id"])
        message = {
            "type": "message",
            "id": next(_ids),
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "user_id": session["user_id"],
            "channel_id": channel_id,
            "body": {"type": "text", "content": data["content"]},
        }
        await sio.emit("message", message, room=f"ch:{channel_id}")

    sio.on("connect", connect)
    sio.on("join", join)
    sio.on("chat", chat)

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    sio.attach(app)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = arguments(__doc__.splitlines()[0], default_port=4200)
    parser.add_argument("--channel", default="socketio", help="the manager's Redis channel")
    args = parser.parse_args()
    serve(create_app(args.redis_url, args.channel), args)


if __name__ == "__main__":
    main()
