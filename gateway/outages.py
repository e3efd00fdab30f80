"""What the gateway counts as PostgreSQL or Redis being down, for one answer everywhere.

A request or replay that hits one of these may succeed later, so it is
answered `unavailable` (503, or close 1013 on a socket), never `internal`.
"""

from __future__ import annotations

from redis.exceptions import RedisError

from shared.db.pool import POSTGRES_OUTAGE_ERRORS

DEPENDENCY_ERRORS: tuple[type[Exception], ...] = (*POSTGRES_OUTAGE_ERRORS, RedisError)
