"""The CPUs a process may use: its affinity, lowered to its cgroup v2 CPU quota."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.runtime import usable_cpus

AFFINITY = len(os.sched_getaffinity(0))


@pytest.fixture(autouse=True)
def clean_database() -> None:
    """Overrides the suite's autouse fixture: these tests read files, no server needed."""


def _cgroup(tmp_path: Path, own: str, quotas: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for folder, cpu_max in quotas.items():
        path = root / folder.lstrip("/")
        path.mkdir(parents=True, exist_ok=True)
        (path / "cpu.max").write_text(cpu_max + "\n")
    (root / own.lstrip("/")).mkdir(parents=True, exist_ok=True)
    own_file = tmp_path / "self-cgroup"
    own_file.write_text(f"0::{own}\n")
    return root, own_file


@pytest.mark.parametrize(
    ("quotas", "expected"),
    [
        ({"/pod": "150000 100000"}, 2),  # 1.5 CPUs round up
        ({"/pod": "50000 100000"}, 1),  # never below one
        ({"/pod": "max 100000"}, AFFINITY),
        ({"/": "100000 100000", "/pod": "max 100000"}, 1),  # an ancestor's quota binds
        ({"/pod": "garbage"}, AFFINITY),
        ({"/pod": "100000 0"}, AFFINITY),
        ({}, AFFINITY),
    ],
)
def test_cgroup_quota_lowers_the_affinity(
    tmp_path: Path, quotas: dict[str, str], expected: int
) -> None:
    root, own = _cgroup(tmp_path, "/pod", quotas)
    assert usable_cpus(root, own) == min(expected, AFFINITY)


def test_a_quota_above_the_affinity_does_not_raise_it(tmp_path: Path) -> None:
    root, own = _cgroup(tmp_path, "/pod", {"/pod": f"{(AFFINITY + 8) * 100000} 100000"})
    assert usable_cpus(root, own) == AFFINITY


def test_without_cgroup_v2_the_affinity_counts(tmp_path: Path) -> None:
    own = tmp_path / "self-cgroup"
    own.write_text("4:cpu,cpuacct:/docker/abc\n1:name=systemd:/\n")
    assert usable_cpus(tmp_path, own) == AFFINITY
    assert usable_cpus(tmp_path, tmp_path / "missing") == AFFINITY
