"""The import's policy on its own: names, ids and roles decided row by row."""

from __future__ import annotations

import datetime as dt

from shared.db.go_source import Authorship, GoChannel, GoMembership, GoUser
from shared.go_import.policy import GoData, TargetState, plan

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
HASH = "$2a$10$" + "a" * 53


def _user(go_id: int, username: str, email: str | None = None) -> GoUser:
    return GoUser(
        go_id, f"User {go_id}", username, email or f"u{go_id}@example.com", HASH, None, T0
    )


def _plan(
    users: list[GoUser],
    channels: list[GoChannel] | None = None,
    memberships: list[GoMembership] | None = None,
    target: TargetState | None = None,
    authorship: list[Authorship] | None = None,
) -> object:
    go = GoData(users, channels or [], memberships or [], {}, authorship or [])
    return plan(go, target or TargetState(), started_at=T0, locked_hash=lambda: "locked")


def test_a_renamed_duplicate_never_takes_a_name_a_later_go_user_holds() -> None:
    result = _plan([_user(1, "alice"), _user(3, "ALICE"), _user(4, "alice_3")])
    assert [u.username for u in result.users] == ["alice", "ALICE_3_2", "alice_3"]


def test_a_renamed_username_fits_the_length_limit() -> None:
    result = _plan([_user(1, "a" * 32), _user(123456, "A" * 32)])
    renamed = result.users[1].username
    assert renamed == "A" * 25 + "_123456"
    assert len(renamed) == 32


def test_duplicate_channel_names_are_numbered_around_existing_ones() -> None:
    channels = [
        GoChannel(i, name, None, None, T0)
        for i, name in enumerate(["Neu", "Neu (2)", "neu", "NEU"], 1)
    ]
    result = _plan([], channels)
    assert [c.name for c in result.channels] == ["Neu", "Neu (2)", "neu (3)", "NEU (4)"]


def test_the_first_admin_by_time_owns_the_channel_the_others_moderate() -> None:
    users = [_user(1, "early"), _user(2, "late"), _user(3, "member")]
    channels = [GoChannel(1, "c", None, None, T0)]
    memberships = [
        GoMembership(1, 2, 1, "admin", T0 + dt.timedelta(hours=1)),  # lower id, joined later
        GoMembership(2, 1, 1, "admin", T0),
        GoMembership(3, 3, 1, "user", T0),
    ]
    result = _plan(users, channels, memberships)
    roles = {m.user_id: m.role for m in result.memberships}
    assert roles == {1: "owner", 2: "moderator", 3: "member"}
    assert result.channels[0].created_by == 1


def test_go_ids_the_target_uses_move_above_every_go_id() -> None:
    target = TargetState(user_ids=frozenset({1, 2}), next_user_id=3)
    result = _plan([_user(1, "a1"), _user(2, "a2"), _user(7, "a7")], target=target)
    assert [(u.go_id, u.id) for u in result.users] == [(1, 8), (2, 9), (7, 7)]


def test_every_collision_with_the_targets_own_rows_is_listed() -> None:
    target = TargetState(
        usernames=frozenset({"alice"}),
        emails=frozenset({"b@example.com"}),
        channel_names=frozenset({"general"}),
    )
    result = _plan(
        [_user(1, "Alice"), _user(2, "bob", "B@example.com")],
        [GoChannel(1, "General", None, None, T0)],
        target=target,
    )
    assert result.collisions == [
        "user 1: 'Alice' is already used by the target's own data",
        "user 2: 'B@example.com' is already used by the target's own data",
        "channel 1: 'General' is already used by the target's own data",
    ]


def test_authors_who_do_not_exist_become_placeholders_who_cannot_log_in() -> None:
    result = _plan([_user(1, "alice")], authorship=[Authorship(9, 42, 3)])
    ghost = result.users[1]
    assert (ghost.go_id, ghost.id, ghost.username, ghost.password) == (
        42,
        42,
        "go_user_42",
        "locked",
    )
