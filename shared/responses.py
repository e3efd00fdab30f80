"""The JSON shapes the REST API answers with, as TypedDicts. No I/O.

Each shape is written once: the functions that build a response's `data`
(`gateway/api/common.py`, `shared/wire.py`) are typed with it, so mypy refuses a
key too many or too few, and the OpenAPI document takes its schemas from the
same classes through pydantic. `extra="forbid"` puts `additionalProperties:
false` in those schemas, so a response that grew a field (an e-mail address in
a public listing) fails the schema checks of the test suite.

They are typing only: building the JSON stays plain dicts and orjson.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import ConfigDict, Field, with_config

# pydantic reads TypedDicts from typing_extensions on Python < 3.12.
from typing_extensions import TypedDict

from shared.errors import ErrorCode

_CLOSED = ConfigDict(extra="forbid")

Timestamp = Annotated[
    str,
    Field(
        description="UTC, ISO 8601 with milliseconds: 2025-07-19T10:30:00.123Z",
        json_schema_extra={"format": "date-time"},
    ),
]
UserRole = Annotated[str, Field(json_schema_extra={"enum": ["user", "admin"]})]
ChannelKind = Annotated[str, Field(json_schema_extra={"enum": ["public", "private", "dm"]})]
MemberRole = Annotated[str, Field(json_schema_extra={"enum": ["owner", "moderator", "member"]})]
Token = Annotated[str, Field(description="A JWT (HS256); send it as `Authorization: Bearer`.")]


@with_config(_CLOSED)
class PublicUserJson(TypedDict):
    """A user as anyone sees them: never the e-mail or the role."""

    id: int
    name: str
    username: str
    avatar_url: str | None
    created_at: Timestamp


@with_config(_CLOSED)
class OwnUserJson(TypedDict):
    """A user as they see themselves (and as admins see everyone)."""

    id: int
    name: str
    username: str
    avatar_url: str | None
    created_at: Timestamp
    email: str
    role: UserRole


@with_config(_CLOSED)
class ChannelJson(TypedDict):
    id: int
    name: str
    description: str
    image_url: str | None
    created_at: Timestamp
    kind: ChannelKind
    private: Annotated[bool, Field(description="Hidden from non-members: `private` or `dm`.")]


@with_config(_CLOSED)
class MemberJson(TypedDict):
    id: int
    name: str
    username: str
    avatar_url: str | None
    role: MemberRole
    joined_at: Timestamp


@with_config(_CLOSED)
class ChannelWithMembersJson(TypedDict):
    """A channel and its first members."""

    id: int
    name: str
    description: str
    image_url: str | None
    created_at: Timestamp
    kind: ChannelKind
    private: Annotated[bool, Field(description="Hidden from non-members: `private` or `dm`.")]
    members: list[MemberJson]


@with_config(_CLOSED)
class ChannelRefJson(TypedDict):
    channel_id: int


@with_config(_CLOSED)
class TicketJson(TypedDict):
    """Opens one chat socket as `?ticket=`, once, within `expires_in` seconds."""

    ticket: str
    expires_in: int


@with_config(_CLOSED)
class AuthorJson(TypedDict):
    """A message's author as embedded in every message frame: public fields only."""

    id: int
    name: str
    username: str
    avatar_url: str | None


@with_config(_CLOSED)
class MessageJson(TypedDict):
    """A message, in exactly the live socket frame's shape."""

    type: Literal["message"]
    id: int
    seq: int
    created_at: Timestamp
    user_id: int
    channel_id: int
    body: Annotated[
        dict[str, Any],
        Field(description="The frame as sent (`type` `text` or `file`), without `client_id`."),
    ]
    client_id: str | None
    user: AuthorJson
    reply_to: NotRequired[Annotated[int, Field(description="The message this one answers.")]]
    edited_at: NotRequired[Annotated[Timestamp, Field(description="When last edited.")]]
    deleted_at: NotRequired[
        Annotated[Timestamp, Field(description="When deleted; `body` is then `{}`.")]
    ]


@with_config(_CLOSED)
class ReactionJson(TypedDict):
    """One emoji's reactions on a message."""

    emoji: str
    count: int
    me: Annotated[bool, Field(description="Whether the caller is among them.")]


@with_config(_CLOSED)
class HistoryMessageJson(MessageJson):
    """A history item: the message frame's fields (the latest version; `body` `{}`
    once deleted), with reactions and reply count."""

    reactions: Annotated[
        list[ReactionJson], Field(description="Per emoji, in order of first use; [] once deleted.")
    ]
    reply_count: Annotated[int, Field(description="Replies not deleted.")]


