"""What the code says about its settings, for comparison with the deployment files."""

from __future__ import annotations

import re
from collections.abc import Mapping

from shared.settings import Settings

# Settings are read from environment variables named after the fields, upper-cased.
SETTING_NAMES = frozenset(name.upper() for name in Settings.model_fields)
# Long enough for ENVIRONMENT=production; stands in for values that live in a Secret.
PLACEHOLDER_SECRET = "placeholder-" + "x" * 40

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def unknown_names(names: set[str]) -> set[str]:
    """Names that are not settings: the code would never read them."""
    return names - SETTING_NAMES


def seconds_setting(env: Mapping[str, str | None], name: str) -> float:
    """A duration setting as the process would see it: the environment's value or the default."""
    value = env.get(name)
    if value is not None:
        return float(value)
    default = Settings.model_fields[name.lower()].default
    return float(default)


def settings_from_env(env: Mapping[str, str | None]) -> Settings:
    """Build Settings from a deployment's variables; Secret-held values get a placeholder.

    Raises pydantic's ValidationError when a name is unknown or a value invalid,
    as the process would at start. `model_validate` reads no other source, so
    this machine's own environment cannot fill a gap in the deployment's.
    """
    values = {
        name.lower(): PLACEHOLDER_SECRET if value is None else value for name, value in env.items()
    }
    values.setdefault("jwt_secret", PLACEHOLDER_SECRET)
    return Settings.model_validate(values)


def duration_seconds(text: str) -> float:
    """Seconds in a duration written as compose or nginx do: `20s`, `1m30s`, `75` (seconds)."""
    compact = str(text).strip()
    parts = _DURATION_PART.findall(compact)
    if not parts or "".join(number + unit for number, unit in parts) != compact:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(number) * _UNIT_SECONDS[unit or None] for number, unit in parts)
