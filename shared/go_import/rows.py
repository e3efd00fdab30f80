"""The rows an import plan reads and writes, and the helpers its policies share. No I/O."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import BaseModel, ValidationError

from shared.db.go_source import Authorship, GoChannel, GoMembership, GoUser
from shared.go_import.report import Change


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


def invalid_fields(model: type[BaseModel], values: dict[str, object]) -> set[str]:
    """The fields of `values` that `model` (a wire model) refuses."""
    try:
        model.model_validate(values)
    except ValidationError as exc:
        return {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
    return set()


def optional_url(value: str | None, invalid: bool) -> str | None:
    return None if not value or invalid else value


def shorten(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


class UniqueNames:
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


class IdAssigner:
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
