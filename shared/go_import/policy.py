"""What becomes of each Go user, channel and membership: the import's policy. No I/O.

The Go server accepted data this service refuses: empty and duplicate
usernames and e-mails, empty passwords, duplicate channel names, duplicate
memberships, rows pointing at nothing. `plan` decides, row by row, what is
written instead and records a `Change` for each decision. Field rules are the
wire models' own (`EditUserBody`, `NewChannelBody`), so what sign-up and
channel creation refuse, the import refuses too.

Rows the target already has of its own (not from this import) are never
changed: a Go row that would take one of their usernames, e-mails or channel
names is a collision, and the import refuses to start (`Plan.collisions`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pydantic import BaseModel, ValidationError

from shared.db.go_source import Authorship, GoChannel, GoMembership, GoUser
from shared.go_import.report import AT_START as _AT_START
from shared.go_import.report import Change
from shared.wire import EditUserBody, NewChannelBody

# What the Go server wrote: bcrypt, `$2a$` with cost 10; any bcrypt variant verifies here.
_BCRYPT_HASH = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
_NAME_LIMIT = 100
_USERNAME_LIMIT = 32
_CHANNEL_NAME_LIMIT = 64
_DESCRIPTION_LIMIT = 500
# `.invalid` is reserved (RFC 2606): such an address can never reach anyone.
_SYNTHETIC_EMAIL = "go-user-{}@import.invalid"
_GO_ADMIN = "admin"
_GO_USER = "user"


@dataclass(frozen=True, slots=True)
class TargetState:
    """The target's own rows (not from an import), as far as planning needs them."""

    user_ids: frozenset[int] = frozenset()
    usernames: frozenset[str] = frozenset()  # lower-cased
    emails: frozenset[str] = frozenset()  # lower-cased
    channel_ids: frozenset[int] = frozenset()
    channel_names: frozenset[str] = frozenset()  # lower-cased
    next_user_id: int = 1  # what the users sequence would hand out next
    next_channel_id: int = 1


@dataclass(frozen=True, slots=True)
class NewUser:
    go_id: int
    id: int
    name: str
    username: str
    email: str
    password: str  # the Go bcrypt hash, or one that never verifies
    avatar_url: str | None
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class NewChannel:
    go_id: int
    id: int
    name: str
    description: str
    image_url: str | None
    created_by: int | None
    created_at: dt.datetime
    message_count: int


@dataclass(frozen=True, slots=True)
class NewMembership:
    go_ids: tuple[int, ...]  # every Go row merged into it
    channel_id: int
    user_id: int
    role: str
    joined_at: dt.datetime


@dataclass(slots=True)
class Plan:
    users: list[NewUser] = field(default_factory=list)
    channels: list[NewChannel] = field(default_factory=list)
    memberships: list[NewMembership] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    collisions: list[str] = field(default_factory=list)

    def user_ids(self) -> dict[int, int]:
        return {user.go_id: user.id for user in self.users}

    def channel_ids(self) -> dict[int, int]:
        return {channel.go_id: channel.id for channel in self.channels}


@dataclass(frozen=True, slots=True)
class GoData:
    """The Go rows planning reads (up to the frontier)."""

    users: list[GoUser]
    channels: list[GoChannel]
    memberships: list[GoMembership]
    message_counts: dict[int, int]  # Go channel id -> messages
    authorship: list[Authorship]


def plan(
    go: GoData, target: TargetState, *, started_at: dt.datetime, locked_hash: Callable[[], str]
) -> Plan:
    """Decide every user, channel and membership row; see the module docstring.

    `locked_hash()` gives a password hash that never verifies, for accounts
    without a usable Go password.
    """
    result = Plan()
    merged = _merge(go)
    _plan_users(go, target, started_at, locked_hash, result)
    _plan_channels(go, target, _owners(merged), started_at, result)
    _plan_memberships(go, merged, started_at, result)
    _report_non_members(go, merged, result)
    return result


def is_bcrypt_hash(value: str) -> bool:
    return _BCRYPT_HASH.fullmatch(value) is not None


# --- users ---------------------------------------------------------------------


