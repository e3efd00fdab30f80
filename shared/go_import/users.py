"""What becomes of each Go user: names, e-mails, passwords, ids (`policy`). No I/O."""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from shared.db.go_source import GoUser
from shared.go_import.report import AT_START as _AT_START
from shared.go_import.report import Change
from shared.go_import.rows import (
    GoData,
    IdAssigner,
    NewUser,
    Plan,
    TargetState,
    UniqueNames,
    invalid_fields,
    optional_url,
    shorten,
)
from shared.wire import EditUserBody

# What the Go server wrote: bcrypt, `$2a$` with cost 10; any bcrypt variant verifies here.
_BCRYPT_HASH = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
_NAME_LIMIT = 100
_USERNAME_LIMIT = 32
# `.invalid` is reserved (RFC 2606): such an address can never reach anyone.
_SYNTHETIC_EMAIL = "go-user-{}@import.invalid"


def is_bcrypt_hash(value: str) -> bool:
    return _BCRYPT_HASH.fullmatch(value) is not None


def plan_users(
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
    ids = IdAssigner(
        "user", target.user_ids, target.next_user_id, [*known, *missing], result.changes
    )
    usernames = UniqueNames(target.usernames)
    emails = UniqueNames(target.emails)
    refused = {user.id: invalid_fields(EditUserBody, _profile(user)) for user in go.users}
    # The lowest Go id keeps a contested username or e-mail: claim them all first.
    for user in go.users:
        if "username" not in refused[user.id]:
            usernames.claim(user.username, user.id, f"user {user.id}", result.collisions)
        if "email" not in refused[user.id]:
            emails.claim(user.email, user.id, f"user {user.id}", result.collisions)
    for user in go.users:
        changes = _UserChanges(user.id, result.changes)
        invalid = refused[user.id]
        username = _username(user, invalid, usernames, changes)
        email = _email(user, invalid, emails, changes)
        name = _user_name(user.name, username, invalid, changes)
        avatar = optional_url(user.avatar_url, "avatar_url" in invalid)
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
    user: GoUser, invalid: set[str], usernames: UniqueNames, changes: _UserChanges
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


def _email(user: GoUser, invalid: set[str], emails: UniqueNames, changes: _UserChanges) -> str:
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
    changes.add("name_invalid", f"{shorten(name)!r} -> {chosen!r}")
    return chosen


def _name_invalid(name: str) -> bool:
    values: dict[str, object] = {"name": name, "username": "valid_name", "email": "a@b.example"}
    return "name" in invalid_fields(EditUserBody, values)


@dataclass(slots=True)
class _UserChanges:
    go_id: int
    sink: list[Change]

    def add(self, kind: str, detail: str) -> None:
        self.sink.append(Change("users", self.go_id, kind, detail))
