"""Password hashing, with bounded concurrency and bounded memory.

argon2id for new hashes; bcrypt (`$2a$`, as the Go server wrote them) is still
verified so migrated accounts log in, and is replaced by argon2id on their
next log-in.

Each argon2id hash takes 19 MiB for about as long as a CPU needs to fill it.
Run on asyncio's default thread pool (`min(32, CPUs + 4)` threads, counting
the host's CPUs), a burst of log-ins hashed on every one of those threads at
once, and glibc kept each thread's 19 MiB afterwards (see
`_return_large_blocks_to_the_system`): 48 concurrent log-ins left a gateway
115 MB larger. Here hashing runs on a few threads of its own, as many as the
CPUs this process may use (capped), so a burst queues instead of fanning out,
and the memory of each hash goes back to the system when it is done.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from passlib.context import CryptContext

from shared.runtime import usable_cpus

log = logging.getLogger(__name__)

T = TypeVar("T")

# OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
_PASSWORDS = CryptContext(
    schemes=["argon2", "bcrypt"],
    deprecated=["bcrypt"],
    argon2__type="ID",
    argon2__memory_cost=19 * 1024,
    argon2__rounds=2,
    argon2__parallelism=1,
)
# Without a setting, hashing uses the CPUs the process may use, but no more than
# this many: each hash in flight holds 19 MiB, so 4 bound a burst to about 76 MiB.
_DEFAULT_MAX_CONCURRENCY = 4
# glibc's M_MMAP_THRESHOLD: blocks at least this large are mapped on their own
# and unmapped when freed. Far below argon2's 19 MiB, far above what a message
# or a request allocates.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024


def hash_concurrency(setting: int) -> int:
    """Hashes at once for the PASSWORD_HASH_CONCURRENCY setting (0: derived from the CPUs)."""
    return setting or min(usable_cpus(), _DEFAULT_MAX_CONCURRENCY)


class PasswordHasher:
    """Hashes and checks passwords on `concurrency` threads of its own; more wait in line.

    A caller that goes away (its request cancelled) before its turn leaves the
    line without costing a hash. `close()` drops what is still waiting.
    """

    def __init__(self, concurrency: int) -> None:
        _return_large_blocks_to_the_system()
        self.concurrency = concurrency
        self._threads = ThreadPoolExecutor(concurrency, thread_name_prefix="password-hash")

    async def _run(self, work: Callable[..., T], *args: str) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, work, *args)

    async def hash(self, password: str) -> str:
        hashed: str = await self._run(_PASSWORDS.hash, password)
        return hashed

    async def verify(self, password: str, password_hash: str) -> tuple[bool, str | None]:
        """Check a password; returns (ok, new_hash), where new_hash replaces an outdated hash.

        A stored hash in no scheme we know (written by hand, or by a tool that
        is not ours) matches no password: the account cannot log in until its
        password is reset (`chat-group reset-password`), and the log says so.
        """
        return await self._run(_verify_and_update, password, password_hash)

    async def burn(self, password: str) -> None:
        """Spend a real verification on an unknown identity, so a miss costs as much
        as a wrong password and response times do not reveal which accounts exist."""
        await self._run(_verify_against_dummy, password)

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)


@functools.cache
def _dummy_hash() -> str:
    # Made on a hashing thread, at the first miss: not on the event loop.
    hashed: str = _PASSWORDS.hash(secrets.token_hex(16))
    return hashed


def _verify_and_update(password: str, password_hash: str) -> tuple[bool, str | None]:
    try:
        ok, new_hash = _PASSWORDS.verify_and_update(password, password_hash)
    except ValueError:
        # passlib's "hash could not be identified" (and malformed hashes of a known scheme).
        log.warning("stored password hash in an unknown format; reset the password")
        return False, None
    return bool(ok), new_hash


def _verify_against_dummy(password: str) -> None:
    _PASSWORDS.verify(password, _dummy_hash())


@functools.cache
def _return_large_blocks_to_the_system() -> None:
    """Make glibc give a hash's 19 MiB back to the system when the hash is done.

    glibc maps a large block on its own (and unmaps it on free) only above a
    threshold that it raises, up to 32 MiB, each time such a block is freed.
    After the first hash, argon2's 19 MiB therefore come from the hashing
    thread's malloc arena, which keeps them: one 19 MiB per thread that ever
    hashed, for the life of the process. Setting the threshold fixes it (glibc
    then stops adjusting it), so every hash maps and unmaps its block. The cost
    is the page faults of mapping 19 MiB, small next to the hash itself. Other
    C libraries (musl) do not need this and have no such call: nothing is done.
    """
    try:
        # The process's own symbols, which include the C library's.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        log.info("mallopt not available; large blocks are left to the C library")
        return
    if mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES) != 1:
        log.warning("mallopt(M_MMAP_THRESHOLD) refused; hashing memory may be kept")