def _plan_users(
    go: GoData,
    target: TargetState,
    started_at: dt.datetime,
    locked_hash: Callable[[], str],
    result: Plan,
) -> None:
    known = {user.id for user in go.users}
    missing = sorted({a.user_id for a in go.authorship} - known)
    written: dict[int, int] = defaultdict(int)
    for a in go.authorship:
        written[a.user_id] += a.count
    ids = _IdAssigner(
        "user", target.user_ids, target.next_user_id, [*known, *missing], result.changes
    )
    usernames = _UniqueNames(target.usernames)
    emails = _UniqueNames(target.emails)
    invalid_fields = {user.id: _invalid_fields(EditUserBody, _profile(user)) for user in go.users}
    # The lowest Go id keeps a contested username or e-mail: claim them all first.
    for user in go.users:
        if "username" not in invalid_fields[user.id]:
            usernames.claim(user.username, user.id, f"user {user.id}", result.collisions)
        if "email" not in invalid_fields[user.id]:
            emails.claim(user.email, user.id, f"user {user.id}", result.collisions)
    for user in go.users:
        changes = _UserChanges(user.id, result.changes)
        invalid = invalid_fields[user.id]
        username = _username(user, invalid, usernames, changes)
        email = _email(user, invalid, emails, changes)
        name = _user_name(user.name, username, invalid, changes)
        avatar = _optional_url(user.avatar_url, "avatar_url" in invalid)
        if avatar is None and user.avatar_url:
            changes.add("avatar_invalid", f"{user.avatar_url!r} -> none")
        password = user.password
        if not password:
            changes.add("password_empty", "cannot log in until reset")
            password = locked_hash()
        elif not is_bcrypt_hash(password):
            changes.add("password_not_bcrypt", "cannot log in until reset")
            password = locked_hash()
        created_at = user.created_at
        if created_at is None:
            changes.add("user_created_at_missing", _AT_START)
            created_at = started_at
        result.users.append(
            NewUser(
                user.id, ids.assign(user.id), name, username, email, password, avatar, created_at
            )
        )
    for go_id in missing:
        username = usernames.generate(f"go_user_{go_id}", _USERNAME_LIMIT)
        email = emails.generate(_SYNTHETIC_EMAIL.format(go_id), 254)
        result.changes.append(
            Change(
                "users",
                go_id,
                "author_missing",
                f"wrote {written[go_id]:,} messages; created as {username!r}, who cannot log in",
            )
        )
        result.users.append(
            NewUser(
                go_id,
                ids.assign(go_id),
                "Deleted user",
                username,
                email,
                locked_hash(),
                None,
                started_at,
            )
        )


def _profile(user: GoUser) -> dict[str, object]:
    return {
        "name": user.name,
        "username": user.username,
        "email": user.email,
        "avatar_url": user.avatar_url or None,
    }


def _username(
    user: GoUser, invalid: set[str], usernames: _UniqueNames, changes: _UserChanges
) -> str:
    if not user.username:
        chosen = usernames.generate(f"go_user_{user.id}", _USERNAME_LIMIT)
        changes.add("username_empty", f"-> {chosen!r}")
    elif "username" in invalid:
        chosen = usernames.generate(f"go_user_{user.id}", _USERNAME_LIMIT)
        changes.add("username_invalid", f"{user.username!r} -> {chosen!r}")
    elif usernames.holder(user.username) != user.id:
        chosen = usernames.generate(user.username, _USERNAME_LIMIT, f"_{user.id}")
        holder = usernames.holder(user.username)
        changes.add("username_duplicate", f"{user.username!r} (user {holder}) -> {chosen!r}")
    else:
        chosen = user.username
    return chosen


def _email(user: GoUser, invalid: set[str], emails: _UniqueNames, changes: _UserChanges) -> str:
    synthetic = _SYNTHETIC_EMAIL.format(user.id)
    if not user.email:
        chosen = emails.generate(synthetic, 254)
        changes.add("email_empty", f"-> {chosen!r}")
    elif "email" in invalid:
        chosen = emails.generate(synthetic, 254)
        changes.add("email_invalid", f"{user.email!r} -> {chosen!r}")
    elif emails.holder(user.email) != user.id:
        chosen = emails.generate(synthetic, 254)
        holder = emails.holder(user.email)
        changes.add("email_duplicate", f"{user.email!r} (user {holder}) -> {chosen!r}")
    else:
        chosen = user.email
    return chosen


