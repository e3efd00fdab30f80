"""A few-seconds run of the presence cost benchmark, so it cannot rot."""

from __future__ import annotations

from tests.loadtests.subprocess_run import run_json

_RUN_LIMIT_SECONDS = 60.0


async def test_a_short_run_reports_every_phase(database_dsn: str, redis_url: str) -> None:
    result = await run_json(
        "loadtests.presence_cost",
        *("--channels", "3", "--members", "2", "--idle", "0.5", "--churn", "0.5"),
        *("--refresh", "0.2", "--database-url", database_dsn, "--redis-url", redis_url),
        within=_RUN_LIMIT_SECONDS,
    )
    assert result["users"] == 6
    assert result["connect"]["presence_keys"] >= 6  # two keys per channel at least
    assert result["connect"]["script_calls"] >= 6  # one add per user at least
    assert result["churn"]["reconnects"] > 0
    # Each channel's first member is online again once the churn ends.
    assert result["online_count_after_churn_in_first_channel"] == 2
