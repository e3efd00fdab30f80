"""A TCP load balancer for browser tests: each listening port prefers one gateway and
fails over to the others, as nginx's `proxy_next_upstream error` does.

nginx (deploy/nginx.conf) picks a gateway per connection by load; a test needs to know
which gateway each person's socket is on, so each port here names its first choice.
A connection that the preferred gateway refuses goes to the next one; a connection
already open dies with its gateway, and the browser reconnects.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

_CONNECT_TIMEOUT_SECONDS = 2.0
_CHUNK_BYTES = 65536


@dataclass
class Balancer:
    """Listens on 127.0.0.1; `backends` (ports) may be set after it started."""

    backends: list[int] = field(default_factory=list)
    # While set, what the gateways send is lost on the way (replies such as acks);
    # a test then drops the connections, as a network failure would.
    lose_replies: bool = False
    server: asyncio.Server | None = None
    _pipes: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    def drop_connections(self) -> None:
        """End every connection open now, as a failing network would."""
        for writer in list(self._writers):
            writer.transport.abort()

    async def close(self) -> None:
        """Stop listening and end every connection (the pipes see their ends close)."""
        if self.server is not None:
            self.server.close()
        for writer in list(self._writers):
            writer.close()
        async with asyncio.timeout(_CONNECT_TIMEOUT_SECONDS):
            while self._pipes:
                await asyncio.wait(list(self._pipes))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        upstream = None
        try:
            upstream = await self._connect()
            if upstream is None:
                return
            up_reader, up_writer = upstream
            self._writers |= {writer, up_writer}
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pipe(reader, up_writer, replies=False))
                group.create_task(self._pipe(up_reader, writer, replies=True))
        finally:
            writer.close()
            self._writers -= {writer, *(upstream[1:] if upstream else ())}
            self._pipes.discard(task)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for port in self.backends:
            try:
                async with asyncio.timeout(_CONNECT_TIMEOUT_SECONDS):
                    return await asyncio.open_connection("127.0.0.1", port)
            except (OSError, TimeoutError):
                continue
        return None

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, replies: bool
    ) -> None:
        """Copy one direction until either side ends, then end the other side too."""
        try:
            while chunk := await reader.read(_CHUNK_BYTES):
                if replies and self.lose_replies:
                    continue
                writer.write(chunk)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