def _user_name(name: str, username: str, invalid: set[str], changes: _UserChanges) -> str:
    if "name" not in invalid:
        return name
    trimmed = name.strip()[:_NAME_LIMIT]
    chosen = trimmed if trimmed and not _name_invalid(trimmed) else username
    changes.add("name_invalid", f"{_shorten(name)!r} -> {chosen!r}")
    return chosen


def _name_invalid(name: str) -> bool:
    values: dict[str, object] = {"name": name, "username": "valid_name", "email": "a@b.example"}
    return "name" in _invalid_fields(EditUserBody, values)


@dataclass(slots=True)
class _UserChanges:
    go_id: int
    sink: list[Change]

    def add(self, kind: str, detail: str) -> None:
        self.sink.append(Change("users", self.go_id, kind, detail))


# --- channels --------------------------------------------------------------------


def _plan_channels(
    go: GoData,
    target: TargetState,
    owners: dict[int, int],
    started_at: dt.datetime,
    result: Plan,
) -> None:
    user_ids = result.user_ids()
    known = {channel.id for channel in go.channels}
    ids = _IdAssigner(
        "channel",
        target.channel_ids,
        target.next_channel_id,
        [*known, *go.message_counts],
        result.changes,
    )
    names = _UniqueNames(target.channel_names)
    for channel in go.channels:
        if "name" not in _invalid_fields(NewChannelBody, _channel_body(channel)):
            names.claim(channel.name, channel.id, f"channel {channel.id}", result.collisions)
    for channel in go.channels:
        invalid = _invalid_fields(NewChannelBody, _channel_body(channel))
        name = _channel_name(channel, invalid, names, result.changes)
        description = channel.description or ""
        if "description" in invalid:
            description = description[:_DESCRIPTION_LIMIT]
            result.changes.append(
                Change("channels", channel.id, "description_too_long", "cut to 500 characters")
            )
        image = _optional_url(channel.image_url, "image_url" in invalid)
        if image is None and channel.image_url:
            result.changes.append(
                Change("channels", channel.id, "image_invalid", f"{channel.image_url!r} -> none")
            )
        owner = owners.get(channel.id)
        if owner is None:
            result.changes.append(Change("channels", channel.id, "channel_no_owner", "no owner"))
        created_at = channel.created_at
        if created_at is None:
            result.changes.append(
                Change(
                    "channels",
                    channel.id,
                    "channel_created_at_missing",
                    _AT_START,
                )
            )
            created_at = started_at
        result.channels.append(
            NewChannel(
                channel.id,
                ids.assign(channel.id),
                name,
                description,
                image,
                None if owner is None else user_ids[owner],
                created_at,
                go.message_counts.get(channel.id, 0),
            )
        )
    for go_id in sorted(set(go.message_counts) - known):
        name = names.generate(f"Go channel {go_id} (deleted)", _CHANNEL_NAME_LIMIT)
        count = go.message_counts[go_id]
        result.changes.append(
            Change(
                "channels",
                go_id,
                "channel_missing",
                f"{count:,} messages; created as {name!r}, with no members",
            )
        )
        result.channels.append(
            NewChannel(go_id, ids.assign(go_id), name, "", None, None, started_at, count)
        )


def _channel_body(channel: GoChannel) -> dict[str, object]:
    return {
        "name": channel.name,
        "description": channel.description or "",
        "image_url": channel.image_url or None,
    }


