"""Reading deploy/compose.yaml as compose would: anchors merged, `${...}` resolved offline."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.deploy.manifests import DEPLOY

COMPOSE_FILE = DEPLOY / "compose.yaml"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
_INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)

Service = dict[str, Any]


def load_compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return document


def app_services(compose: dict[str, Any]) -> dict[str, Service]:
    """The services built from the project's Dockerfile."""
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def is_required_variable(value: str) -> bool:
    """Whether the value is exactly `${NAME:?...}`: compose stops if NAME is unset or empty."""
    match = _INTERPOLATION.fullmatch(value)
    return match is not None and match.group("op") == ":?"


def resolve(value: object) -> str | None:
    """The value with no variables set: defaults filled in; None where a variable is required.

    Raises ValueError for a bare `${NAME}`, which compose would silently make empty.
    """
    text = str(value)
    required = False

    def substitute(match: re.Match[str]) -> str:
        nonlocal required
        op = match.group("op")
        if op is None:
            raise ValueError(f"{text!r}: give ${{{match.group('name')}}} a default or require it")
        if op.endswith("?"):
            required = True
            return ""
        return match.group("arg")

    resolved = _INTERPOLATION.sub(substitute, text)
    return None if required else resolved


def service_env(service: Service) -> dict[str, str | None]:
    """A service's environment, resolved; values that must come from the caller are None."""
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {name: resolve(value) for name, value in environment.items()}
