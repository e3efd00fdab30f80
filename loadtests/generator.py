"""The load generator: worker processes that hold the sockets, send at a rate and count.

The parent (`LoadGenerator`) splits the sockets over a few worker processes
and drives them in lock step over pipes:

    connect                      open every socket (bounded concurrency), wait until admitted
    begin(step)                  reset the counters; all workers do this before anyone sends
    run(step, rate, duration)    send this worker's share of the rate, return sent per channel
    expect(step, counts, limit)  wait until every delivery owed to this worker's sockets
                                 arrived (or `limit` s passed), return the counts
    close

A delivery is owed once per socket per message sent into its channel, the
sender's own socket included (every server here echoes to the sender).
Workers run uvloop when it is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import resource
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from loadtests.histogram import merge
from loadtests.wsclient import Client, Kind, SocketSpec, Tally

# Opening sockets in bounded bursts keeps the servers' accept queues and the
# admission queries from overflowing while thousands of sockets connect.
_CONNECT_CONCURRENCY = 64
_CONNECT_TIMEOUT_SECONDS = 15.0
# How often the pacer wakes; at 10k msgs/s that is ~20 messages per wake-up.
_PACE_SECONDS = 0.002
# A worker answers every command within its own limits; this only catches a hung worker.
_REPLY_SLACK_SECONDS = 60.0
_CLOSE_GRACE_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class GeneratorConfig:
    kind: Kind
    check_seq: bool  # our server: also check each socket's seq never goes back
    client_ids: bool  # our server: send a client_id, as real clients do
    nonce: str  # makes client_ids unique across runs that share one Redis


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard limit; return the new soft limit.

    Child processes inherit it, so calling this before starting servers and
    workers lets both ends hold thousands of sockets.
    """
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# --- worker process -------------------------------------------------------------


def worker_main(pipe: Connection, config: GeneratorConfig, specs: list[SocketSpec]) -> None:
    """Entry point of one worker process (started with the spawn method)."""
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_Worker(pipe, config, specs).serve())
    finally:
        loop.close()


