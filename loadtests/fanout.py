"""The fan-out benchmark: drive the real stack and the baselines, print side-by-side figures.

    python -m loadtests.fanout --scenario small-channels [--target ours|mux|naive|socketio|all]
                               [--runs 3] [--duration S] [--json]

`--target` also takes a comma-separated list: `--target ours,mux` measures
the per-channel socket and the multiplexed one (each user one socket
subscribed to `--channels-per-user` channels) on the same users.

Starts everything itself in a temporary folder: Valkey and PostgreSQL (from
the embedded wheels), then for each target its server processes (ours: two
gateways and a persistence worker; baselines: two processes each), and a load
generator in separate worker processes. Each run of each target gets fresh
server processes and fresh channels; targets alternate within a run so drift
on a shared machine hits them alike. Figures are medians over `--runs`, with
ratios of ours to each baseline. See loadtests/README.md for what each figure
means.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import secrets
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loadtests import measure
from loadtests.generator import GeneratorConfig, LoadGenerator, raise_open_files_limit
from loadtests.population import ChannelMembers, Member, Population
from loadtests.report import render_table, summarize
from loadtests.stack import BenchStack, Service, rss_kb
from loadtests.wsclient import SocketSpec

SCENARIOS = ("small-channels", "big-channel", "saturation", "idle", "persistence")
TARGETS = ("ours", "mux", "naive", "socketio")
# What `--target all` runs: ours and the baselines (add `mux` with a list).
_ALL = ("ours", "naive", "socketio")
_BASELINE_MODULES = {
    "naive": "loadtests.baselines.naive",
    "socketio": "loadtests.baselines.socketio_server",
}
# Sockets each process may hold: the open-files limit minus room for logs, Redis, PostgreSQL.
_FD_RESERVE = 512


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    config: GeneratorConfig

    @property
    def ours(self) -> bool:
        """Our stack, through either socket."""
        return self.name in ("ours", "mux")


@dataclass(frozen=True, slots=True)
class Shape:
    channels: int
    members: int
    senders_per_channel: int

    @property
    def connections(self) -> int:
        return self.channels * self.members


class BenchmarkError(RuntimeError):
    """A run could not be measured (sockets refused, a server died)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.fanout", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--scenario", choices=SCENARIOS, required=True)
    parser.add_argument(
        "--target",
        type=_target_names,
        default=("ours",),
        help=f"one of {', '.join(TARGETS)} or all, or a comma-separated list",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per target (median reported)")
    parser.add_argument("--duration", type=float, help="seconds of sending per (saturation) step")
    parser.add_argument("--rate", type=float, help="messages sent per second, all senders")
    parser.add_argument("--channels", type=int, help="channels (fan-out scenarios)")
    parser.add_argument("--members", type=int, help="members (sockets) per channel")
    parser.add_argument("--senders-per-channel", type=int, help="members of a channel that send")
    parser.add_argument("--connections", type=int, default=5000, help="idle: sockets to open")
    parser.add_argument(
        "--channels-per-user",
        type=int,
        default=20,
        help="with the mux target: channels each user is in (one multiplexed socket each;"
        " the per-channel target then opens one socket per channel for the same users)",
    )
    parser.add_argument("--messages", type=int, default=50_000, help="persistence: backlog size")
    parser.add_argument("--start-rate", type=float, default=1000, help="saturation: first rate")
    parser.add_argument("--step-factor", type=float, default=1.5, help="saturation: rate factor")
    parser.add_argument("--max-steps", type=int, default=8, help="saturation: steps at most")
    parser.add_argument("--p99-limit-ms", type=float, default=100.0, help="saturation: p99 bound")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--drain-timeout", type=float, default=10.0, help="wait for stragglers")
    parser.add_argument("--gateways", type=int, default=2, help="server processes per target")
    parser.add_argument("--gen-procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--database-url", help="use this PostgreSQL instead of starting one")
    parser.add_argument("--redis-url", help="use this Redis/Valkey instead of starting one")
    parser.add_argument(
        "--baseline-uvloop", action="store_true", help="run the baselines on uvloop too"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return parser


def _shape(args: argparse.Namespace) -> Shape:
    defaults = {
        "small-channels": Shape(100, 10, 2),
        "saturation": Shape(100, 10, 2),
        "big-channel": Shape(1, 1000, 20),
        "idle": Shape(0, 100, 0),
        "persistence": Shape(16, 1, 1),
    }[args.scenario]
    members = args.members or defaults.members
    channels = args.channels or defaults.channels
    if args.scenario == "idle":
        channels = args.channels or math.ceil(args.connections / members)
    senders = defaults.senders_per_channel
    if args.senders_per_channel is not None:
        senders = args.senders_per_channel
    return Shape(channels, members, min(senders, members))


def _target_names(text: str) -> tuple[str, ...]:
    names = _ALL if text == "all" else tuple(text.split(","))
    unknown = [name for name in names if name not in TARGETS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown target {','.join(unknown) or text!r}")
    return names


def _targets(names: tuple[str, ...]) -> list[Target]:
    configs = {
        "ours": GeneratorConfig("ws", check_seq=True, client_ids=True, nonce=""),
        "mux": GeneratorConfig("mux", check_seq=True, client_ids=True, nonce=""),
        "naive": GeneratorConfig("ws", check_seq=False, client_ids=False, nonce=""),
        "socketio": GeneratorConfig("sio", check_seq=False, client_ids=False, nonce=""),
    }
    return [Target(n, configs[n]) for n in names]


def _progress(text: str) -> None:
    print(f"[fanout {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, through the `finally`s that stop every process we started.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    open_files = raise_open_files_limit()
    targets = _targets(args.target)
    if args.scenario == "persistence" and any(t.name != "ours" for t in targets):
        _progress("persistence: the baselines store nothing; measuring ours only")
        targets = [t for t in targets if t.name == "ours"]
    shape = _shape(args)
    if args.scenario == "idle":
        cap = (open_files - _FD_RESERVE) * min(args.gen_procs, args.gateways)
        if shape.connections > cap:
            _progress(f"idle: `ulimit -n` is {open_files}; capping at {cap} sockets")
            shape = Shape(max(1, cap // shape.members), shape.members, 0)
    started = time.time()
    load_at_start = os.getloadavg()
    try:
        runs = _run_all(args, targets, shape)
    except KeyboardInterrupt:
        _progress("interrupted; every process this run started has been stopped")
        return 130
    summary = summarize(args.scenario, runs)
    summary.update(
        command=["python", "-m", "loadtests.fanout", *(argv if argv is not None else sys.argv[1:])],
        machine={
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
            "open_files_limit": open_files,
        },
        wall_seconds=round(time.time() - started, 1),
    )
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(render_table(summary))
    return 0


def _run_all(
    args: argparse.Namespace, targets: list[Target], shape: Shape
) -> dict[str, list[dict[str, Any]]]:
    """Every run of every target, alternating targets within a run."""
    runs: dict[str, list[dict[str, Any]]] = {target.name: [] for target in targets}
    with BenchStack(database_url=args.database_url, redis_url=args.redis_url) as stack:
        assert stack.database_url is not None
        population = Population(stack.database_url, stack.jwt_secret)
        # With the mux target every target of ours shares users in many channels each.
        users = None
        if any(target.name == "mux" for target in targets):
            users = max(shape.members, shape.connections // max(args.channels_per_user, 1))
        for run in range(1, args.runs + 1):
            for target in targets:
                _progress(f"run {run}/{args.runs}: {args.scenario} against {target.name}")
                result = _run_once(stack, population, target, shape, args, users)
                runs[target.name].append(result)
                _progress(f"run {run}/{args.runs}: {target.name}: {measure.headline(result)}")
    return runs


def _run_once(
    stack: BenchStack,
    population: Population,
    target: Target,
    shape: Shape,
    args: Any,
    users: int | None,
) -> dict[str, Any]:
    nonce = secrets.token_hex(4)
    config = GeneratorConfig(
        target.config.kind, target.config.check_seq, target.config.client_ids, nonce
    )
    key_prefix = f"bench{nonce}"
    worker: Service | None = None
    try:
        if target.ours:
            servers = stack.start_gateways(args.gateways, key_prefix)
            if args.scenario != "persistence":
                worker = stack.start_worker(key_prefix)
            channels = population.channels(shape.channels, shape.members, users=users)
        else:
            module = _BASELINE_MODULES[target.name]
            extra = ["--channel", f"socketio-{nonce}"] if target.name == "socketio" else []
            if args.baseline_uvloop:
                extra.append("--uvloop")
            servers = stack.start_baseline(module, args.gateways, extra)
            channels = _synthetic_channels(shape)
        if target.name == "mux":
            sockets = _mux_socket_specs(channels, servers, shape.senders_per_channel)
        else:
            sockets = _socket_specs(target, channels, servers, shape.senders_per_channel)
        probe = measure.CpuProbe(servers, stack.redis_pid, worker)
        rss_before = sum(rss_kb(server.pid) for server in servers)
        with LoadGenerator(config, sockets, args.gen_procs) as generator:
            probe.generator_pids = generator.pids
            opened = generator.connect()
            if opened["failed"] and args.scenario != "idle":
                raise BenchmarkError(f"{opened['failed']} sockets failed: {opened}")
            rss_connected = sum(rss_kb(server.pid) for server in servers)
            result: dict[str, Any] = {
                "connections": opened["connected"],
                "failed_connections": opened["failed"],
                "connect_seconds": round(opened["seconds"], 2),
                "channels": shape.channels,
                "members_per_channel": shape.members,
                "senders": sum(len(s.lanes) for s in sockets),
                "gateway_rss_before_kb": rss_before,
                "gateway_rss_connected_kb": rss_connected,
                "rss_per_connection_kb": round(
                    (rss_connected - rss_before) / max(opened["connected"], 1), 2
                ),
            }
            result.update(_scenario(args, generator, probe, stack, key_prefix, channels))
            result["gateway_rss_end_kb"] = sum(rss_kb(server.pid) for server in servers)
            return result
    finally:
        stack.stop_services()
        stack.flush_redis()


def _scenario(
    args: Any,
    generator: LoadGenerator,
    probe: measure.CpuProbe,
    stack: BenchStack,
    key_prefix: str,
    channels: list[ChannelMembers],
) -> dict[str, Any]:
    if args.scenario == "idle":
        return {}
    if args.scenario == "persistence":
        return measure.persistence(args, generator, probe, stack, key_prefix)
    rate = args.rate or (20.0 if args.scenario == "big-channel" else 2000.0)
    if args.warmup > 0:
        start_rate = args.start_rate if args.scenario == "saturation" else rate
        generator.step(1, min(start_rate, 1000.0), args.warmup, min(args.drain_timeout, 5.0))
    if args.scenario == "saturation":
        return measure.saturation(args, generator, probe)
    duration = args.duration or 10.0
    return measure.fanout_step(generator, probe, 2, rate, duration, args.drain_timeout)


def _synthetic_channels(shape: Shape) -> list[ChannelMembers]:
    """Channels for a baseline: ids 1..N, and the user id stands in for the token."""
    return [
        ChannelMembers(
            channel + 1,
            [Member(member, str(member)) for member in range(1, shape.members + 1)],
        )
        for channel in range(shape.channels)
    ]


def _socket_specs(
    target: Target, channels: list[ChannelMembers], servers: list[Service], senders: int
) -> list[SocketSpec]:
    """One socket per member; a channel's members alternate between the server processes."""
    specs: list[SocketSpec] = []
    sender = 0
    for index, channel in enumerate(channels):
        for number, member in enumerate(channel.members):
            server = servers[(index + number) % len(servers)]
            assert server.port is not None
            if target.config.kind == "sio":
                path = f"/socket.io/?EIO=4&transport=websocket&token={member.token}"
            else:
                path = f"/api/v1/chat/{channel.channel_id}?token={member.token}"
            sends = number < senders
            specs.append(
                SocketSpec(
                    "127.0.0.1",
                    server.port,
                    path,
                    index,
                    channel.channel_id,
                    sender if sends else -1,
                )
            )
            sender += sends
    return specs


def _mux_socket_specs(
    channels: list[ChannelMembers], servers: list[Service], senders: int
) -> list[SocketSpec]:
    """One multiplexed socket per user, subscribed to each of the user's channels; the
    users alternate between the server processes, so every channel spans both.

    A channel's senders are the members that send into the fewest channels so far,
    so the sending spreads over the users as evenly as the shape allows (4 channels
    each for 2 senders per channel and 20 channels per user). Taking each channel's
    first members instead would make a few users the senders of every channel their
    block of members shares, each socket sending tens of times the rate of the rest.
    """
    by_user: dict[int, tuple[Member, list[tuple[int, int]], list[tuple[int, int, int]]]] = {}
    sender = 0
    for index, channel in enumerate(channels):
        for member in channel.members:
            by_user.setdefault(member.user_id, (member, [], []))[1].append(
                (index, channel.channel_id)
            )
        chosen = sorted(channel.members, key=lambda member: len(by_user[member.user_id][2]))
        for member in chosen[:senders]:
            by_user[member.user_id][2].append((index, channel.channel_id, sender))
            sender += 1
    specs: list[SocketSpec] = []
    for position, (member, subscriptions, sends) in enumerate(by_user.values()):
        server = servers[position % len(servers)]
        assert server.port is not None
        path = f"/api/v1/ws?token={member.token}"
        specs.append(
            SocketSpec(
                "127.0.0.1",
                server.port,
                path,
                -1,
                0,
                subscriptions=tuple(subscriptions),
                sends=tuple(sends),
            )
        )
    return specs


if __name__ == "__main__":
    sys.exit(main())
