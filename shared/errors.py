"""Typed errors and the one table of wire codes.

Handlers raise these; one middleware (REST) and the chat socket turn them into
the envelope `{"status": "error", "message", "data": null, "code"}` or the
socket's error frame. Each code has exactly one HTTP status and one WebSocket
close code, listed in `ERROR_TABLE` and in the README.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import NamedTuple


class ErrorCode(StrEnum):
    INVALID_JSON = "invalid_json"
    INVALID_BODY = "invalid_body"
    INVALID_PARAMETER = "invalid_parameter"
    MESSAGE_TOO_LARGE = "message_too_large"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    MISSING_TOKEN = "missing_token"
    INVALID_TOKEN = "invalid_token"
    INVALID_CREDENTIALS = "invalid_credentials"
    WRONG_PASSWORD = "wrong_password"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    NOT_A_MEMBER = "not_a_member"
    CHANNEL_NOT_FOUND = "channel_not_found"
    USER_NOT_FOUND = "user_not_found"
    ROUTE_NOT_FOUND = "route_not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    USERNAME_TAKEN = "username_taken"
    EMAIL_TAKEN = "email_taken"
    CHANNEL_NAME_TAKEN = "channel_name_taken"
    ALREADY_MEMBER = "already_member"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_SOCKETS = "too_many_sockets"
    UNAVAILABLE = "unavailable"
    DRAINING = "draining"
    SINCE_AHEAD = "since_ahead"
    HISTORY_GAP = "history_gap"
    CHANNEL_REWOUND = "channel_rewound"
    NOT_SUBSCRIBED = "not_subscribed"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    MESSAGE_NOT_FOUND = "message_not_found"
    MESSAGE_DELETED = "message_deleted"
    NOT_YOUR_MESSAGE = "not_your_message"
    NOT_EDITABLE = "not_editable"
    TOO_MANY_REACTIONS = "too_many_reactions"
    FORBIDDEN_ROLE = "forbidden_role"
    BANNED = "banned"
    MUTED = "muted"
    MEMBER_NOT_FOUND = "member_not_found"
    DIRECT_MESSAGE = "direct_message"
    NOT_PRIVATE = "not_private"
    ALREADY_INVITED = "already_invited"
    INVITATION_NOT_FOUND = "invitation_not_found"
    TOO_MANY_INVITATIONS = "too_many_invitations"
    INTERNAL = "internal"


class CloseCode(IntEnum):
    """WebSocket close codes. 44xx mirror the HTTP status; browsers can read them."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    INVALID_PAYLOAD = 1007
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_REQUEST = 4400
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    NOT_FOUND = 4404
    TOO_SLOW = 4408
    RATE_LIMITED = 4429


class ErrorSpec(NamedTuple):
    status: int
    close_code: CloseCode
    message: str


