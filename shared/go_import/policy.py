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
from collections.abc import Callable

from shared.go_import.channels import (
    channel_owners,
    merge,
    plan_channels,
    plan_memberships,
    report_non_members,
)
from shared.go_import.rows import GoData, Plan, TargetState
from shared.go_import.users import plan_users

__all__ = ["GoData", "Plan", "TargetState", "plan"]


def plan(
    go: GoData, target: TargetState, *, started_at: dt.datetime, locked_hash: Callable[[], str]
) -> Plan:
    """Decide every user, channel and membership row; see the module docstring.

    `locked_hash()` gives a password hash that never verifies, for accounts
    without a usable Go password.
    """
    result = Plan()
    merged = merge(go)
    plan_users(go, target, started_at, locked_hash, result)
    plan_channels(go, target, channel_owners(merged), started_at, result)
    plan_memberships(go, merged, started_at, result)
    report_non_members(go, merged, result)
    return result
