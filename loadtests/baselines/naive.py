"""Baseline: the chat server a typical first version would be, on aiohttp and redis-py.

This is deliberately written the obvious way, to measure our gateway against:

- no authentication, membership, sequence numbers, stream or persistence: the
  `token` query parameter is taken as the user id, unchecked;
- every message is published as JSON on a per-channel Redis topic; each process
  subscribes to a channel's topic when its first local socket joins, on one
  shared redis-py `PubSub` (sharing it between the reader and concurrent
  subscribes is unsafe, but that is what a first version does);
- each received message is decoded, and then encoded again for every local
  recipient by `send_json`, awaiting each socket in turn; no batching, no queues.

It speaks the subset of our chat protocol the load generator needs:
`GET /api/v1/chat/{channel_id}?token=<user id>` upgrades; the client sends
`{"type": "text", "content": ...}`; every socket in the channel, the sender's
included, gets `{"type": "message", "id": <per-process counter>, ...}`.

Run: `python -m loadtests.baselines.naive --port 4100 --redis-url redis://127.0.0.1:6379/0`
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
from collections import defaultdict
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from aiohttp import WSMsgType, web
from redis.asyncio.client import PubSub

from loadtests.baselines import arguments, serve

_TOPIC_PREFIX = "naive:ch:"
_HELLO = b"naive:hello"

CHANNELS = web.AppKey("CHANNELS", defaultdict[int, set[web.WebSocketResponse]])
REDIS = web.AppKey("REDIS", aioredis.Redis)
PUBSUB = web.AppKey("PUBSUB", PubSub)
LISTENER = web.AppKey("LISTENER", asyncio.Task[None])
_ids = itertools.count(1)


async def chat(request: web.Request) -> web.WebSocketResponse:
    channel_id = int(request.match_info["channel_id"])
    token = request.query.get("token", "0")
    user_id = int(token) if token.isdigit() else 0
    ws = web.WebSocketResponse()
    sockets = request.app[CHANNELS][channel_id]
    first = not sockets
    sockets.add(ws)
    topic = f"{_TOPIC_PREFIX}{channel_id}"
    try:
        if first:
            await request.app[PUBSUB].subscribe(topic)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            message = {
                "type": "message",
                "id": next(_ids),
                "created_at": dt.datetime.now(dt.UTC).isoformat(),
                "user_id": user_id,
                "channel_id": channel_id,
                "body": {"type": data.get("type", "text"), "content": data["content"]},
            }
            await request.app[REDIS].publish(topic, json.dumps(message))
    finally:
        sockets.discard(ws)
        if not sockets:
            await request.app[PUBSUB].unsubscribe(topic)
    return ws


async def listen(app: web.Application, pubsub: PubSub) -> None:
    async for item in pubsub.listen():
        if item["type"] != "message" or item["channel"] == _HELLO:
            continue
        channel_id = int(item["channel"].rsplit(b":", 1)[1])
        message = json.loads(item["data"])
        for ws in list(app[CHANNELS].get(channel_id, ())):
            # A socket that closed meanwhile: skip it, like most first versions do.
            with contextlib.suppress(ConnectionError):
                await ws.send_json(message)


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def create_app(redis_url: str) -> web.Application:
    app = web.Application()
    channels: defaultdict[int, set[web.WebSocketResponse]] = defaultdict(set)
    app[CHANNELS] = channels

    async def redis_and_listener(app: web.Application) -> AsyncIterator[None]:
        app[REDIS] = aioredis.Redis.from_url(redis_url)
        pubsub = app[PUBSUB] = app[REDIS].pubsub()
        # redis-py's listen() ends at once without a subscription, so hold one from the start.
        await pubsub.subscribe(_HELLO)
        app[LISTENER] = asyncio.create_task(listen(app, pubsub))
        yield
        app[LISTENER].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await app[LISTENER]
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await app[REDIS].aclose()

    app.cleanup_ctx.append(redis_and_listener)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/v1/chat/{channel_id}", chat)
    return app


def main() -> None:
    args = arguments(__doc__.splitlines()[0], default_port=4100).parse_args()
    serve(create_app(args.redis_url), args)


if __name__ == "__main__":
    main()
