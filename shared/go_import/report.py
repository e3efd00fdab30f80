"""What an import changes and why, and the report it prints and stores.

Every Go row the import does not copy as it is gets one `Change`, named by a
policy `kind` (the README's table, "Moving from the Go server", lists them
all). The report groups the changes by kind, so a dry run and the real run
print the same text for the same data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

# The detail of a timestamp set to the import's start (the report's "began" line).
AT_START = "-> the import's start"

# kind -> what the policy does, as the report's group heading says it.
POLICIES: dict[str, str] = {
    "user_id_taken": "the target already uses the Go id: a new id (see go_import_users)",
    "user_created_at_missing": "no created_at: the import's start time",
    "username_empty": "empty username: go_user_<id>",
    "username_invalid": "username breaks the sign-up rules: go_user_<id>",
    "username_duplicate": "username taken by a lower Go id (case-insensitive): <name>_<id>",
    "email_empty": "empty e-mail: go-user-<id>@import.invalid (log in with the username)",
    "email_invalid": "e-mail breaks the sign-up rules: go-user-<id>@import.invalid",
    "email_duplicate": "e-mail taken by a lower Go id (case-insensitive):"
    " go-user-<id>@import.invalid",
    "name_invalid": "name blank or too long: trimmed to 100 characters, or the username",
    "avatar_invalid": "avatar_url not an http(s) URL: none",
    "password_empty": "empty password: cannot log in until reset (chat-group reset-password)",
    "password_not_bcrypt": "password not a bcrypt hash (it never worked on the Go server either):"
    " cannot log in until reset",
    "author_missing": "wrote messages but no such user: a placeholder user who cannot log in",
    "channel_id_taken": "the target already uses the Go id: a new id (see go_import_channels)",
    "channel_created_at_missing": "no created_at: the import's start time",
    "channel_name_empty": "blank name: Go channel <id>",
    "channel_name_invalid": "name too long: cut to 64 characters",
    "channel_name_duplicate": "name taken by a lower Go id (case-insensitive): <name> (<n>)",
    "description_too_long": "description over 500 characters: cut to 500",
    "image_invalid": "image_url not an http(s) URL: none",
    "channel_no_owner": "no admin member: the channel has no owner",
    "channel_missing": "holds messages but no such channel: a placeholder channel",
    "membership_duplicate": "the same user in the same channel again: merged into one",
    "membership_admin_extra": "a further admin of the channel: moderator (the first is owner)",
    "membership_role_unknown": "role neither admin nor user: member",
    "membership_orphan": "its user or channel does not exist: not imported",
    "membership_created_at_missing": "no created_at: the import's start time",
    "author_not_member": "messages by a user who is not a member: kept, the user stays a"
    " non-member",
    "body_invalid": "body refused by the wire models: a placeholder text, the original kept here",
    "body_fields_dropped": "fields the Go server let through but no body has: dropped, the"
    " original kept here",
    "message_created_at_missing": "no created_at: the latest one before it in its channel",
    "message_created_at_future": "created_at after the import began: the import's start time",
}


@dataclass(frozen=True, slots=True)
class Change:
    go_table: str
    go_id: int | None
    kind: str
    detail: str


@dataclass(slots=True)
class Counts:
    """Rows per table: in the Go database, and written here (by now, this run)."""

    go: Counter[str] = field(default_factory=Counter)
    written: Counter[str] = field(default_factory=Counter)
    this_run: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class IdStats:
    """How message ids were made (see the README's policy table)."""

    before_epoch: int = 0  # created before 2024-01-01: packed just after the id epoch
    moved: int = 0  # more than 32 in one ms and partition: a later millisecond
    live_clock: int = 0  # at or after the live id clock: taken from it
    skipped: int = 0  # would have matched an id the target already had

    def as_json(self) -> dict[str, int]:
        return {
            "before_epoch": self.before_epoch,
            "moved": self.moved,
            "live_clock": self.live_clock,
            "skipped": self.skipped,
        }

    @classmethod
    def from_json(cls, value: dict[str, int]) -> IdStats:
        return cls(**value)


_TABLES = ("users", "channels", "memberships", "messages")


def render_report(
    *,
    header: list[str],
    counts: Counts,
    changes: Iterable[Change],
    ids: IdStats,
    footer: list[str],
) -> str:
    """The report's text: header, counts per table, changes grouped by policy, footer."""
    lines = [*header, ""]
    lines.append(f"{'':12} {'in Go':>12} {'imported':>12} {'this run':>12}")
    for table in _TABLES:
        lines.append(
            f"{table:12} {counts.go[table]:>12,} {counts.written[table]:>12,}"
            f" {counts.this_run[table]:>12,}"
        )
    grouped: dict[str, list[Change]] = {}
    for change in changes:
        grouped.setdefault(change.kind, []).append(change)
    lines.append("")
    total = sum(len(group) for group in grouped.values())
    lines.append(f"Changes ({total:,}):" if total else "Changes: none")
    for kind in POLICIES:
        group = grouped.pop(kind, [])
        if group:
            lines.append(f"  {kind} ({len(group):,}): {POLICIES[kind]}")
            lines.extend(f"    {_row(change)}: {change.detail}" for change in group)
    for kind, group in grouped.items():  # a kind without a policy line is a bug; show it anyway
        lines.append(f"  {kind} ({len(group):,})")
        lines.extend(f"    {_row(change)}: {change.detail}" for change in group)
    lines.append("")
    lines.append(
        "Message ids: "
        f"{ids.before_epoch:,} older than 2024-01-01 packed after the id epoch; "
        f"{ids.moved:,} moved to a later millisecond (over 32 per ms and partition); "
        f"{ids.live_clock:,} taken from the live id clock; "
        f"{ids.skipped:,} stepped past ids the target already had"
    )
    lines.extend(footer)
    return "\n".join(lines) + "\n"


def _row(change: Change) -> str:
    singular = change.go_table.removesuffix("s")
    return f"{singular} {change.go_id}" if change.go_id is not None else change.go_table
