"""The membership audit: the sockets of a removed member, or opened with a revoked token,
close even when no event reached the gateway, within MEMBERSHIP_RECHECK_SECONDS, and send
nothing more."""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp
import asyncpg
import redis.asyncio as redis

from gateway.app_keys import METRICS
from shared.local_servers import ServerProcess
from tests.gateway.api_client import (
    RECEIVE_TIMEOUT,
    Account,
    connect,
    expect_refusal,
    receive_until,
    room,
    send_texts,
)
from tests.gateway.conftest import MakeGateway

_RECHECK_SECONDS = 0.3


async def _delete_membership(pg_pool: asyncpg.Pool, channel_id: int, user_id: int) -> None:
    """A removal that publishes no event at all (an admin's SQL, a restored backup)."""
    status = await pg_pool.execute(
        "DELETE FROM memberships WHERE channel_id = $1 AND user_id = $2", channel_id, user_id
    )
    assert status == "DELETE 1"


async def _close_code(ws: aiohttp.ClientWebSocketResponse) -> int:
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        while (message := await ws.receive()).type is not aiohttp.WSMsgType.CLOSE:
            assert message.type is aiohttp.WSMsgType.TEXT, message
    assert ws.close_code is not None
    return ws.close_code


async def test_removal_no_gateway_heard_closes_the_socket_within_the_recheck_interval(
    make_gateway: MakeGateway, pg_pool: asyncpg.Pool
) -> None:
    gateway_a = await make_gateway(membership_recheck_seconds=_RECHECK_SECONDS)
    gateway_b = await make_gateway(membership_recheck_seconds=_RECHECK_SECONDS)
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    ws_alice = await connect(gateway_a, alice, channel_id)
    ws_bob = await connect(gateway_b, bob, channel_id)
    loop = asyncio.get_running_loop()

    removed_at = loop.time()
    await _delete_membership(pg_pool, channel_id, bob.user_id)

    assert await _close_code(ws_bob) == 4403  # the code of a live removal
    # Generous for a shared machine; without the audit the socket stays open for good.
    assert loop.time() - removed_at < _RECHECK_SECONDS + 1.0
    assert gateway_b.app[METRICS].membership_revocations.value == 1
    assert (await send_texts(ws_alice, 1, "still-a-member")).acked_seqs == [1]
    frame, close_code = await expect_refusal(await connect(gateway_b, bob, channel_id))
    assert (frame["code"], close_code) == ("not_a_member", 4403)


async def test_removal_missed_while_the_pubsub_link_was_down_is_caught_at_the_resync(
    make_gateway: MakeGateway, pg_pool: asyncpg.Pool, redis_url: str
) -> None:
    # An hour between periodic checks: only the resync can find the removal in time.
    gateway_a = await make_gateway(membership_recheck_seconds=3600)
    gateway_b = await make_gateway(membership_recheck_seconds=3600)
    channel_id, (alice, bob) = await room(gateway_a, "alice", "bob")
    await connect(gateway_a, alice, channel_id)
    ws_bob = await connect(gateway_b, bob, channel_id)

    await _delete_membership(pg_pool, channel_id, bob.user_id)
    admin = redis.Redis.from_url(redis_url)
    try:
        # Every gateway's pub/sub link drops: whatever was published meanwhile is missed.
        await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    finally:
        await admin.aclose()

    assert await _close_code(ws_bob) == 4403


async def test_frames_a_removed_member_had_sent_are_not_sent_after_the_close(
    make_gateway: MakeGateway, pg_pool: asyncpg.Pool, own_valkey: ServerProcess
) -> None:
    """A socket closed for removal sends nothing more, not even the frames it had read
    but not yet sent (they wait behind a send in flight): no seq, no delivery."""
    gateway = await make_gateway(
        redis_url=f"redis://127.0.0.1:{own_valkey.port}/0",
        membership_recheck_seconds=_RECHECK_SECONDS,
    )
    channel_id, (alice, bob) = await room(gateway, "alice", "bob")
    ws_alice = await connect(gateway, alice, channel_id)
    ws_bob = await connect(gateway, bob, channel_id, autoping=False)

    os.kill(own_valkey.pid, signal.SIGSTOP)  # the first send stays in flight
    try:
        for index in range(5):
            await ws_bob.send_str(f'{{"type": "text", "content": "bob {index}"}}')
        await ws_bob.ping()
        # Answered in order after the five frames: the gateway has read all of them.
        assert (await ws_bob.receive(timeout=RECEIVE_TIMEOUT)).type is aiohttp.WSMsgType.PONG
        await _delete_membership(pg_pool, channel_id, bob.user_id)
        assert await _close_code(ws_bob) == 4403
    finally:
        os.kill(own_valkey.pid, signal.SIGCONT)

    # The script call that had left before the close ran; the four frames behind it did not.
    first = await receive_until(ws_alice, "message")
    assert (first["seq"], first["user_id"]) == (1, bob.user_id)
    assert (await send_texts(ws_alice, 1, "after")).acked_seqs == [2]


async def test_tokens_revoked_without_an_event_close_only_the_sockets_opened_with_them(
    make_gateway: MakeGateway, pg_pool: asyncpg.Pool
) -> None:
    """A revocation (what log-out does, minus the control event every gateway may miss)
    closes the sockets opened with the revoked tokens (4401); a socket opened with a
    token issued since stays open."""
    gateway = await make_gateway(membership_recheck_seconds=_RECHECK_SECONDS)
    channel_id, (alice,) = await room(gateway, "alice")
    ws_old = await connect(gateway, alice, channel_id)

    await pg_pool.execute(
        "UPDATE users SET token_generation = token_generation + 1 WHERE id = $1", alice.user_id
    )
    response = await gateway.post(
        "/api/v1/auth/login", json={"identity": "alice", "password": "correct horse"}
    )
    assert response.status == 200
    fresh = Account(alice.user_id, "alice", (await response.json())["data"])
    ws_new = await connect(gateway, fresh, channel_id)

    assert await _close_code(ws_old) == 4401  # the code of a live revocation
    assert (await send_texts(ws_new, 1, "fresh")).acked_seqs == [1]
