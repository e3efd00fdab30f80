"""`/api/v1/channels/{id}/messages/{message_id}*`: edit, delete, react, replies.

A change answers only once its event is durable in the stream (the send
script returned), as a socket's ack does; history shows it once the worker
has applied it. The rules are `gateway.message_changes`'.
"""

from __future__ import annotations

from aiohttp import web

from gateway.api.channels import why_not_a_member
from gateway.api.common import (
    MAX_ID,
    IntParam,
    caller,
    history_items,
    ok,
    path_id,
    read_body,
)
from gateway.api.docs import Auth, documented
from gateway.app_keys import PG_POOL
from gateway.message_changes import (
    Change,
    apply_change,
    delete_change,
    edit_change,
    reaction_change,
)
from shared.db import channels
from shared.db.messages import list_replies
from shared.errors import (
    ChannelNotFoundError,
    MessageDeletedError,
    MessageNotFoundError,
    NotAMemberError,
    NotEditableError,
    NotYourMessageError,
    RateLimitedError,
    TooManyReactionsError,
    UnavailableError,
)
from shared.responses import ChangeJson, HistoryPageJson
from shared.wire import EditBody, ReactionBody

REPLIES_LIMIT = IntParam("limit", 1, 200, 50, "Replies per page.")
REPLIES_AFTER = IntParam("after_seq", 0, MAX_ID, 0, "Replies with seq above it, oldest first.")

_CHANGE_ERRORS = (
    ChannelNotFoundError,
    NotAMemberError,
    MessageNotFoundError,
    MessageDeletedError,
    RateLimitedError,
    UnavailableError,
)


async def _answer(request: web.Request, message: str, change: Change) -> web.Response:
    """Apply the change; the answer once its event is durable."""
    outcome = await apply_change(request.app, change)
    result = outcome.result
    data: ChangeJson = {
        "channel_id": change.channel_id,
        "message_id": change.message_id,
        "id": None if result is None else result.message_id,
        "seq": None if result is None else result.seq,
    }
    if outcome.count is not None:
        data["count"] = outcome.count
    return ok(message, data)


def _ids(request: web.Request) -> tuple[int, int]:
    """The path's channel id and message id."""
    return path_id(request, "id"), path_id(request, "message_id")


@documented(
    "Edit one's own text message",
    description="The body becomes the new version (a `text` body, validated like a message's); "
    "every subscriber gets a `message_edited` event in the channel's order. Answered once the "
    "event is durable; history shows it once persisted, with `edited_at`.",
    body=EditBody,
    data=ChangeJson,
    errors=(*_CHANGE_ERRORS, NotYourMessageError, NotEditableError),
    auth=Auth.REQUIRED,
)
async def edit_message(request: web.Request) -> web.Response:
    claims = await caller(request)
    channel_id, message_id = _ids(request)
    body = await read_body(request, EditBody)
    change = await edit_change(
        request.app, claims.user_id, channel_id, message_id, body.body, body.client_id
    )
    return await _answer(request, "message edited", change)


@documented(
    "Delete a message",
    description="Its author, a moderator or owner of the channel, or an admin. The message "
    "becomes a tombstone at its seq (`body` `{}`, `deleted_at`, no reactions); every subscriber "
    "gets a `message_deleted` event. Answered once the event is durable.",
    data=ChangeJson,
    errors=(*_CHANGE_ERRORS, NotYourMessageError),
    auth=Auth.REQUIRED,
)
async def delete_message(request: web.Request) -> web.Response:
    claims = await caller(request)
    channel_id, message_id = _ids(request)
    change = await delete_change(request.app, claims.user_id, channel_id, message_id)
    return await _answer(request, "message deleted", change)


@documented(
    "Add or remove a reaction, members only",
    description="`emoji` is one emoji or a `:shortcode:` (see the README). Adding one the "
    "caller has, or removing one they have not, changes nothing: `id` and `seq` are null and "
    "no event is sent. Otherwise every subscriber gets a `reaction` event with the emoji's "
    "`count`.",
    body=ReactionBody,
    data=ChangeJson,
    errors=(*_CHANGE_ERRORS, TooManyReactionsError),
    auth=Auth.REQUIRED,
)
async def react_to_message(request: web.Request) -> web.Response:
    claims = await caller(request)
    channel_id, message_id = _ids(request)
    body = await read_body(request, ReactionBody)
    change = await reaction_change(
        request.app, claims.user_id, channel_id, message_id, body.emoji, body.op
    )
    return await _answer(request, "reaction applied", change)


@documented(
    "A message's replies, members only",
    description="Oldest first after `after_seq`, in the history's item shape; `next_cursor` is "
    "the `after_seq` of the next page. From PostgreSQL only, like history.",
    data=HistoryPageJson,
    query=(REPLIES_LIMIT, REPLIES_AFTER),
    errors=(ChannelNotFoundError, NotAMemberError),
    auth=Auth.REQUIRED,
)
async def list_message_replies(request: web.Request) -> web.Response:
    claims = await caller(request)
    pool = request.app[PG_POOL]
    channel_id, message_id = _ids(request)
    limit, after_seq = REPLIES_LIMIT.query(request), REPLIES_AFTER.query(request)
    if await channels.member_role(pool, channel_id, claims.user_id) is None:
        raise await why_not_a_member(pool, channel_id)
    found = await list_replies(pool, channel_id, message_id, after_seq, limit)
    data: HistoryPageJson = {
        "messages": await history_items(pool, found, claims.user_id),
        "next_cursor": found[-1].seq if len(found) == limit else None,
    }
    return ok("replies retrieved", data)
