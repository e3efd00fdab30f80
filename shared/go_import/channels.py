"""What becomes of each Go channel and membership: names, owners, roles (`policy`). No I/O."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

from shared.db.go_source import GoChannel, GoMembership
from shared.go_import.report import AT_START as _AT_START
from shared.go_import.report import Change
from shared.go_import.rows import (
    GoData,
    IdAssigner,
    NewChannel,
    NewMembership,
    Plan,
    TargetState,
    UniqueNames,
    invalid_fields,
    optional_url,
    shorten,
)
from shared.wire import NewChannelBody

_CHANNEL_NAME_LIMIT = 64
_DESCRIPTION_LIMIT = 500
_GO_ADMIN = "admin"
_GO_USER = "user"


def plan_channels(
    go: GoData,
    target: TargetState,
    owners: dict[int, int],
    started_at: dt.datetime,
    result: Plan,
) -> None:
    user_ids = result.user_ids()
    known = {channel.id for channel in go.channels}
    ids = IdAssigner(
        "channel",
        target.channel_ids,
        target.next_channel_id,
        [*known, *go.message_counts],
        result.changes,
    )
    names = UniqueNames(target.channel_names)
    for channel in go.channels:
        if "name" not in invalid_fields(NewChannelBody, _channel_body(channel)):
            names.claim(channel.name, channel.id, f"channel {channel.id}", result.collisions)
    for channel in go.channels:
        invalid = invalid_fields(NewChannelBody, _channel_body(channel))
        name = _channel_name(channel, invalid, names, result.changes)
        description = channel.description or ""
        if "description" in invalid:
            description = description[:_DESCRIPTION_LIMIT]
            result.changes.append(
                Change("channels", channel.id, "description_too_long", "cut to 500 characters")
            )
        image = optional_url(channel.image_url, "image_url" in invalid)
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
    channel: GoChannel, invalid: set[str], names: UniqueNames, changes: list[Change]
) -> str:
    if not channel.name.strip():
        chosen = names.generate(f"Go channel {channel.id}", _CHANNEL_NAME_LIMIT)
        changes.append(Change("channels", channel.id, "channel_name_empty", f"-> {chosen!r}"))
    elif "name" in invalid:
        chosen = names.generate(channel.name.strip()[:_CHANNEL_NAME_LIMIT], _CHANNEL_NAME_LIMIT)
        detail = f"{shorten(channel.name)!r} -> {chosen!r}"
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
class Merged:
    """One membership per (channel, user) whose user and channel exist in Go.

    `survivors` in (created_at, id) order; `rows[survivor.id]` every Go row
    merged into it (its own first); `merged_into[go_id]` the survivor of a
    merged row; `orphans` the rows whose user or channel does not exist.
    """

    survivors: list[GoMembership]
    rows: dict[int, list[GoMembership]]
    merged_into: dict[int, GoMembership]
    orphans: list[GoMembership]


def merge(go: GoData) -> Merged:
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
    merged = Merged([], {}, {}, orphans)
    for group in groups.values():
        ordered = sorted(group, key=lambda m: (rank.get(m.role, 2), _sort_time(m), m.id))
        survivor = ordered[0]
        merged.survivors.append(survivor)
        merged.rows[survivor.id] = ordered
        for other in ordered[1:]:
            merged.merged_into[other.id] = survivor
    merged.survivors.sort(key=lambda m: (_sort_time(m), m.id))
    return merged


def channel_owners(merged: Merged) -> dict[int, int]:
    """Go channel -> the Go user who becomes its owner: its first admin."""
    owners: dict[int, int] = {}
    for membership in merged.survivors:
        if membership.role == _GO_ADMIN and membership.channel_id not in owners:
            owners[membership.channel_id] = membership.user_id
    return owners


def plan_memberships(go: GoData, merged: Merged, started_at: dt.datetime, result: Plan) -> None:
    user_ids, channel_ids = result.user_ids(), result.channel_ids()
    owners = channel_owners(merged)
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
                f" merged into membership {survivor.id} (role {shorten(survivor.role)!r})",
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
                f"role {shorten(membership.role)!r} -> member",
            )
        )
    return "member"


def report_non_members(go: GoData, merged: Merged, result: Plan) -> None:
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
