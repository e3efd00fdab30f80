"""The `chat-group` command: migrations, one service, the whole local stack, imports.

`migrate` applies the schema. `gateway` and `persistence` exec the service's
own `__main__` (shared must not import them). `up` runs everything on one
machine: PostgreSQL and Valkey from the embedded wheels (unless DATABASE_URL /
REDIS_URL point elsewhere), migrations, the persistence worker and N gateways
sharing one port, and stops them in order on Ctrl-C. `import-go` and
`reset-password` live in `shared.go_import.command`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import asyncpg

from shared.db.migrate import MigrationError, apply_migrations
from shared.go_import import command as go_import_command
from shared.local_servers import (
    ServerProcess,
    ServerStartError,
    answers_ok,
    ensure_database,
    ensure_port_free,
    start_postgres,
    start_valkey,
)
from shared.settings import Settings, load_settings

_LOCAL_DATABASE = "chat"
# Gateways import, connect to PostgreSQL and Redis, then bind; a few seconds
# normally. Past 30 s something is wrong and the user should see it.
_HEALTHY_DEADLINE_SECONDS = 30.0
_HEALTH_PROBE_INTERVAL_SECONDS = 0.1
_HEALTH_PROBE_TIMEOUT_SECONDS = 1.0
_SERVER_STOP_TIMEOUT_SECONDS = 30.0


class _ChildExitedError(Exception):
    """A process of the local stack exited while it should be running."""


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes]


@dataclass
class _Stack:
    """What `up` started, in start order, so it can be stopped in reverse."""

    servers: list[ServerProcess] = field(default_factory=list)
    services: list[_Child] = field(default_factory=list)

    def everything(self) -> list[_Child]:
        servers = [_Child(server.name, server.process) for server in self.servers]
        return [*self.services, *servers]

    def raise_if_any_exited(self) -> None:
        for child in self.everything():
            code = child.process.poll()
            if code is not None:
                raise _ChildExitedError(_exit_report(child, code))


# Failures `up` reports in one line before it stops what it started.
_STACK_ERRORS = (
    _ChildExitedError,
    ServerStartError,
    MigrationError,
    OSError,
    asyncpg.PostgresError,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    args = _parser().parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.command
    return command(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chat-group", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    commands.add_parser("migrate", help="apply pending database migrations").set_defaults(
        command=_migrate
    )
    gateway = commands.add_parser("gateway", help="run one gateway (HTTP + WebSocket)")
    gateway.add_argument("--host", help="interface to bind; default HOST from settings")
    gateway.add_argument("--port", type=int, help="TCP port; default PORT from settings")
    gateway.add_argument(
        "--reuse-port", action="store_true", help="bind with SO_REUSEPORT to share the port"
    )
    gateway.set_defaults(command=_gateway)
    commands.add_parser("persistence", help="run one persistence worker").set_defaults(
        command=_persistence
    )
    commands.add_parser(
        "up", help="run the whole stack locally (PostgreSQL, Valkey, worker, gateways)"
    ).set_defaults(command=_up)
    go_import_command.register(commands)
    return parser


def _migrate(_args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        applied = asyncio.run(apply_migrations(settings.postgres_dsn()))
    except (MigrationError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"migrate failed: {exc}", file=sys.stderr)
        return 1
    _print_applied(applied)
    return 0


def _print_applied(applied: list[str]) -> None:
    if applied:
        print("applied migrations: " + ", ".join(applied))
    else:
        print("database schema is up to date; nothing to apply")


def _gateway(args: argparse.Namespace) -> NoReturn:
    extra = [] if args.port is None else ["--port", str(args.port)]
    if args.host is not None:
        extra += ["--host", args.host]
    if args.reuse_port:
        extra.append("--reuse-port")
    _exec_module("gateway", extra)


def _persistence(_args: argparse.Namespace) -> NoReturn:
    _exec_module("persistence", [])


def _exec_module(module: str, args: list[str]) -> NoReturn:
    # Replacing this process keeps one PID for supervisors and signals.
    # The arguments are our own fixed module name and parsed options, never a shell string.
    os.execv(sys.executable, [sys.executable, "-m", module, *args])  # noqa: S606


def _up(_args: argparse.Namespace) -> int:
    # SIGTERM unwinds like Ctrl-C, through the `finally` that stops everything.
    # SIGINT is set too: a shell starting us in the background ignores it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    settings, secret = _settings_for_up()
    data_dir = Path(settings.local_data_dir).resolve()
    stack = _Stack()
    try:
        settings = _start_backends(settings, secret, data_dir, stack)
        env_file = data_dir / "local.env"
        _start_services(settings, secret, stack, env_file)
        _wait_healthy(settings, stack)
        _print_banner(settings, data_dir, stack, env_file)
        _supervise(stack, env_file)
    except KeyboardInterrupt:
        print("\nchat-group: stopping", file=sys.stderr)
        return 0
    except _STACK_ERRORS as exc:
        print(f"chat-group: {exc}; stopping", file=sys.stderr)
        return 1
    finally:
        # Stopping is bounded by timeouts; a second Ctrl-C must not abandon
        # half-stopped servers.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_stack(stack, settings.shutdown_timeout_seconds)


def _settings_for_up() -> tuple[Settings, str]:
    """Settings plus the JWT secret: from the environment, else a stored local one."""
    # The entry point may look at the environment to decide what to start;
    # everything else still goes through Settings.
    if "JWT_SECRET" in os.environ:
        settings = load_settings(require_jwt_secret=True)
        return settings, settings.signing_key()
    # LOCAL_DATA_DIR is itself a setting, so settings load once with a fresh
    # candidate secret, which is kept only if no secret was stored before.
    candidate = secrets.token_urlsafe(48)
    data_dir = Path(load_settings(jwt_secret=candidate).local_data_dir)
    secret = _stored_secret(data_dir / "jwt_secret", candidate)
    return load_settings(jwt_secret=secret), secret


def _stored_secret(path: Path, candidate: str) -> str:
    """Read the secret at `path`, or store `candidate` there (mode 0600) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two `up`s racing on a fresh folder agree on the first secret written.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as file:
        file.write(candidate + "\n")
    return candidate