def _channel_name(
    channel: GoChannel, invalid: set[str], names: _UniqueNames, changes: list[Change]
) -> str:
    if not channel.name.strip():
        chosen = names.generate(f"Go channel {channel.id}", _CHANNEL_NAME_LIMIT)
        changes.append(Change("channels", channel.id, "channel_name_empty", f"-> {chosen!r}"))
    elif "name" in invalid:
        chosen = names.generate(channel.name.strip()[:_CHANNEL_NAME_LIMIT], _CHANNEL_NAME_LIMIT)
        detail = f"{_shorten(channel.name)!r} -> {chosen!r}"
        changes.append(Change("channels", channel.id, "channel_name_invalid", detail))
    elif names.holder(channel.name) != channel.id:
        chosen = names.numbered(channel.name, _CHANNEL_NAME_LIMIT)
        holder = names.holder(channel.name)
        detail = f"{channel.name!r} (channel {holder}) -> {chosen!r}"
        changes.append(Change("channels", channel.id, "channel_name_duplicate", detail))
    else:
        chosen = channel.name
    return chosen


# --- memberships -----------------------------------------------------------------


@dataclass(slots=True)
class _Merged:
    """One membership per (channel, user) whose user and channel exist in Go.

    `survivors` in (created_at, id) order; `rows[survivor.id]` every Go row
    merged into it (its own first); `merged_into[go_id]` the survivor of a
    merged row; `orphans` the rows whose user or channel does not exist.
    """

    survivors: list[GoMembership]
    rows: dict[int, list[GoMembership]]
    merged_into: dict[int, GoMembership]
    orphans: list[GoMembership]


def _merge(go: GoData) -> _Merged:
    """The strongest role's earliest row survives; the rest are merged into it."""
    rank = {_GO_ADMIN: 0, _GO_USER: 1}
    real_users = {user.id for user in go.users}
    real_channels = {channel.id for channel in go.channels}
    groups: dict[tuple[int, int], list[GoMembership]] = defaultdict(list)
    orphans: list[GoMembership] = []
    for membership in go.memberships:
        if membership.user_id in real_users and membership.channel_id in real_channels:
            groups[(membership.channel_id, membership.user_id)].append(membership)
        else:
            orphans.append(membership)
    merged = _Merged([], {}, {}, orphans)
    for group in groups.values():
        ordered = sorted(group, key=lambda m: (rank.get(m.role, 2), _sort_time(m), m.id))
        survivor = ordered[0]
        merged.survivors.append(survivor)
        merged.rows[survivor.id] = ordered
        for other in ordered[1:]:
            merged.merged_into[other.id] = survivor
    merged.survivors.sort(key=lambda m: (_sort_time(m), m.id))
    return merged


def _owners(merged: _Merged) -> dict[int, int]:
    """Go channel -> the Go user who becomes its owner: its first admin."""
    owners: dict[int, int] = {}
    for membership in merged.survivors:
        if membership.role == _GO_ADMIN and membership.channel_id not in owners:
            owners[membership.channel_id] = membership.user_id
    return owners


def _plan_memberships(go: GoData, merged: _Merged, started_at: dt.datetime, result: Plan) -> None:
    user_ids, channel_ids = result.user_ids(), result.channel_ids()
    owners = _owners(merged)
    real_users = {user.id for user in go.users}
    for orphan in merged.orphans:
        missing = (
            f"user {orphan.user_id}"
            if orphan.user_id not in real_users
            else f"channel {orphan.channel_id}"
        )
        result.changes.append(
            Change("memberships", orphan.id, "membership_orphan", f"no {missing}: not imported")
        )
    for go_id, survivor in sorted(merged.merged_into.items()):
        result.changes.append(
            Change(
                "memberships",
                go_id,
                "membership_duplicate",
                f"user {survivor.user_id} in channel {survivor.channel_id} again:"
                f" merged into membership {survivor.id} (role {_shorten(survivor.role)!r})",
            )
        )
    for membership in merged.survivors:
        rows = merged.rows[membership.id]
        role = _role(membership, owners, result.changes)
        stamps = [row.created_at for row in rows if row.created_at is not None]
        joined_at = min(stamps) if stamps else None
        if joined_at is None:
            result.changes.append(
                Change(
                    "memberships",
                    membership.id,
                    "membership_created_at_missing",
                    _AT_START,
                )
            )
            joined_at = started_at
        result.memberships.append(
            NewMembership(
                tuple(sorted(row.id for row in rows)),
                channel_ids[membership.channel_id],
                user_ids[membership.user_id],
                role,
                joined_at,
            )
        )