ERROR_TABLE: dict[ErrorCode, ErrorSpec] = {
    ErrorCode.INVALID_JSON: ErrorSpec(400, CloseCode.BAD_REQUEST, "Malformed JSON"),
    ErrorCode.INVALID_BODY: ErrorSpec(422, CloseCode.BAD_REQUEST, "Invalid request body"),
    ErrorCode.INVALID_PARAMETER: ErrorSpec(422, CloseCode.BAD_REQUEST, "Invalid parameter"),
    ErrorCode.MESSAGE_TOO_LARGE: ErrorSpec(413, CloseCode.MESSAGE_TOO_BIG, "Message too large"),
    ErrorCode.PAYLOAD_TOO_LARGE: ErrorSpec(413, CloseCode.MESSAGE_TOO_BIG, "Request too large"),
    ErrorCode.MISSING_TOKEN: ErrorSpec(400, CloseCode.BAD_REQUEST, "Missing or malformed JWT"),
    ErrorCode.INVALID_TOKEN: ErrorSpec(401, CloseCode.UNAUTHORIZED, "Invalid or expired JWT"),
    ErrorCode.INVALID_CREDENTIALS: ErrorSpec(
        401, CloseCode.UNAUTHORIZED, "Invalid identity or password"
    ),
    ErrorCode.WRONG_PASSWORD: ErrorSpec(403, CloseCode.FORBIDDEN, "Old password is incorrect"),
    ErrorCode.ORIGIN_NOT_ALLOWED: ErrorSpec(403, CloseCode.FORBIDDEN, "Origin not allowed"),
    ErrorCode.NOT_A_MEMBER: ErrorSpec(
        403, CloseCode.FORBIDDEN, "You are not a member of this channel"
    ),
    ErrorCode.CHANNEL_NOT_FOUND: ErrorSpec(404, CloseCode.NOT_FOUND, "Channel not found"),
    ErrorCode.USER_NOT_FOUND: ErrorSpec(404, CloseCode.NOT_FOUND, "User not found"),
    ErrorCode.ROUTE_NOT_FOUND: ErrorSpec(404, CloseCode.NOT_FOUND, "Not found"),
    ErrorCode.METHOD_NOT_ALLOWED: ErrorSpec(405, CloseCode.BAD_REQUEST, "Method not allowed"),
    ErrorCode.USERNAME_TAKEN: ErrorSpec(409, CloseCode.BAD_REQUEST, "Username already taken"),
    ErrorCode.EMAIL_TAKEN: ErrorSpec(409, CloseCode.BAD_REQUEST, "Email already registered"),
    ErrorCode.CHANNEL_NAME_TAKEN: ErrorSpec(
        409, CloseCode.BAD_REQUEST, "A channel with this name already exists"
    ),
    ErrorCode.ALREADY_MEMBER: ErrorSpec(
        409, CloseCode.BAD_REQUEST, "You are already a member of this channel"
    ),
    ErrorCode.RATE_LIMITED: ErrorSpec(429, CloseCode.RATE_LIMITED, "Too many requests"),
    ErrorCode.TOO_MANY_SOCKETS: ErrorSpec(
        429, CloseCode.RATE_LIMITED, "Too many open sockets for this user"
    ),
    ErrorCode.UNAVAILABLE: ErrorSpec(
        503, CloseCode.TRY_AGAIN_LATER, "Service temporarily unavailable"
    ),
    ErrorCode.DRAINING: ErrorSpec(
        503, CloseCode.SERVICE_RESTART, "Server restarting, reconnect to resume"
    ),
    ErrorCode.SINCE_AHEAD: ErrorSpec(
        409, CloseCode.BAD_REQUEST, "since is ahead of the channel's last message"
    ),
    ErrorCode.HISTORY_GAP: ErrorSpec(
        410, CloseCode.BAD_REQUEST, "Some messages could not be replayed; fetch them from history"
    ),
    ErrorCode.CHANNEL_REWOUND: ErrorSpec(
        410,
        CloseCode.BAD_REQUEST,
        "The channel's sequence went back (the broker lost messages); replaying from history",
    ),
    ErrorCode.NOT_SUBSCRIBED: ErrorSpec(
        409, CloseCode.BAD_REQUEST, "Subscribe to this channel first"
    ),
    ErrorCode.TOO_MANY_SUBSCRIPTIONS: ErrorSpec(
        429, CloseCode.RATE_LIMITED, "Too many channels subscribed on this socket"
    ),
    ErrorCode.MESSAGE_NOT_FOUND: ErrorSpec(
        404, CloseCode.NOT_FOUND, "No such message in this channel"
    ),
    ErrorCode.MESSAGE_DELETED: ErrorSpec(409, CloseCode.BAD_REQUEST, "This message was deleted"),
    ErrorCode.NOT_YOUR_MESSAGE: ErrorSpec(
        403, CloseCode.FORBIDDEN, "Only its author may do this to a message"
    ),
    ErrorCode.NOT_EDITABLE: ErrorSpec(
        422, CloseCode.BAD_REQUEST, "Only text messages can be edited, into text"
    ),
    ErrorCode.TOO_MANY_REACTIONS: ErrorSpec(
        409, CloseCode.BAD_REQUEST, "This message carries as many reactions as it may"
    ),
    ErrorCode.FORBIDDEN_ROLE: ErrorSpec(
        403, CloseCode.FORBIDDEN, "Your role in this channel does not allow this"
    ),
    ErrorCode.BANNED: ErrorSpec(403, CloseCode.FORBIDDEN, "You are banned from this channel"),
    ErrorCode.MUTED: ErrorSpec(403, CloseCode.FORBIDDEN, "You are muted in this channel"),
    ErrorCode.MEMBER_NOT_FOUND: ErrorSpec(
        404, CloseCode.NOT_FOUND, "That user is not a member of this channel"
    ),
    ErrorCode.DIRECT_MESSAGE: ErrorSpec(
        409, CloseCode.BAD_REQUEST, "A direct message has exactly its two users and no roles"
    ),
    ErrorCode.NOT_PRIVATE: ErrorSpec(
        409, CloseCode.BAD_REQUEST, "Public channels are joined, not invited to"
    ),
    ErrorCode.ALREADY_INVITED: ErrorSpec(
        409, CloseCode.BAD_REQUEST, "That user is already invited to this channel"
    ),
    ErrorCode.INVITATION_NOT_FOUND: ErrorSpec(404, CloseCode.NOT_FOUND, "Invitation not found"),
    ErrorCode.TOO_MANY_INVITATIONS: ErrorSpec(
        429, CloseCode.RATE_LIMITED, "Too many pending invitations"
    ),
    ErrorCode.INTERNAL: ErrorSpec(500, CloseCode.INTERNAL_ERROR, "Internal server error"),
}