def _start_backends(settings: Settings, secret: str, data_dir: Path, stack: _Stack) -> Settings:
    """Start local PostgreSQL/Valkey unless configured elsewhere; migrate; return final settings."""
    overrides: dict[str, object] = {"jwt_secret": secret}
    admin_dsn: str | None = None
    if "DATABASE_URL" not in os.environ:
        postgres = start_postgres(data_dir / "postgres", settings.local_postgres_port)
        stack.servers.append(postgres)
        base = f"postgresql://postgres@127.0.0.1:{postgres.port}"
        admin_dsn = f"{base}/postgres?sslmode=disable"
        overrides["database_url"] = f"{base}/{_LOCAL_DATABASE}?sslmode=disable"
    if "REDIS_URL" not in os.environ:
        valkey = start_valkey(data_dir / "valkey", settings.local_redis_port)
        stack.servers.append(valkey)
        overrides["redis_url"] = f"redis://127.0.0.1:{valkey.port}/0"
    settings = load_settings(require_jwt_secret=True, **overrides)
    applied = asyncio.run(_prepare_database(settings.postgres_dsn(), admin_dsn))
    _print_applied(applied)
    return settings


async def _prepare_database(dsn: str, admin_dsn: str | None) -> list[str]:
    if admin_dsn is not None:
        await ensure_database(admin_dsn, _LOCAL_DATABASE)
    return await apply_migrations(dsn)


def _write_env_file(path: Path, connection: dict[str, str]) -> None:
    """What a process needs to join this local stack by hand (mode 0600: it holds the secret)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.writelines(f"{name}={shlex.quote(value)}\n" for name, value in connection.items())


def _start_services(settings: Settings, secret: str, stack: _Stack, env_file: Path) -> None:
    ensure_port_free("gateway", settings.port)
    connection = {
        "DATABASE_URL": settings.postgres_dsn(),
        "REDIS_URL": settings.redis_url.get_secret_value(),
        "JWT_SECRET": secret,
    }
    _write_env_file(env_file, connection)
    env = service_env(os.environ, settings, connection)
    stack.services.append(_Child("persistence", _spawn_service(["persistence"], env)))
    for number in range(1, settings.local_gateways + 1):
        process = _spawn_service(["gateway", "--reuse-port"], env)
        stack.services.append(_Child(f"gateway-{number}", process))


# The HTTP rate limit of `up` unless RATE_LIMIT_REQUESTS is set (`service_env`).
LOCAL_RATE_LIMIT_REQUESTS = 1000


def service_env(
    environ: Mapping[str, str], settings: Settings, connection: dict[str, str]
) -> dict[str, str]:
    """The environment of the worker and gateways `up` starts: the caller's, the local
    servers' addresses and secret, and local defaults where the caller set none."""
    env = {**environ, **connection}
    if "ALLOWED_ORIGINS" not in environ:
        env["ALLOWED_ORIGINS"] = _with_app_origins(settings)
    if "RATE_LIMIT_REQUESTS" not in environ:
        # Every browser on this machine comes from 127.0.0.1: one per-IP budget
        # of the Go server's 10 requests per 30 s would be shared by all of them.
        env["RATE_LIMIT_REQUESTS"] = str(LOCAL_RATE_LIMIT_REQUESTS)
    return env


