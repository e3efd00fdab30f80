"""What presence costs: 1,000 users in 100 channels on two gateways, with churn.

One bounded run, three phases, on servers of its own (`BenchStack`):

1. connect: every user opens one chat socket (users alternate between the two
   gateways); Redis memory before and after, and the presence keys'
   `MEMORY USAGE`;
2. idle: `--idle` seconds with nothing but the refresh loops;
3. churn: `--churn` seconds in which `--churners` clients each close a random
   user's socket and open it again, at most `--max-churn` times in all.

For each phase: Valkey CPU (`used_cpu_sys + used_cpu_user`), the presence
scripts' share of it (`INFO commandstats`, EVALSHA: no message is sent, so
every script call is a presence call), and the gateways' CPU. The gateways'
figure includes admitting each socket (token, one PostgreSQL query,
subscription), which is not presence. Prints one JSON object.

    .venv/bin/python -m loadtests.presence_cost

On a Valkey of its own (the default) the Valkey figures are presence's alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import time
from typing import Any

import aiohttp
import redis.asyncio as redis

from loadtests.population import Member, Population
from loadtests.stack import BenchStack, Service, cpu_seconds

_CONNECT_CONCURRENCY = 50
_SETTLE_SECONDS = 10.0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=100)
    parser.add_argument("--members", type=int, default=10, help="users per channel")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of the idle phase")
    parser.add_argument("--churn", type=float, default=30.0, help="seconds of the churn phase")
    parser.add_argument("--churners", type=int, default=20)
    parser.add_argument("--max-churn", type=int, default=20_000)
    parser.add_argument("--refresh", type=float, default=10.0, help="PRESENCE_REFRESH_SECONDS")
    parser.add_argument("--database-url", help="an existing PostgreSQL (default: start one)")
    parser.add_argument("--redis-url", help="an existing Valkey (default: start one)")
    args = parser.parse_args(argv)
    if not (1 <= args.channels <= 1000 and 1 <= args.members <= 100):
        parser.error("at most 1000 channels of 100 members")
    if not (0 < args.idle <= 300 and 0 < args.churn <= 300):
        parser.error("phases last 0-300 s")
    return args


class _Probe:
    """CPU of Valkey (its own INFO), of its presence scripts, and of the gateways."""

    def __init__(self, client: redis.Redis, gateways: list[Service]) -> None:
        self._client = client
        self._gateways = gateways

    async def sample(self) -> dict[str, float]:
        cpu = await self._client.info("cpu")
        stats = await self._client.info("commandstats")
        evalsha = stats.get("cmdstat_evalsha", {"calls": 0, "usec": 0})
        return {
            "valkey_cpu_s": float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
            "script_calls": float(evalsha["calls"]),
            "script_cpu_s": float(evalsha["usec"]) / 1e6,
            "gateway_cpu_s": sum(cpu_seconds(gateway.pid) for gateway in self._gateways),
        }

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {key: round(after[key] - before[key], 4) for key in before}


async def _wait_all_online(client: redis.Redis, prefix: str, users: int) -> None:
    """Until every socket's presence entry is in: a socket's add follows its upgrade."""
    async with asyncio.timeout(_SETTLE_SECONDS):
        while True:
            keys = [key async for key in client.scan_iter(f"{prefix}:*:presence:users")]
            if sum([await client.hlen(key) for key in keys]) >= users:
                return
            await asyncio.sleep(0.05)  # no event says that the last add ran


async def _presence_bytes(client: redis.Redis, prefix: str) -> tuple[int, int]:
    keys = [key async for key in client.scan_iter(f"{prefix}:*presence*", count=1000)]
    total = 0
    for key in keys:
        total += int(await client.memory_usage(key) or 0)
    return len(keys), total


async def _run(
    args: argparse.Namespace,
    stack: BenchStack,
    gateways: list[Service],
    sockets_of: list[tuple[int, Member]],
    prefix: str,
) -> dict[str, Any]:
    assert stack.redis_url is not None
    client = redis.Redis.from_url(stack.redis_url)
    probe = _Probe(client, gateways)
    urls = [f"ws://127.0.0.1:{gateway.port}/api/v1/chat" for gateway in gateways]
    open_sockets: dict[int, aiohttp.ClientWebSocketResponse] = {}
    limit = asyncio.Semaphore(_CONNECT_CONCURRENCY)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def open_one(index: int) -> None:
            channel_id, member = sockets_of[index]
            url = f"{urls[index % len(urls)]}/{channel_id}?token={member.token}"
            async with limit:
                open_sockets[index] = await session.ws_connect(url, heartbeat=None)

        async def close_one(index: int) -> None:
            await open_sockets.pop(index).close()

        memory_before = int((await client.info("memory"))["used_memory"])
        before = await probe.sample()
        started = time.monotonic()
        await asyncio.gather(*(open_one(index) for index in range(len(sockets_of))))
        await _wait_all_online(client, prefix, len(sockets_of))
        connect_seconds = time.monotonic() - started
        connected = await probe.sample()
        memory_after = int((await client.info("memory"))["used_memory"])
        keys, key_bytes = await _presence_bytes(client, prefix)

        await asyncio.sleep(args.idle)  # the phase is a span of time
        idle = await probe.sample()

        churned = 0
        deadline = time.monotonic() + args.churn

        churners = min(args.churners, len(sockets_of))

        async def churner(number: int) -> None:
            # Each churner reconnects sockets of its own, so no two touch one socket.
            nonlocal churned
            rng = random.Random(number)
            mine = list(range(number, len(sockets_of), churners))
            while time.monotonic() < deadline and churned < args.max_churn:
                index = rng.choice(mine)
                churned += 1
                await close_one(index)
                await open_one(index)

        await asyncio.gather(*(churner(number) for number in range(churners)))
        churn_seconds = args.churn
        churn = await probe.sample()
        online = await _online_count(session, gateways[0], sockets_of)
        for index in list(open_sockets):
            await close_one(index)
    await client.aclose()
    return {
        "users": len(sockets_of),
        "channels": args.channels,
        "gateways": len(gateways),
        "presence_refresh_seconds": args.refresh,
        "connect": {
            "seconds": round(connect_seconds, 2),
            **_Probe.delta(before, connected),
            "used_memory_delta_bytes": memory_after - memory_before,
            "presence_keys": keys,
            "presence_key_bytes": key_bytes,
        },
        "idle": {"seconds": args.idle, **_Probe.delta(connected, idle)},
        "churn": {
            "seconds": churn_seconds,
            "reconnects": churned,
            **_Probe.delta(idle, churn),
        },
        "online_count_after_churn_in_first_channel": online,
    }


async def _online_count(
    session: aiohttp.ClientSession, gateway: Service, sockets_of: list[tuple[int, Member]]
) -> int:
    channel_id, member = sockets_of[0]
    async with session.get(
        f"http://127.0.0.1:{gateway.port}/api/v1/channels/{channel_id}/presence",
        headers={"Authorization": f"Bearer {member.token}"},
    ) as response:
        body = await response.json()
        count: int = body["data"]["online_count"]
        return count


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    prefix = "pc" + secrets.token_hex(4)
    with BenchStack(database_url=args.database_url, redis_url=args.redis_url) as stack:
        assert stack.database_url is not None
        channels = Population(stack.database_url, stack.jwt_secret).channels(
            args.channels, args.members
        )
        sockets_of = [(c.channel_id, member) for c in channels for member in c.members]
        presence = {
            "PRESENCE_REFRESH_SECONDS": str(args.refresh),
            "PRESENCE_TTL_SECONDS": str(3 * args.refresh),
        }
        gateways = stack.start_gateways(2, prefix, presence)
        result = asyncio.run(_run(args, stack, gateways, sockets_of, prefix))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
