"""The servers a benchmark runs against, each a separate OS process that this module owns.

`BenchStack` starts PostgreSQL and Valkey from the embedded wheels in a
temporary folder (or uses `--database-url` / `--redis-url`), migrates, and
starts and stops the processes of one target: our gateways and worker with the
environment `chat-group up` gives them (rate limits off, any origin), or one
of the baselines. Every child is tracked and stopped when the stack exits,
whatever happened: SIGTERM, a grace period, then SIGKILL, by PID.

CPU seconds and RSS come from /proc (psutil is not a dependency).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from shared.db.migrate import apply_migrations
from shared.local_servers import (
    ServerProcess,
    answers_ok,
    ensure_database,
    free_port,
    start_postgres,
    start_valkey,
)

_DATABASE = "chat"
_HEALTHY_DEADLINE_SECONDS = 30.0
# A bounded start-up wait: nothing else signals that a port answers.
_HEALTH_PROBE_INTERVAL_SECONDS = 0.05
_STOP_TIMEOUT_SECONDS = 10.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far; 0.0 if it has gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # Fields after the command name, which is in parentheses and may hold spaces.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def rss_kb(pid: int) -> int:
    """Resident set size of a process in KiB; 0 if it has gone."""
    try:
        text = Path(f"/proc/{pid}/statm").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(text.split()[1]) * _PAGE_KB


@dataclass
class Service:
    """One server process of a target."""

    name: str
    process: subprocess.Popen[bytes]
    port: int | None
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=_STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


@dataclass
class BenchStack:
    """Valkey + PostgreSQL for a benchmark run, and the services started on them."""

    database_url: str | None = None
    redis_url: str | None = None
    folder: Path = field(init=False)
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    _servers: list[ServerProcess] = field(default_factory=list)
    _services: list[Service] = field(default_factory=list)
    redis_pid: int | None = None

    def __enter__(self) -> BenchStack:
        self.folder = Path(tempfile.mkdtemp(prefix="chat-bench-"))
        # Under root PostgreSQL runs as `nobody`, who must be able to enter the folder.
        self.folder.chmod(0o755)
        try:
            self._start_backends()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop_services()
        for server in reversed(self._servers):
            server.stop()
        self._servers.clear()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _start_backends(self) -> None:
        if self.redis_url is None:
            valkey = start_valkey(self.folder / "valkey", free_port())
            self._servers.append(valkey)
            self.redis_pid = valkey.pid
            self.redis_url = f"redis://127.0.0.1:{valkey.port}/0"
        admin_dsn: str | None = None
        if self.database_url is None:
            postgres = start_postgres(self.folder / "postgres", free_port())
            self._servers.append(postgres)
            base = f"postgresql://postgres@127.0.0.1:{postgres.port}"
            admin_dsn = f"{base}/postgres?sslmode=disable"
            self.database_url = f"{base}/{_DATABASE}?sslmode=disable"
        asyncio.run(self._prepare_database(admin_dsn))

    async def _prepare_database(self, admin_dsn: str | None) -> None:
        assert self.database_url is not None
        if admin_dsn is not None:
            await ensure_database(admin_dsn, _DATABASE)
        await apply_migrations(self.database_url)

    # --- services -----------------------------------------------------------------

    def our_env(self, key_prefix: str) -> dict[str, str]:
        """What `chat-group up` passes to its services, with the limits a benchmark needs off."""
        assert self.database_url is not None
        assert self.redis_url is not None
        env = os.environ.copy()
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            JWT_SECRET=self.jwt_secret,
            REDIS_KEY_PREFIX=key_prefix,
            RATE_LIMIT_REQUESTS="0",
            LOGIN_MAX_FAILURES="0",
            LOGIN_MAX_FAILURES_PER_IP="0",
            WS_MESSAGE_RATE="0",
            ALLOWED_ORIGINS="*",
            LOG_LEVEL="WARNING",
            LOG_JSON="false",
        )
        return env

    def start_gateways(
        self, count: int, key_prefix: str, settings: dict[str, str] | None = None
    ) -> list[Service]:
        """`settings`: environment variables to set on top of `our_env`."""
        env = {**self.our_env(key_prefix), **(settings or {})}
        services = [
            self._spawn(
                f"gateway-{number}",
                ["-m", "gateway", "--host", "127.0.0.1", "--port", str(port)],
                env,
                port,
            )
            for number, port in enumerate(_free_ports(count), start=1)
        ]
        self._wait_healthy(services)
        return services

    def start_worker(self, key_prefix: str) -> Service:
        return self._spawn("persistence", ["-m", "persistence"], self.our_env(key_prefix), None)

    def start_baseline(self, module: str, count: int, extra: list[str]) -> list[Service]:
        """Start `count` processes of a baseline server module on ports of their own."""
        assert self.redis_url is not None
        env = os.environ.copy()
        services = [
            self._spawn(
                f"{module.rsplit('.', 1)[-1]}-{number}",
                ["-m", module, "--port", str(port), "--redis-url", self.redis_url, *extra],
                env,
                port,
            )
            for number, port in enumerate(_free_ports(count), start=1)
        ]
        self._wait_healthy(services)
        return services

    def _spawn(self, name: str, args: list[str], env: dict[str, str], port: int | None) -> Service:
        log_path = self.folder / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        service = Service(name, process, port, log_path)
        self._services.append(service)
        return service

    def _wait_healthy(self, services: list[Service]) -> None:
        deadline = time.monotonic() + _HEALTHY_DEADLINE_SECONDS
        waiting = [service for service in services if service.port is not None]
        while waiting:
            for service in waiting:
                if service.process.poll() is not None:
                    raise RuntimeError(
                        f"{service.name} exited with {service.process.returncode}:\n"
                        + service.log_tail()
                    )
            assert all(service.port is not None for service in waiting)
            waiting = [s for s in waiting if not answers_ok("127.0.0.1", s.port or 0, "/healthz")]
            if waiting and time.monotonic() > deadline:
                raise RuntimeError(f"{waiting[0].name} did not answer /healthz in time")
            if waiting:
                time.sleep(_HEALTH_PROBE_INTERVAL_SECONDS)

    def stop_services(self) -> None:
        """SIGTERM every service at once, then wait for each (SIGKILL after the grace period)."""
        for service in self._services:
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        for service in self._services:
            service.stop()
        self._services.clear()

    def flush_redis(self) -> None:
        """Drop every key, so a target starts on an empty Redis (only on our own Valkey)."""
        if self.redis_pid is None or self.redis_url is None:
            return
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            client.flushall()
        finally:
            client.close()


def _free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)