def _with_app_origins(settings: Settings) -> str:
    """ALLOWED_ORIGINS plus the web app's own origin (the page at /app/ opens its socket
    from there, and sockets are refused from origins not listed)."""
    host = _probe_host(settings)
    local = [f"http://{host}:{settings.port}", f"http://localhost:{settings.port}"]
    return ",".join(dict.fromkeys([*settings.allowed_origins, *local]))


def _spawn_service(module_args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Output goes to this terminal. A process group of its own keeps the
    # terminal's Ctrl-C away, so only we decide the order things stop in.
    return subprocess.Popen(
        [sys.executable, "-m", *module_args], env=env, stdin=subprocess.DEVNULL, process_group=0
    )


def _probe_host(settings: Settings) -> str:
    return "127.0.0.1" if settings.host in ("", "0.0.0.0", "::") else settings.host  # noqa: S104


def _wait_healthy(settings: Settings, stack: _Stack) -> None:
    """Block until GET /healthz answers 200; raise if a process dies or 30 s pass."""
    deadline = time.monotonic() + _HEALTHY_DEADLINE_SECONDS
    while True:
        stack.raise_if_any_exited()
        if answers_ok(
            _probe_host(settings), settings.port, "/healthz", _HEALTH_PROBE_TIMEOUT_SECONDS
        ):
            return
        if time.monotonic() > deadline:
            raise _ChildExitedError(
                f"GET /healthz on port {settings.port} did not answer 200 within"
                f" {_HEALTHY_DEADLINE_SECONDS:.0f} s"
            )
        # A bounded start-up wait: there is no event to wait on for "port answers".
        time.sleep(_HEALTH_PROBE_INTERVAL_SECONDS)


def _print_banner(settings: Settings, data_dir: Path, stack: _Stack, env_file: Path) -> None:
    host = _probe_host(settings)
    pids = ", ".join(f"{child.name} {child.process.pid}" for child in stack.everything())
    server_logs = "; ".join(f"{server.name}: {server.log_path}" for server in stack.servers)
    lines = [
        "",
        "chat-group is up",
        f"  Web app    http://{host}:{settings.port}/app/",
        f"  HTTP       http://{host}:{settings.port}/",
        f"  WebSocket  ws://{host}:{settings.port}/api/v1/chat/<channel_id>?token=<jwt>",
        f"  PIDs       {pids}",
        f"  data       {data_dir} (kept between runs)",
        f"  env        {env_file} (DATABASE_URL, REDIS_URL, JWT_SECRET for running pieces by hand)",
        "  logs       gateways and worker: this terminal"
        + (f"; {server_logs}" if server_logs else ""),
        "Ctrl-C to stop.",
        "",
    ]
    print("\n".join(lines), flush=True)


def _supervise(stack: _Stack, env_file: Path) -> NoReturn:
    """Block until a server exits (raise _ChildExitedError) or a signal raises KeyboardInterrupt.

    A gateway or the worker exiting is reported and the rest keeps running: it
    is what a replica dying looks like in production, and the way to try
    recovery by hand (stop the worker, send, start it again).
    """
    children = {child.process.pid: child for child in stack.everything()}
    services = {child.process.pid for child in stack.services}
    while True:
        # Waits on the kernel, not a clock; our signal handlers interrupt it.
        pid, status = os.wait()
        child = children.get(pid)
        if child is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        # os.wait reaped it, so tell Popen, which would otherwise never learn the code.
        child.process.returncode = code
        if pid not in services:
            raise _ChildExitedError(_exit_report(child, code))
        command = "persistence" if child.name == "persistence" else "gateway --port <other port>"
        print(
            f"chat-group: {_exit_report(child, code)}; the rest keeps running. To start one by"
            f" hand: set -a; . {env_file}; set +a; chat-group {command}",
            file=sys.stderr,
            flush=True,
        )


def _exit_report(child: _Child, code: int) -> str:
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    return f"{child.name} (pid {child.process.pid}) {how}"


def _stop_stack(stack: _Stack, timeout: float) -> None:
    """Stop services first (they drain into the backends), then Valkey, then PostgreSQL."""
    _stop_services(stack.services, timeout)
    for server in reversed(stack.servers):
        server.stop(timeout=_SERVER_STOP_TIMEOUT_SECONDS)


def _stop_services(services: list[_Child], timeout: float) -> None:
    """SIGTERM all at once, give them `timeout` s together to drain, then SIGKILL the rest."""
    for child in services:
        if child.process.poll() is None:
            child.process.terminate()
    deadline = time.monotonic() + timeout
    for child in services:
        try:
            child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"chat-group: {child.name} did not stop in {timeout} s; killing", file=sys.stderr)
            child.process.kill()
            child.process.wait()


if __name__ == "__main__":
    sys.exit(main())
