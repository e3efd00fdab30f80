"""The module boundaries DESIGN.md and STYLE.md fix, checked on the import graph."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _top_level_imports(package: str) -> dict[Path, set[str]]:
    return {
        path: {name.split(".")[0] for name in _imports(path)}
        for path in (ROOT / package).rglob("*.py")
    }


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("gateway", {"persistence"}),
        ("persistence", {"gateway"}),
        ("shared", {"gateway", "persistence"}),
    ],
)
def test_packages_only_share_through_shared(package: str, forbidden: set[str]) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imports & forbidden)
        for path, imports in _top_level_imports(package).items()
        if imports & forbidden
    }
    assert offenders == {}


@pytest.mark.parametrize("module", ["gateway/hub.py", "gateway/connection.py", "gateway/outbox.py"])
def test_local_fan_out_knows_nothing_of_redis(module: str) -> None:
    imports = {name.split(".")[0] for name in _imports(ROOT / module)}
    assert not imports & {"redis"}
    redis_side = ("gateway.channel_topics", "gateway.sender", "gateway.control_events")
    redis_side += ("gateway.subscriber", "gateway.cluster_subscriber", "gateway.pipelined_redis")
    assert not {name for name in _imports(ROOT / module) if name.startswith(redis_side)}


def test_environment_is_read_only_by_settings_and_the_cli() -> None:
    readers = sorted(
        str(path.relative_to(ROOT))
        for package in ("gateway", "persistence", "shared")
        for path in (ROOT / package).rglob("*.py")
        if "os.environ" in path.read_text() or "os.getenv" in path.read_text()
    )
    assert readers == ["shared/cli.py"]