class _Worker:
    def __init__(self, pipe: Connection, config: GeneratorConfig, specs: list[SocketSpec]) -> None:
        self.pipe = pipe
        self.config = config
        self.specs = specs
        self.tally = Tally(check_seq=config.check_seq)
        self.clients: list[Client] = []
        self.senders: list[Client] = []

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        commands: asyncio.Queue[tuple[Any, ...] | None] = asyncio.Queue()

        def readable() -> None:
            try:
                commands.put_nowait(self.pipe.recv())
            except EOFError:  # the parent is gone
                loop.remove_reader(self.pipe.fileno())
                commands.put_nowait(None)

        loop.add_reader(self.pipe.fileno(), readable)
        try:
            while (command := await commands.get()) is not None:
                name, *args = command
                reply = await getattr(self, "_" + name)(*args)
                self.pipe.send(reply)
                if name == "close":
                    return
        finally:
            for client in self.clients:
                client.close()

    async def _connect(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        limit = asyncio.Semaphore(_CONNECT_CONCURRENCY)
        failures: list[str] = []

        async def open_one(spec: SocketSpec) -> None:
            async with limit:
                client = Client(spec, self.config.kind, self.tally, self.config.nonce)
                try:
                    async with asyncio.timeout(_CONNECT_TIMEOUT_SECONDS):
                        await loop.create_connection(lambda: client, spec.host, spec.port)
                        await client.ready
                except (OSError, TimeoutError) as exc:
                    client.close()
                    failures.append(f"{type(exc).__name__}: {exc}")
                    return
                self.clients.append(client)
                # Once per channel it sends into: the pacer's round robin gives each
                # (socket, channel) the same share, and the client takes them in turn.
                self.senders += [client] * len(spec.lanes)

        started = time.monotonic()
        await asyncio.gather(*(open_one(spec) for spec in self.specs))
        return {
            "connected": len(self.clients),
            "failed": len(failures),
            "failure_samples": failures[:3],
            "seconds": time.monotonic() - started,
        }

    async def _begin(self, step: int) -> None:
        self.tally = Tally(step=step, check_seq=self.config.check_seq)
        for client in self.clients:
            client.tally = self.tally
            client.reset_step()

    async def _run(
        self, step: int, rate: float, duration: float, quota: int | None
    ) -> dict[str, Any]:
        """Send `rate` msgs/s round-robin over this worker's senders for `duration` s.

        With a `quota`, stop as soon as that many are sent. A worker without
        senders (or a quota of 0) idles for the duration, or returns at once.
        """
        sent: Counter[int] = Counter()
        senders = self.senders
        limit = sys.maxsize if quota is None else quota
        started = time.monotonic()
        count = 0
        if not senders or rate <= 0 or limit == 0:
            if quota is None:
                await asyncio.sleep(duration)
            return {"sent": {}, "seconds": time.monotonic() - started}
        client_ids = self.config.client_ids
        while (elapsed := time.monotonic() - started) < duration and count < limit:
            # Messages due by now, the first one at once; a late wake-up catches up.
            for _ in range(min(int(elapsed * rate) + 1, limit) - count):
                sent[senders[count % len(senders)].send_message(client_ids)] += 1
                count += 1
            await asyncio.sleep(_PACE_SECONDS)
        return {"sent": dict(sent), "seconds": time.monotonic() - started}

    async def _expect(self, step: int, owed: dict[int, int], limit: float) -> dict[str, Any]:
        tally = self.tally
        tally.expected = sum(_owed(client, owed) for client in self.clients)
        if tally.received >= tally.expected:
            tally.drained.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                await tally.drained.wait()
        loss = extra = 0
        for client in self.clients:
            difference = _owed(client, owed) - client.received
            loss += max(difference, 0)
            extra += max(-difference, 0)
        return {
            "step": step,
            "expected": tally.expected,
            "received": tally.received,
            "loss": loss,
            "extra": extra,
            "duplicates": tally.duplicates,
            "reordered": tally.reordered,
            "late": tally.late,
            "seq_regressions": tally.seq_regressions,
            "acks": tally.acks,
            "errors": tally.errors,
            "closed": tally.closed,
            "error_samples": tally.error_samples,
            "histogram": tally.histogram,
            "max_us": tally.max_us,
            "last_delivery_ns": tally.last_delivery_ns,
        }

    async def _close(self) -> None:
        for client in self.clients:
            client.close()
        # Let the transports send their FINs before the process exits.
        await asyncio.sleep(0)


def _owed(client: Client, sent: dict[int, int]) -> int:
    """Deliveries owed to a socket: one per message sent into each of its channels."""
    return sum(sent.get(index, 0) for index in client.spec.channel_indices)


# --- parent side ----------------------------------------------------------------


@dataclass
class StepResult:
    """One step's figures, summed over the worker processes."""

    sent: dict[int, int]
    send_seconds: float
    started_ns: int
    report: dict[str, Any]

    @property
    def total_sent(self) -> int:
        return sum(self.sent.values())


class LoadGeneratorError(RuntimeError):
    """A worker process died or did not answer in time."""


class LoadGenerator:
    """The parent's handle on the worker processes; use as a context manager."""

    def __init__(
        self, config: GeneratorConfig, sockets: Sequence[SocketSpec], processes: int
    ) -> None:
        context = multiprocessing.get_context("spawn")
        shares: list[list[SocketSpec]] = [[] for _ in range(max(1, processes))]
        for index, spec in enumerate(sockets):
            shares[index % len(shares)].append(spec)
        self._senders = [sum(len(spec.lanes) for spec in share) for share in shares]
        self._pipes: list[Connection] = []
        self._processes: list[multiprocessing.process.BaseProcess] = []
        for number, share in enumerate(shares):
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=worker_main,
                args=(child_end, config, share),
                name=f"loadgen-{number}",
                daemon=True,
            )
            process.start()
            child_end.close()
            self._pipes.append(parent_end)
            self._processes.append(process)

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self._processes if process.pid is not None]

    def _ask_all(self, commands: Sequence[tuple[Any, ...]], limit: float) -> list[Any]:
        for pipe, command in zip(self._pipes, commands, strict=True):
            pipe.send(command)
        deadline = time.monotonic() + limit + _REPLY_SLACK_SECONDS
        replies = []
        for pipe, process in zip(self._pipes, self._processes, strict=True):
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise LoadGeneratorError(f"{process.name} did not answer {commands[0][0]!r}")
            try:
                replies.append(pipe.recv())
            except EOFError:
                raise LoadGeneratorError(f"{process.name} exited") from None
        return replies

    def connect(self) -> dict[str, Any]:
        replies = self._ask_all([("connect",)] * len(self._pipes), _CONNECT_TIMEOUT_SECONDS * 4)
        return {
            "connected": sum(reply["connected"] for reply in replies),
            "failed": sum(reply["failed"] for reply in replies),
            "failure_samples": [s for reply in replies for s in reply["failure_samples"]][:3],
            "seconds": max(reply["seconds"] for reply in replies),
        }

    def step(
        self,
        step: int,
        rate: float,
        duration: float,
        drain_limit: float,
        messages: int | None = None,
    ) -> StepResult:
        """Send at `rate` msgs/s for `duration` s, then wait up to `drain_limit` s for delivery.

        With `messages`, sending stops once that many are sent (if before `duration`).
        """
        count = len(self._pipes)
        self._ask_all([("begin", step)] * count, 5.0)
        senders = sum(self._senders) or 1
        started_ns = time.monotonic_ns()
        quotas: list[int | None] = [None] * count
        if messages is not None:
            # Split exactly: shares by sender count, the remainder to the first workers.
            quotas = [messages * share // senders for share in self._senders]
            sending = [index for index, share in enumerate(self._senders) if share] or [0]
            for extra in range(messages - sum(q or 0 for q in quotas)):
                index = sending[extra % len(sending)]
                quotas[index] = (quotas[index] or 0) + 1
        runs = self._ask_all(
            [
                ("run", step, rate * share / senders, duration, quota)
                for share, quota in zip(self._senders, quotas, strict=True)
            ],
            duration,
        )
        sent: Counter[int] = Counter()
        for run in runs:
            sent.update(run["sent"])
        owed = dict(sent)
        reports = self._ask_all([("expect", step, owed, drain_limit)] * count, drain_limit)
        return StepResult(
            sent=owed,
            send_seconds=max(run["seconds"] for run in runs),
            started_ns=started_ns,
            report=_merge_reports(reports),
        )

    def close(self) -> None:
        """Close the sockets and stop the workers; kill any that do not exit."""
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send(("close",))
        for process in self._processes:
            # A worker still busy with a step (the parent was interrupted) reads
            # "close" only afterwards: it gets a moment, then SIGTERM, then SIGKILL.
            process.join(timeout=_CLOSE_GRACE_SECONDS)
            if process.is_alive():
                process.terminate()
                process.join(timeout=_CLOSE_GRACE_SECONDS)
            if process.is_alive():
                process.kill()
                process.join()
        for pipe in self._pipes:
            pipe.close()
        self._pipes.clear()


def _merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    summed = [
        "expected",
        "received",
        "loss",
        "extra",
        "duplicates",
        "reordered",
        "late",
        "seq_regressions",
        "acks",
        "errors",
        "closed",
    ]
    merged: dict[str, Any] = {key: sum(report[key] for report in reports) for key in summed}
    merged["error_samples"] = [s for report in reports for s in report["error_samples"]][:3]
    merged["histogram"] = merge([report["histogram"] for report in reports])
    merged["max_us"] = max(report["max_us"] for report in reports)
    merged["last_delivery_ns"] = max(report["last_delivery_ns"] for report in reports)
    return merged


if __name__ == "__main__":
    sys.exit("run `python -m loadtests.fanout`; this module is its load generator")
