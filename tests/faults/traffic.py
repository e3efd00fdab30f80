"""Steady chat traffic through real gateway processes, and the checks after a fault.

`start_traffic` opens a channel with members (reconnecting with `since`) and
senders (re-sending by `client_id` until acknowledged); `finish` lets it end
and checks the invariants of DESIGN.md: every member received every seq
exactly once and in order, and PostgreSQL stores exactly the acknowledged
messages, once each. Shared by `test_faults.py` and the cluster tests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
import asyncpg

from tests.faults.chat_clients import Member, Sender, channel_with, signup
from tests.faults.stack import Service, Stack

_MESSAGES_PER_SENDER = 300
_SEND_PAUSE_SECONDS = 0.004  # about 200 messages/s per sender: steady, not a flood
_SETTLE_TIMEOUT_SECONDS = 60.0


@dataclass
class Traffic:
    channel_id: int
    messages_per_sender: int
    members: list[Member]
    senders: list[Sender]
    sending: list[asyncio.Task[None]]

    async def wait_acked(self, count: int) -> None:
        """Until the senders together have `count` acks (the fault's moment)."""
        per_sender = count // len(self.senders)
        for sender in self.senders:
            await sender.wait_acked(per_sender, _SETTLE_TIMEOUT_SECONDS)


async def start_traffic(
    session: aiohttp.ClientSession,
    gateways: list[Service],
    *,
    members: int = 4,
    senders: int = 2,
    messages: int = _MESSAGES_PER_SENDER,
    pause: float = _SEND_PAUSE_SECONDS,
    content_bytes: int = 0,
    tag: str = "",
    kind: str = "chat",
) -> Traffic:
    """Members connected to the gateways, then senders started, in one new channel.

    `tag` tells apart the users and the channel of several traffics in one database;
    `kind` is the socket every client uses (`SOCKET_KINDS`).
    """
    urls = [gateway.url for gateway in gateways]
    accounts = [await signup(session, urls[0], f"{tag}user{n}") for n in range(members + senders)]
    channel_id = await channel_with(session, urls[0], accounts, name=f"faults{tag}")

    def rotated(start: int) -> list[str]:
        return urls[start % len(urls) :] + urls[: start % len(urls)]

    listeners = [
        Member(session, rotated(n), account, channel_id, kind)
        for n, account in enumerate(accounts[:members])
    ]
    for member in listeners:
        member.start()
    for member in listeners:
        await asyncio.wait_for(member.connected.wait(), _SETTLE_TIMEOUT_SECONDS)
    writers = [
        Sender(
            session,
            rotated(n),
            account,
            channel_id,
            f"s{n}",
            content_bytes=content_bytes,
            kind=kind,
        )
        for n, account in enumerate(accounts[members:])
    ]
    sending = [asyncio.create_task(writer.send(messages, pause)) for writer in writers]
    return Traffic(channel_id, messages, listeners, writers, sending)


@dataclass
class Report:
    sent: int
    acked: int
    stored: int
    lost: int
    unexpected: int
    duplicated: int
    members_complete: int
    members: int

    def line(self, fault: str) -> str:
        return (
            f"FAULT {fault}: sent={self.sent} acked={self.acked} stored={self.stored} "
            f"lost={self.lost} duplicated={self.duplicated} unexpected={self.unexpected} "
            f"members_gap_free={self.members_complete}/{self.members}"
        )


async def finish(traffic: Traffic, stack: Stack, fault: str) -> Report:
    """Let the traffic end, then check every invariant and report the figures."""
    async with asyncio.timeout(_SETTLE_TIMEOUT_SECONDS):
        await asyncio.gather(*traffic.sending)
    acked = {cid: ids for sender in traffic.senders for cid, ids in sender.acked.items()}
    acked_ids = {message_id for message_id, _ in acked.values()}
    top_seq = max(seq for _, seq in acked.values())
    for member in traffic.members:
        await member.wait_for_seq(top_seq, _SETTLE_TIMEOUT_SECONDS)
        await member.stop()
    stored_ids = await stored_ids_once_settled(stack.dsn, traffic.channel_id, len(acked_ids))
    complete = sum(member.seqs == list(range(1, top_seq + 1)) for member in traffic.members)
    report = Report(
        sent=traffic.messages_per_sender * len(traffic.senders),
        acked=len(acked_ids),
        stored=len(stored_ids),
        lost=len(acked_ids - set(stored_ids)),
        unexpected=len(set(stored_ids) - acked_ids),
        duplicated=len(stored_ids)
        - len(set(stored_ids))
        + sum(len(m.seqs) - len(set(m.seqs)) for m in traffic.members),
        members_complete=complete,
        members=len(traffic.members),
    )
    print(report.line(fault))
    assert len(acked) == report.sent  # every sender got every message acknowledged in the end
    assert set(stored_ids) == acked_ids
    assert report.duplicated == 0
    for member in traffic.members:
        assert member.seqs == list(range(1, top_seq + 1)), member.close_codes
        assert "history_gap" not in member.errors
    return report


async def stored_ids_once_settled(dsn: str, channel_id: int, expected: int) -> list[int]:
    """The channel's stored ids, once the worker has written `expected` rows (or timed out)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with asyncio.timeout(_SETTLE_TIMEOUT_SECONDS):
            while True:
                ids = [
                    row["id"]
                    for row in await conn.fetch(
                        "SELECT id FROM messages WHERE channel_id = $1", channel_id
                    )
                ]
                if len(ids) >= expected:
                    return ids
                await asyncio.sleep(0.1)  # the worker signals nothing outside
    finally:
        await conn.close()