@with_config(_CLOSED)
class ChangeJson(TypedDict):
    """A change to a message, durable in the stream: the event's id and seq."""

    channel_id: int
    message_id: int
    id: Annotated[
        int | None, Field(description="The event's id; null when nothing changed (no event).")
    ]
    seq: Annotated[int | None, Field(description="The event's seq; null when nothing changed.")]
    count: NotRequired[Annotated[int, Field(description="A reaction: the emoji's count now.")]]


@with_config(_CLOSED)
class HistoryPageJson(TypedDict):
    """A page of history or of a message's replies."""

    messages: list[HistoryMessageJson]
    next_cursor: Annotated[
        int | None,
        Field(description="Pass it as the same parameter for the next page; null on the last."),
    ]


@with_config(_CLOSED)
class MessagePageJson(TypedDict):
    messages: list[MessageJson]
    next_cursor: Annotated[
        int | None,
        Field(description="Pass it as the same parameter for the next page; null on the last."),
    ]


@with_config(_CLOSED)
class ReadMarkerJson(TypedDict):
    """The caller's stored read marker after a mark: where it ended up."""

    channel_id: int
    last_read_seq: int


@with_config(_CLOSED)
class PresenceJson(TypedDict):
    """Who is online in a channel: `users` is null above PRESENCE_MAX_LISTED (counts only)."""

    channel_id: int
    online_count: int
    users: list[AuthorJson] | None


@with_config(_CLOSED)
class LastMessageJson(TypedDict):
    """A channel's newest stored message, as a channel list shows it."""

    id: int
    seq: int
    user: AuthorJson
    type: Annotated[str, Field(description="The body's type: `text` or `file`.")]
    preview: Annotated[
        str, Field(description="The first 100 characters of a text, or a file's `filename`.")
    ]
    created_at: Timestamp


@with_config(_CLOSED)
class MyChannelJson(TypedDict):
    """One of the caller's channels, with their read state."""

    id: int
    name: str
    description: str
    image_url: str | None
    created_at: Timestamp
    kind: ChannelKind
    private: Annotated[bool, Field(description="Hidden from non-members: `private` or `dm`.")]
    other_user: Annotated[
        AuthorJson | None, Field(description="A direct message's other user; else null.")
    ]
    role: MemberRole
    last_seq: Annotated[
        int,
        Field(description="The channel's last seq, messages not yet persisted included."),
    ]
    last_read_seq: int
    unread_count: Annotated[int, Field(description="`last_seq - last_read_seq`.")]
    last_message: LastMessageJson | None


@with_config(_CLOSED)
class SuccessEnvelope(TypedDict):
    """Every successful REST answer but `GET /`, `/metrics` and the OpenAPI document.

    Each operation's document narrows `data` to its own shape.
    """

    status: Literal["success"]
    message: str
    data: Any


@with_config(_CLOSED)
class FieldErrorJson(TypedDict):
    """One offending field of a refused body."""

    field: str
    message: str
    type: str


@with_config(_CLOSED)
class ErrorEnvelope(TypedDict):
    """Every REST error; `errors` lists the fields of an `invalid_body`."""

    status: Literal["error"]
    message: str
    data: None
    code: ErrorCode
    errors: NotRequired[list[FieldErrorJson]]


# --- Governance: roles, moderation, invitations, direct messages ---------------


@with_config(_CLOSED)
class MemberRoleJson(TypedDict):
    """A member's role after a change (a transfer answers the new owner)."""

    channel_id: int
    user_id: int
    role: MemberRole


@with_config(_CLOSED)
class ChannelUserJson(TypedDict):
    """The channel and the user an action was about (a kick, an unban, an unmute)."""

    channel_id: int
    user_id: int


@with_config(_CLOSED)
class RestrictionJson(TypedDict):
    """A ban or mute in force; `until` null: a ban without end."""

    channel_id: int
    user_id: int
    until: Timestamp | None


@with_config(_CLOSED)
class ListedRestrictionJson(TypedDict):
    """A ban or mute in force as moderators list them."""

    user_id: int
    username: str
    by: Annotated[int | None, Field(description="Who set it; null when that account is gone.")]
    until: Timestamp | None
    created_at: Timestamp


@with_config(_CLOSED)
class InvitationJson(TypedDict):
    """A pending invitation into a private channel."""

    channel: ChannelJson
    user_id: int
    username: str
    invited_by: Annotated[
        int | None, Field(description="Who invited; null when that account is gone.")
    ]
    created_at: Timestamp


@with_config(_CLOSED)
class DirectChannelJson(TypedDict):
    """A direct message: a channel of kind `dm`, and the other user in it."""

    id: int
    name: str
    description: str
    image_url: str | None
    created_at: Timestamp
    kind: ChannelKind
    private: bool
    other_user: AuthorJson
