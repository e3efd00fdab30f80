"""`GET /api/v1/search`: full-text search of the messages in the caller's channels."""

from __future__ import annotations

from aiohttp import web

from gateway.api.channels import why_not_a_member
from gateway.api.common import MAX_ID, IntParam, TextParam, caller, message_page, ok
from gateway.api.docs import Auth, documented
from gateway.app_keys import PG_POOL
from shared.db import channels, messages
from shared.errors import ChannelNotFoundError, NotAMemberError
from shared.responses import MessagePageJson

# Enough for any phrase a person types; it bounds the query's parse and the
# number of terms the index is asked for (each word is one index lookup).
SEARCH_QUERY_MAX_CHARS = 256

QUERY = TextParam(
    "q",
    SEARCH_QUERY_MAX_CHARS,
    f"What to find, at most {SEARCH_QUERY_MAX_CHARS} characters, in web search syntax: words "
    '(all must occur), "a phrase", `or`, `-word` to exclude.',
)
SEARCH_LIMIT = IntParam("limit", 1, 100, 20, "Messages per page.")
BEFORE_ID = IntParam("before_id", 1, MAX_ID, None, "Messages with an id below it (older).")
CHANNEL_ID = IntParam("channel_id", 1, MAX_ID, None, "Only this channel (the caller's).")


@documented(
    "Search the messages of the caller's channels, newest first",
    description="Full text, in every language alike: words are matched whole and regardless "
    "of case, not stemmed. Only channels the caller is a member of are searched; with "
    "`channel_id`, only that one (`not_a_member` if the caller is not in it). A query with "
    "no word in it (only punctuation or operators) finds nothing. Read from PostgreSQL "
    "only, like history. Each message has the live frame's shape.",
    data=MessagePageJson,
    query=(QUERY, SEARCH_LIMIT, BEFORE_ID, CHANNEL_ID),
    errors=(ChannelNotFoundError, NotAMemberError),
    auth=Auth.REQUIRED,
)
async def search(request: web.Request) -> web.Response:
    """Up to `limit` matching messages below `before_id`, newest first; `next_cursor` is
    the `before_id` of the next page, or null on the last."""
    claims = await caller(request)
    pool = request.app[PG_POOL]
    query = QUERY.query(request)
    limit = SEARCH_LIMIT.query(request)
    before_id = BEFORE_ID.query(request)
    channel_id = CHANNEL_ID.query(request)
    if (
        channel_id is not None
        and await channels.member_role(pool, channel_id, claims.user_id) is None
    ):
        raise await why_not_a_member(pool, channel_id)
    found = await messages.search_messages(
        pool, claims.user_id, query, channel_id=channel_id, before_id=before_id, limit=limit
    )
    next_cursor = found[-1].id if len(found) == limit else None
    return ok("messages found", message_page(found, next_cursor))