def _sort_time(membership: GoMembership) -> dt.datetime:
    return membership.created_at or dt.datetime.max.replace(tzinfo=dt.UTC)


def _role(membership: GoMembership, owners: dict[int, int], changes: list[Change]) -> str:
    if membership.role == _GO_ADMIN:
        owner = owners[membership.channel_id]
        if owner == membership.user_id:
            return "owner"
        changes.append(
            Change(
                "memberships",
                membership.id,
                "membership_admin_extra",
                f"user {membership.user_id} in channel {membership.channel_id}: moderator"
                f" (owner: user {owner})",
            )
        )
        return "moderator"
    if membership.role != _GO_USER:
        changes.append(
            Change(
                "memberships",
                membership.id,
                "membership_role_unknown",
                f"role {_shorten(membership.role)!r} -> member",
            )
        )
    return "member"


def _report_non_members(go: GoData, merged: _Merged, result: Plan) -> None:
    members = {(m.channel_id, m.user_id) for m in merged.survivors}
    for a in sorted(go.authorship, key=lambda a: (a.channel_id, a.user_id)):
        if (a.channel_id, a.user_id) not in members:
            result.changes.append(
                Change(
                    "messages",
                    None,
                    "author_not_member",
                    f"channel {a.channel_id}, user {a.user_id}: {a.count:,} messages kept",
                )
            )


# --- shared helpers --------------------------------------------------------------


def _invalid_fields(model: type[BaseModel], values: dict[str, object]) -> set[str]:
    """The fields of `values` that `model` (a wire model) refuses."""
    try:
        model.model_validate(values)
    except ValidationError as exc:
        return {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
    return set()


def _optional_url(value: str | None, invalid: bool) -> str | None:
    return None if not value or invalid else value


def _shorten(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


class _UniqueNames:
    """Case-insensitive names in use: the target's own, then the Go rows' claims."""

    def __init__(self, own: frozenset[str]) -> None:
        self._own = own
        self._holders: dict[str, int] = {}
        self._taken: set[str] = set(own)

    def claim(self, name: str, go_id: int, row: str, collisions: list[str]) -> None:
        key = name.lower()
        if key in self._own:
            collisions.append(f"{row}: {name!r} is already used by the target's own data")
        elif key not in self._holders:
            self._holders[key] = go_id
            self._taken.add(key)

    def holder(self, name: str) -> int | None:
        return self._holders.get(name.lower())

    def generate(self, base: str, limit: int, suffix: str = "") -> str:
        """`base` + `suffix` cut to `limit` (the base gives way), or with `_2`, `_3`, ...
        after it, whichever is free; taken."""
        candidate, number = base[: limit - len(suffix)] + suffix, 1
        while candidate.lower() in self._taken:
            number += 1
            tail = f"{suffix}_{number}"
            candidate = base[: limit - len(tail)] + tail
        self._taken.add(candidate.lower())
        return candidate

    def numbered(self, base: str, limit: int) -> str:
        """`base (2)`, `base (3)`, ...: the first that is free; taken."""
        number = 1
        while True:
            number += 1
            suffix = f" ({number})"
            candidate = base[: limit - len(suffix)] + suffix
            if candidate.lower() not in self._taken:
                self._taken.add(candidate.lower())
                return candidate


class _IdAssigner:
    """Keeps a Go id unless the target's own rows use it; then the next free id."""

    def __init__(
        self,
        what: str,
        taken: frozenset[int],
        next_id: int,
        go_ids: Iterable[int],
        sink: list[Change],
    ) -> None:
        self._what = what
        self._taken = taken
        # New ids start above every id in use or kept, so none can meet a kept one.
        self._next = max(next_id, max(taken, default=0) + 1, max(go_ids, default=0) + 1)
        self._sink = sink

    def assign(self, go_id: int) -> int:
        if go_id > 0 and go_id not in self._taken:
            return go_id
        new_id = self._next
        self._next += 1
        self._sink.append(
            Change(f"{self._what}s", go_id, f"{self._what}_id_taken", f"-> id {new_id}")
        )
        return new_id
