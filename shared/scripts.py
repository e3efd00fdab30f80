"""The Lua scripts, loaded from `redis_scripts/*.lua` and registered once per client.

redis-py's registered scripts call EVALSHA and fall back to loading the script
on NOSCRIPT, so a Redis restart or failover needs no special handling here.
In a cluster, EVALSHA goes to the master owning the slot of the script's keys
(every script here touches one slot) and SCRIPT LOAD to every master.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from redis.commands.core import AsyncScript

from shared.redis_client import RedisClient


def _source(name: str) -> str:
    return resources.files("shared").joinpath("redis_scripts", f"{name}.lua").read_text("utf-8")


def _presence_source(name: str) -> str:
    """A presence script: the shared head (keys, arguments, sweep, events), then its own part."""
    return _source("presence_common") + _source(name)


@dataclass(frozen=True, slots=True)
class Scripts:
    send: AsyncScript
    http_rate: AsyncScript
    raise_seq: AsyncScript
    login_failures: AsyncScript
    presence_add: AsyncScript
    presence_remove: AsyncScript
    presence_read: AsyncScript
    seed_message_state: AsyncScript
    typing: AsyncScript
    send_source: str  # for EVAL by a connection that is not a redis-py client


def register_scripts(redis: RedisClient) -> Scripts:
    # The change step (edits, deletes, reactions) defines what send.lua calls.
    send = _source("message_state") + _source("send")
    return Scripts(
        send=redis.register_script(send),
        http_rate=redis.register_script(_source("http_rate")),
        raise_seq=redis.register_script(_source("raise_seq")),
        login_failures=redis.register_script(_source("login_failures")),
        presence_add=redis.register_script(_presence_source("presence_add")),
        presence_remove=redis.register_script(_presence_source("presence_remove")),
        presence_read=redis.register_script(_presence_source("presence_read")),
        seed_message_state=redis.register_script(_source("seed_message_state")),
        typing=redis.register_script(_source("typing")),
        send_source=send,
    )


@dataclass(frozen=True, slots=True)
class ImportScripts:
    """The scripts of `chat-group import-go` (shared.go_import)."""

    ids: AsyncScript
    counter: AsyncScript
    recent: AsyncScript


def register_import_scripts(redis: RedisClient) -> ImportScripts:
    return ImportScripts(
        ids=redis.register_script(_source("go_import_ids")),
        counter=redis.register_script(_source("go_import_counter")),
        recent=redis.register_script(_source("go_import_recent")),
    )
