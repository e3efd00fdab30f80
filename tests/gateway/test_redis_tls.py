"""The TLS options of `REDIS_URL` hold for the gateway's raw RESP connections (the
pipelined send connection and the pub/sub link) exactly as for redis-py's client.

The embedded valkey-server is built without TLS ("Failed finding TLS support"),
so TLS ends in front of it, as at a managed Redis's TLS proxy: a terminator in
the test, with a throwaway CA and certificates made by the `openssl` CLI, that
requires a client certificate and forwards the bytes to the session's Valkey.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.pipelined_redis import PipelinedRedis
from gateway.resp import url_options
from shared.local_servers import ServerProcess
from tests.gateway.api_client import connect, receive_until, room
from tests.gateway.conftest import MakeGateway

_TIMEOUT = 2.0


@dataclass(frozen=True)
class Pki:
    ca: Path
    other_ca: Path  # trusted by nobody here
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)


def _make_ca(folder: Path, name: str) -> None:
    _openssl(
        folder,
        *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
        *("-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2"),
        *("-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
    )


def _make_leaf(folder: Path, name: str, extensions: str) -> None:
    (folder / f"{name}.ext").write_text(
        extensions + "\nauthorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    _openssl(
        folder,
        *("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
        *("-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}"),
    )
    _openssl(
        folder,
        *("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key"),
        *("-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext"),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    _make_ca(folder, "ca")
    _make_ca(folder, "other-ca")
    # The server's certificate names localhost only, not 127.0.0.1.
    _make_leaf(folder, "server", "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth")
    _make_leaf(folder, "client", "extendedKeyUsage=clientAuth")
    return Pki(
        ca=folder / "ca.pem",
        other_ca=folder / "other-ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
    )


@pytest.fixture
async def tls_port(pki: Pki, redis_server: ServerProcess) -> AsyncIterator[int]:
    """A TLS endpoint (client certificate required) in front of the session's Valkey."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(pki.ca)
    handlers: set[asyncio.Task[None]] = set()
    writers: set[asyncio.StreamWriter] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        writers.add(writer)
        try:
            backend_reader, backend_writer = await asyncio.open_connection(
                "127.0.0.1", redis_server.port
            )
            writers.add(backend_writer)
            await asyncio.gather(pipe(reader, backend_writer), pipe(backend_reader, writer))
        finally:
            handlers.discard(task)

    server = await asyncio.start_server(forward, "127.0.0.1", 0, ssl=context)
    yield server.sockets[0].getsockname()[1]
    server.close()
    # Closing both ends lets every forwarder finish on its own (cancelling one
    # would make asyncio's stream callback log an error on Python 3.11).
    for writer in writers:
        writer.transport.abort()
    if handlers:
        await asyncio.wait(handlers, timeout=_TIMEOUT)
    await server.wait_closed()


def _url(host: str, port: int, **options: str | Path) -> str:
    query = urlencode({name: str(value) for name, value in options.items()})
    return f"rediss://{host}:{port}/0" + (f"?{query}" if query else "")


def _cases(pki: Pki, port: int) -> Iterator[tuple[str, str, bool]]:
    client = {"ssl_certfile": pki.client_cert, "ssl_keyfile": pki.client_key}
    yield (
        "trusted CA, client certificate",
        _url("localhost", port, ssl_ca_certs=pki.ca, **client),
        True,
    )
    yield "no client certificate", _url("localhost", port, ssl_ca_certs=pki.ca), False
    yield "untrusted CA", _url("localhost", port, ssl_ca_certs=pki.other_ca, **client), False
    yield (
        "untrusted CA, ssl_cert_reqs=none",
        _url("localhost", port, ssl_ca_certs=pki.other_ca, ssl_cert_reqs="none", **client),
        True,
    )
    yield "system CAs only", _url("localhost", port, **client), False
    yield (
        "host name not in the certificate",
        _url("127.0.0.1", port, ssl_ca_certs=pki.ca, **client),
        False,
    )
    yield (
        "host name not checked",
        _url("127.0.0.1", port, ssl_ca_certs=pki.ca, ssl_check_hostname="false", **client),
        True,
    )


async def _raw_ping(url: str) -> bool:
    connection = PipelinedRedis(url, timeout=_TIMEOUT)
    try:
        return bool(await connection.call("PING") == b"PONG")
    except (RedisError, OSError):
        return False
    finally:
        connection.close()


async def _redis_py_ping(url: str) -> bool:
    client = Redis.from_url(url, socket_timeout=_TIMEOUT, retry=Retry(NoBackoff(), 0))
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


async def test_raw_connections_honour_the_urls_tls_options_as_redis_py_does(
    pki: Pki, tls_port: int
) -> None:
    for name, url, reachable in _cases(pki, tls_port):
        assert await _redis_py_ping(url) is reachable, f"redis-py: {name}"
        assert await _raw_ping(url) is reachable, f"raw RESP connection: {name}"


def test_the_context_is_the_one_redis_py_builds(pki: Pki) -> None:
    url = _url("localhost", 6380, ssl_ca_certs=pki.ca, ssl_check_hostname="false")
    ours = url_options(url)["tls"]
    theirs = Redis.from_url(url).connection_pool.make_connection().ssl_context.get()
    assert (ours.verify_mode, ours.check_hostname) == (theirs.verify_mode, theirs.check_hostname)
    assert ours.verify_mode == ssl.CERT_REQUIRED
    assert ours.check_hostname is False
    assert ours.get_ca_certs() == theirs.get_ca_certs() != []


def test_tls_options_on_a_plain_url_are_refused() -> None:
    with pytest.raises(ValueError, match="ssl_ca_certs: TLS options need a rediss:// URL"):
        url_options("redis://localhost:6379/0?ssl_ca_certs=/etc/ssl/ca.pem")


async def test_a_gateway_sends_and_fans_out_over_tls(
    make_gateway: MakeGateway, pki: Pki, tls_port: int
) -> None:
    url = _url(
        "localhost",
        tls_port,
        ssl_ca_certs=pki.ca,
        ssl_certfile=pki.client_cert,
        ssl_keyfile=pki.client_key,
    )
    gateway_a = await make_gateway(redis_url=url)
    gateway_b = await make_gateway(redis_url=url)
    for gateway in (gateway_a, gateway_b):
        assert (await gateway.get("/readyz")).status == 200  # the pub/sub link is up
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    ws_bob = await connect(gateway_b, bob, channel_id)
    ws_alice = await connect(gateway_a, alice, channel_id)
    await ws_alice.send_str('{"type": "text", "content": "over TLS"}')
    assert (await receive_until(ws_alice, "ack"))["seq"] == 1
    assert (await receive_until(ws_bob, "message"))["body"]["content"] == "over TLS"
