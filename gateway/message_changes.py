"""Edits, deletes and reactions: who may change which message, and the change's event.

Both the multiplexed socket (`edit`, `delete`, `react` frames) and the REST
routes (`gateway.api.messages`) come here. A change is authorized, then built
as an event (`message_edited`, `message_deleted`, `reaction`) that goes
through the send script like a message (`Sender.send_change`): it takes the
channel's next seq, is appended to the recent and ingest streams and
published, atomically, so live subscribers see it in the channel's order and
a resume replays it. It is acknowledged only once the script has returned
(durable in the stream); the persistence worker applies it to its target
(`shared.db.message_changes`).

Authorization needs the target's author and state, and the target may not be
in PostgreSQL yet (the worker lags the stream by up to WORKER_LINGER_MS under
normal load): it is looked for in PostgreSQL first, then in the channel's
recent stream, newest first, back to the first entry older than the target's
id (ids grow with seqs in a channel), so a just-sent message can be edited
at once. What a concurrent change could break is checked again inside the
send script against the message's state in Redis (`RedisKeys.message_state`):
a delete racing an edit or a reaction, a second add of the same reaction.

Rules: the author edits or deletes their own message; a channel's owner or
moderator, or a global admin, deletes anyone's. Only `text` messages are
editable, into `text`: a file message points at an uploaded object, and a
message pointing at another file is another message, not an edit. Nothing
changes a deleted message. Reacting and editing need a member who is not
muted. A private channel or direct message is `channel_not_found` to a
non-member, as everywhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import cast

import orjson
from aiohttp import web

from gateway.app_keys import KEYS, PG_POOL, REDIS, SCRIPTS, SENDER, SETTINGS
from gateway.mutes import ensure_not_muted
from gateway.outages import DEPENDENCY_ERRORS
from gateway.sender import SendResult
from shared.db.channels import chat_access
from shared.db.message_changes import DELETED, EDITED, REACTION, find_target, reaction_state
from shared.errors import (
    ChannelNotFoundError,
    MessageDeletedError,
    MessageNotFoundError,
    NotAMemberError,
    NotEditableError,
    NotYourMessageError,
    TooManyReactionsError,
    UnavailableError,
)
from shared.redis_keys import RECENT_TTL_MS
from shared.wire import (
    TextBody,
    change_tail,
    edit_payload,
    frame_body,
    frame_id,
    is_message_frame,
    reaction_payload,
)

# Roles of `memberships` that may delete anyone's message in their channel.
_MODERATING_ROLES = frozenset({"owner", "moderator"})
# The recent stream is read newest first in pages of this many entries.
_RECENT_PAGE = 100


@dataclass(frozen=True, slots=True)
class Change:
    """One change event on its way to the send script.

    `op` is what the script checks and applies to the message's Redis state:
    `edit`, `delete`, or a reaction's `add` / `remove` of `emoji`.
    """

    kind: str
    channel_id: int
    user_id: int
    message_id: int
    client_id: str | None
    body: bytes  # the ingest entry's body (a reaction's ends open, see change_tail)
    tail: bytes
    op: str
    emoji: str = ""


@dataclass(frozen=True, slots=True)
class ChangeOutcome:
    """What a change came to. `result` is None when it changed nothing (adding a
    reaction the user has, removing one they have not): no event, no seq."""

    change: Change
    result: SendResult | None
    count: int | None  # a reaction's count for its emoji now


@dataclass(frozen=True, slots=True)
class _Target:
    user_id: int
    body_type: str | None
    deleted: bool


async def edit_change(
    app: web.Application,
    user_id: int,
    channel_id: int,
    message_id: int,
    body: TextBody,
    client_id: str | None,
) -> Change:
    """The `message_edited` event of the author replacing a text message's body.

    Raises NotEditableError, NotYourMessageError, MessageNotFoundError,
    MessageDeletedError, NotAMemberError, ChannelNotFoundError, MutedError,
    UnavailableError.
    """
    await _member_role(app, channel_id, user_id)
    await refuse_muted(app, channel_id, user_id)
    target = await _target(app, channel_id, message_id)
    if target.user_id != user_id:
        raise NotYourMessageError()
    if target.body_type != "text":
        raise NotEditableError()
    stored, fields = edit_payload(frame_body(body), client_id)
    return _change(EDITED, user_id, channel_id, message_id, stored, fields, "edit", client_id)


async def delete_change(
    app: web.Application, user_id: int, channel_id: int, message_id: int
) -> Change:
    """The `message_deleted` event of the author, a moderator or owner of the channel,
    or an admin (who need not be a member).

    Raises NotYourMessageError, MessageNotFoundError, MessageDeletedError,
    NotAMemberError, ChannelNotFoundError, UnavailableError.
    """
    role, admin = await _member_role(app, channel_id, user_id, admin_may=True)
    target = await _target(app, channel_id, message_id)
    if target.user_id != user_id and not admin and role not in _MODERATING_ROLES:
        raise NotYourMessageError("Only its author, a moderator or the owner may delete it")
    return _change(DELETED, user_id, channel_id, message_id, b"{}", b"", "delete")


async def reaction_change(
    app: web.Application, user_id: int, channel_id: int, message_id: int, emoji: str, op: str
) -> Change:
    """The `reaction` event of a member adding or removing `emoji` (validated already).

    Raises MessageNotFoundError, MessageDeletedError, NotAMemberError,
    ChannelNotFoundError, MutedError, UnavailableError.
    """
    await _member_role(app, channel_id, user_id)
    await refuse_muted(app, channel_id, user_id)
    await _target(app, channel_id, message_id)
    stored, fields = reaction_payload(op, emoji)
    return _change(REACTION, user_id, channel_id, message_id, stored, fields, op, emoji=emoji)


async def check_reply_to(app: web.Application, channel_id: int, reply_to: int) -> None:
    """A reply's parent must be a message of the same channel (a deleted one too:
    the thread stays where it was). Raises MessageNotFoundError (`reply_to` in its
    details) or UnavailableError."""
    try:
        await _target(app, channel_id, reply_to, deleted_ok=True)
    except MessageNotFoundError:
        raise MessageNotFoundError(
            "reply_to is no message of this channel", details=[{"field": "reply_to"}]
        ) from None


async def refuse_muted(app: web.Application, channel_id: int, user_id: int) -> None:
    """A muted user cannot react, nor edit (new content): raises MutedError, on REST
    and on the multiplexed socket alike (which also checks its own copy of the mute
    first, in memory, as for a send). One primary-key read (`gateway.mutes`)."""
    try:
        await ensure_not_muted(app[PG_POOL], channel_id, user_id)
    except DEPENDENCY_ERRORS as exc:
        raise UnavailableError() from exc


async def apply_change(app: web.Application, change: Change) -> ChangeOutcome:
    """Run the change through the send script; see the module docstring.

    The message's Redis state is seeded from PostgreSQL first when the script
    asks (`noseed`: a reaction on a message whose state Redis does not hold).
    Raises MessageDeletedError, TooManyReactionsError, RateLimitedError,
    UnavailableError.
    """
    sender = app[SENDER]
    for _attempt in range(2):
        reply = await sender.send_change(**dataclasses.asdict(change))
        if reply.status == "noseed":
            await _seed_state(app, change.channel_id, change.message_id)
            continue
        if reply.status == "gone":
            raise MessageDeletedError()
        if reply.status == "full":
            limits = app[SETTINGS]
            raise TooManyReactionsError(
                details=[
                    {
                        "max_emojis": limits.reaction_max_emojis,
                        "max_per_user": limits.reaction_max_per_user,
                    }
                ]
            )
        return ChangeOutcome(change, reply.result, reply.count)
    raise UnavailableError()  # seeded, and unseeded again at once: Redis keeps losing it


async def _seed_state(app: web.Application, channel_id: int, message_id: int) -> None:
    """Load a message's stored reactions and deletion into its Redis state, unless a
    peer did meanwhile. Every accepted reaction goes through the state, so only
    what is persisted can be missing from a state that is gone (expired after
    RECENT_TTL_MS without a change, or lost with Redis data)."""
    try:
        stored = await reaction_state(app[PG_POOL], message_id)
        target = await find_target(app[PG_POOL], message_id)
        args: list[str | int] = [RECENT_TTL_MS, int(target is not None and target.deleted)]
        for reactor, emoji in stored:
            args += [reactor, emoji]
        await app[SCRIPTS].seed_message_state(
            keys=[app[KEYS].message_state(channel_id, message_id)], args=args, client=app[REDIS]
        )
    except DEPENDENCY_ERRORS as exc:
        raise UnavailableError() from exc


def _change(
    kind: str,
    user_id: int,
    channel_id: int,
    message_id: int,
    stored: bytes,
    fields: bytes,
    op: str,
    client_id: str | None = None,
    *,
    emoji: str = "",
) -> Change:
    tail = change_tail(
        kind=kind, user_id=user_id, channel_id=channel_id, message_id=message_id, payload=fields
    )
    return Change(kind, channel_id, user_id, message_id, client_id, stored, tail, op, emoji)


async def _member_role(
    app: web.Application, channel_id: int, user_id: int, *, admin_may: bool = False
) -> tuple[str | None, bool]:
    """The caller's role in the channel and whether they are an admin; raises
    NotAMemberError (unless `admin_may` and an admin) or ChannelNotFoundError."""
    try:
        access = await chat_access(app[PG_POOL], channel_id, user_id)
    except DEPENDENCY_ERRORS as exc:
        raise UnavailableError() from exc
    admin = access.user is not None and access.user.role == "admin"
    if not access.channel_exists:
        raise ChannelNotFoundError()
    if access.role is None and not (admin_may and admin):
        # A private channel or a direct message is not told to a non-member.
        if access.channel_kind != "public":
            raise ChannelNotFoundError()
        raise NotAMemberError()
    return access.role, admin


async def _target(
    app: web.Application, channel_id: int, message_id: int, *, deleted_ok: bool = False
) -> _Target:
    """The message `message_id` of the channel, from PostgreSQL or else the recent
    stream. A message of another channel is not found: its existence is not told.

    Raises MessageNotFoundError, MessageDeletedError, UnavailableError.
    """
    try:
        stored = await find_target(app[PG_POOL], message_id)
        if stored is None:
            target = await _recent_target(app, channel_id, message_id)
        elif stored.channel_id != channel_id or stored.kind != "message":
            target = None
        else:
            target = _Target(stored.user_id, stored.body_type, stored.deleted)
    except DEPENDENCY_ERRORS as exc:
        raise UnavailableError() from exc
    if target is None:
        raise MessageNotFoundError()
    if target.deleted and not deleted_ok:
        raise MessageDeletedError()
    return target


async def _recent_target(app: web.Application, channel_id: int, message_id: int) -> _Target | None:
    """The message in the channel's recent stream (sent, not persisted yet), or None.

    Reads newest first and stops at the first entry older than the message: ids
    grow with seqs, and a message not yet persisted is among the newest.
    """
    key = app[KEYS].channel_recent(channel_id)
    redis = app[REDIS]
    upper = "+"
    while True:
        entries = cast(
            "list[tuple[bytes, dict[bytes, bytes]]]",
            await redis.xrevrange(key, max=upper, min="-", count=_RECENT_PAGE),
        )
        for _entry_id, fields in entries:
            frame = fields.get(b"f", b"")
            try:
                found = frame_id(frame)
            except ValueError:
                continue
            if found < message_id:
                return None
            if found == message_id:
                return _recent_message(frame) if is_message_frame(frame) else None
        if len(entries) < _RECENT_PAGE:
            return None
        seq = int(entries[-1][0].partition(b"-")[0])
        if seq <= 1:
            return None
        upper = f"{seq - 1}-0"


def _recent_message(frame: bytes) -> _Target | None:
    try:
        decoded = orjson.loads(frame)
        body = decoded.get("body") or {}
        return _Target(int(decoded["user_id"]), body.get("type"), deleted=False)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None