class AppError(Exception):
    """An error with a stable wire code. `message` and `details` reach the client."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(
        self,
        message: str | None = None,
        *,
        details: list[dict[str, object]] | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or ERROR_TABLE[self.code].message
        self.details = details
        self.retry_after = retry_after
        self.headers = headers or {}
        super().__init__(self.message)

    @property
    def status(self) -> int:
        return ERROR_TABLE[self.code].status

    @property
    def close_code(self) -> CloseCode:
        return ERROR_TABLE[self.code].close_code


def _error(name: str, code: ErrorCode) -> type[AppError]:
    return type(name, (AppError,), {"code": code, "__doc__": ERROR_TABLE[code].message})


InvalidJsonError = _error("InvalidJsonError", ErrorCode.INVALID_JSON)
InvalidBodyError = _error("InvalidBodyError", ErrorCode.INVALID_BODY)
InvalidParameterError = _error("InvalidParameterError", ErrorCode.INVALID_PARAMETER)
MessageTooLargeError = _error("MessageTooLargeError", ErrorCode.MESSAGE_TOO_LARGE)
PayloadTooLargeError = _error("PayloadTooLargeError", ErrorCode.PAYLOAD_TOO_LARGE)
MissingTokenError = _error("MissingTokenError", ErrorCode.MISSING_TOKEN)
InvalidTokenError = _error("InvalidTokenError", ErrorCode.INVALID_TOKEN)
InvalidCredentialsError = _error("InvalidCredentialsError", ErrorCode.INVALID_CREDENTIALS)
WrongPasswordError = _error("WrongPasswordError", ErrorCode.WRONG_PASSWORD)
OriginNotAllowedError = _error("OriginNotAllowedError", ErrorCode.ORIGIN_NOT_ALLOWED)
NotAMemberError = _error("NotAMemberError", ErrorCode.NOT_A_MEMBER)
ChannelNotFoundError = _error("ChannelNotFoundError", ErrorCode.CHANNEL_NOT_FOUND)
UserNotFoundError = _error("UserNotFoundError", ErrorCode.USER_NOT_FOUND)
RouteNotFoundError = _error("RouteNotFoundError", ErrorCode.ROUTE_NOT_FOUND)
MethodNotAllowedError = _error("MethodNotAllowedError", ErrorCode.METHOD_NOT_ALLOWED)
UsernameTakenError = _error("UsernameTakenError", ErrorCode.USERNAME_TAKEN)
EmailTakenError = _error("EmailTakenError", ErrorCode.EMAIL_TAKEN)
ChannelNameTakenError = _error("ChannelNameTakenError", ErrorCode.CHANNEL_NAME_TAKEN)
AlreadyMemberError = _error("AlreadyMemberError", ErrorCode.ALREADY_MEMBER)
RateLimitedError = _error("RateLimitedError", ErrorCode.RATE_LIMITED)
TooManySocketsError = _error("TooManySocketsError", ErrorCode.TOO_MANY_SOCKETS)
UnavailableError = _error("UnavailableError", ErrorCode.UNAVAILABLE)
DrainingError = _error("DrainingError", ErrorCode.DRAINING)
SinceAheadError = _error("SinceAheadError", ErrorCode.SINCE_AHEAD)
HistoryGapError = _error("HistoryGapError", ErrorCode.HISTORY_GAP)
ChannelRewoundError = _error("ChannelRewoundError", ErrorCode.CHANNEL_REWOUND)
NotSubscribedError = _error("NotSubscribedError", ErrorCode.NOT_SUBSCRIBED)
TooManySubscriptionsError = _error("TooManySubscriptionsError", ErrorCode.TOO_MANY_SUBSCRIPTIONS)
MessageNotFoundError = _error("MessageNotFoundError", ErrorCode.MESSAGE_NOT_FOUND)
MessageDeletedError = _error("MessageDeletedError", ErrorCode.MESSAGE_DELETED)
NotYourMessageError = _error("NotYourMessageError", ErrorCode.NOT_YOUR_MESSAGE)
NotEditableError = _error("NotEditableError", ErrorCode.NOT_EDITABLE)
TooManyReactionsError = _error("TooManyReactionsError", ErrorCode.TOO_MANY_REACTIONS)
ForbiddenRoleError = _error("ForbiddenRoleError", ErrorCode.FORBIDDEN_ROLE)
BannedError = _error("BannedError", ErrorCode.BANNED)
MutedError = _error("MutedError", ErrorCode.MUTED)
MemberNotFoundError = _error("MemberNotFoundError", ErrorCode.MEMBER_NOT_FOUND)
DirectMessageError = _error("DirectMessageError", ErrorCode.DIRECT_MESSAGE)
NotPrivateError = _error("NotPrivateError", ErrorCode.NOT_PRIVATE)
AlreadyInvitedError = _error("AlreadyInvitedError", ErrorCode.ALREADY_INVITED)
InvitationNotFoundError = _error("InvitationNotFoundError", ErrorCode.INVITATION_NOT_FOUND)
TooManyInvitationsError = _error("TooManyInvitationsError", ErrorCode.TOO_MANY_INVITATIONS)
InternalError = _error("InternalError", ErrorCode.INTERNAL)
