"""Users, channels and memberships for a benchmark, written straight into PostgreSQL.

Signing up through the API hashes each password with argon2id on purpose
(tens of ms each), which would dominate setting up a thousand members. So the
benchmark hashes one password, creates users and channels with the project's
own `shared.db` functions, bulk-copies memberships, and signs tokens with the
gateways' `issue_token` and the stack's secret. The gateways see exactly what
sign-up, channel creation and join would have left behind.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field

import asyncpg

from gateway.auth import FIRST_GENERATION, issue_token
from gateway.passwords import PasswordHasher
from shared.db.channels import create_channel
from shared.db.users import create_user
from shared.settings import Settings

# Concurrent inserts while creating users; the pool holds this many connections.
_INSERT_CONCURRENCY = 8
_PASSWORD = "benchmark password"


@dataclass(frozen=True, slots=True)
class Member:
    user_id: int
    token: str


@dataclass(frozen=True, slots=True)
class ChannelMembers:
    channel_id: int
    members: list[Member]


@dataclass
class Population:
    """Creates users once per benchmark and fresh channels for every run."""

    database_url: str
    jwt_secret: str
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    _users: list[Member] = field(default_factory=list)
    _channels_made: int = 0

    def channels(
        self, count: int, members: int, *, users: int | None = None
    ) -> list[ChannelMembers]:
        """`count` new channels with `members` members each, owned by a user who is no member.

        Members are drawn in turn from a pool of `users` users (by default at most
        max(members, 1000)), so one user belongs to several channels but never
        twice to one: with `users` = count * members / k, each user is in k channels.
        """
        return asyncio.run(self._channels(count, members, users))

    async def _channels(self, count: int, members: int, users: int | None) -> list[ChannelMembers]:
        pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=8)
        try:
            if users is None:
                users = min(count * members, 1000)
            wanted = 1 + max(members, users)
            await self._ensure_users(pool, wanted)
            owner, pool_users = self._users[0], self._users[1:wanted]
            created: list[ChannelMembers] = []
            for index in range(count):
                self._channels_made += 1
                channel = await create_channel(
                    pool,
                    name=f"bench-{self.tag}-{self._channels_made}",
                    description="fan-out benchmark",
                    image_url=None,
                    owner_id=owner.user_id,
                )
                first = index * members
                chosen = [
                    pool_users[(first + offset) % len(pool_users)] for offset in range(members)
                ]
                created.append(ChannelMembers(channel.id, chosen))
            async with pool.acquire() as conn:
                await conn.copy_records_to_table(
                    "memberships",
                    records=[
                        (channel.channel_id, member.user_id, "member")
                        for channel in created
                        for member in channel.members
                    ],
                    columns=["channel_id", "user_id", "role"],
                )
            return created
        finally:
            await pool.close()

    async def _ensure_users(self, pool: asyncpg.Pool[asyncpg.Record], wanted: int) -> None:
        if len(self._users) >= wanted:
            return
        settings = Settings(jwt_secret=self.jwt_secret, database_url=self.database_url)
        hasher = PasswordHasher(1)
        try:
            password_hash = await hasher.hash(_PASSWORD)
        finally:
            hasher.close()
        limit = asyncio.Semaphore(_INSERT_CONCURRENCY)

        async def make(number: int) -> Member:
            username = f"b{self.tag}u{number}"
            async with limit:
                user = await create_user(
                    pool,
                    name=f"Bench {number}",
                    username=username,
                    email=f"{username}@bench.example",
                    password_hash=password_hash,
                    avatar_url=None,
                )
            return Member(user.id, issue_token(settings, user.id, username, FIRST_GENERATION))

        self._users += await asyncio.gather(
            *(make(number) for number in range(len(self._users), wanted))
        )
