"""The service as separate OS processes, for tests that break them from outside.

PostgreSQL and Valkey (AOF on, as in production) are real servers in a
temporary folder; gateways and the persistence worker are `python -m gateway`
and `python -m persistence` subprocesses configured through the environment,
exactly as `chat-group up` and the container run them. A fault is a signal to
one of those PIDs (SIGKILL, SIGSTOP/SIGCONT, SIGTERM) or a server stop and
restart on the same port and data.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from shared.db.migrate import apply_migrations
from shared.local_servers import (
    ServerProcess,
    answers_ok,
    ensure_database,
    free_port,
    start_postgres,
    start_valkey,
)

JWT_SECRET = "fault-secret-" + "0123456789abcdef" * 3
ORIGIN = "http://allowed.test"
_START_DEADLINE_SECONDS = 30.0
_STOP_DEADLINE_SECONDS = 20.0


@dataclass
class Servers:
    """One PostgreSQL and one Valkey, restartable on the same port and data."""

    root: Path
    postgres: ServerProcess
    valkey: ServerProcess

    @classmethod
    def start(cls, root: Path) -> Servers:
        return cls(
            root,
            start_postgres(root / "postgres", free_port(), fast=True),
            start_valkey(root / "valkey", free_port(), appendonly=True),
        )

    def restart_postgres(self) -> None:
        self.postgres = start_postgres(self.root / "postgres", self.postgres.port, fast=True)

    def restart_valkey(self) -> None:
        self.valkey = start_valkey(self.root / "valkey", self.valkey.port, appendonly=True)

    def ensure_running(self) -> None:
        """Undo whatever a test left stopped or paused, for the next test."""
        os.kill(self.valkey.pid, signal.SIGCONT)
        if self.postgres.process.poll() is not None:
            self.restart_postgres()
        if self.valkey.process.poll() is not None:
            self.restart_valkey()

    def stop(self) -> None:
        os.kill(self.valkey.pid, signal.SIGCONT)
        for server in (self.valkey, self.postgres):
            if server.process.poll() is None:
                server.stop()


@dataclass
class Service:
    """A gateway or worker process the test started, with its log for failures."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = _STOP_DEADLINE_SECONDS) -> int:
        return self.process.wait(timeout)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Stack:
    """One test's deployment: its own database and Redis prefix on the shared servers."""

    servers: Servers
    folder: Path
    env: dict[str, str]
    services: list[Service] = field(default_factory=list)

    @classmethod
    async def create(cls, servers: Servers, folder: Path, **settings: str) -> Stack:
        database = "chat_" + uuid.uuid4().hex[:8]
        admin = _dsn(servers.postgres.port, "postgres")
        await ensure_database(admin, database)
        dsn = _dsn(servers.postgres.port, database)
        await apply_migrations(dsn)
        env = {
            **os.environ,
            "DATABASE_URL": dsn,
            "REDIS_URL": f"redis://127.0.0.1:{servers.valkey.port}/0",
            "REDIS_KEY_PREFIX": "f" + uuid.uuid4().hex[:8],
            "JWT_SECRET": JWT_SECRET,
            "ALLOWED_ORIGINS": ORIGIN,
            "RATE_LIMIT_REQUESTS": "0",
            "WS_MESSAGE_RATE": "0",
            "REDIS_TIMEOUT_SECONDS": "1",
            "WORKER_BLOCK_MS": "200",
            "WORKER_CLAIM_IDLE_MS": "1000",
            "SHUTDOWN_TIMEOUT_SECONDS": "5",
            "LOG_LEVEL": "INFO",
            **settings,
        }
        return cls(servers, folder, env)

    @property
    def dsn(self) -> str:
        return self.env["DATABASE_URL"]

    async def start_gateway(self) -> Service:
        port = free_port()
        service = self._spawn(f"gateway-{port}", ["-m", "gateway", "--port", str(port)])
        service.port = port
        await _wait_healthy(service)
        return service

    def start_worker(self) -> Service:
        return self._spawn(f"worker-{len(self.services)}", ["-m", "persistence"])

    def _spawn(self, name: str, args: list[str]) -> Service:
        log_path = self.folder / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, *args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parents[2],
            )
        service = Service(name, process, log_path)
        self.services.append(service)
        return service

    def stop(self) -> None:
        for service in self.services:
            if service.process.poll() is None:
                service.process.kill()
                service.process.wait(_STOP_DEADLINE_SECONDS)


def _dsn(port: int, database: str) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/{database}?sslmode=disable"


async def _wait_healthy(service: Service) -> None:
    assert service.port is not None
    async with asyncio.timeout(_START_DEADLINE_SECONDS):
        while not await asyncio.to_thread(answers_ok, "127.0.0.1", service.port, "/readyz"):
            if service.process.poll() is not None:
                raise RuntimeError(f"{service.name} exited:\n{service.log_tail()}")
            await asyncio.sleep(0.05)  # a starting process signals nothing
