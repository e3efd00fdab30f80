"""The README's reference tables must follow the code: every setting, every error code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.errors import ERROR_TABLE, ErrorCode
from shared.settings import Settings

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(autouse=True)
def clean_database() -> None:
    """Overrides the suite's autouse fixture: these tests read a file, no server needed."""


def _section(title: str) -> str:
    """The text under a `## title` or `### title` heading, up to the next heading of any level."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^#{{2,3}} {re.escape(title)}\n(.*?)(?=^#{{1,3}} )", text, re.S | re.M)
    assert match is not None, f"README.md has no '{title}' section"
    return match.group(1)


def _table_rows(section: str) -> dict[str, list[str]]:
    """Table rows keyed by their first cell without backticks, cells stripped."""
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows[cells[0].strip("`")] = cells
    return rows


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_in_the_configuration_table(field: str) -> None:
    rows = _table_rows(_section("Configuration"))
    assert field.upper() in rows, f"{field.upper()} is missing from README.md's Configuration table"
    assert rows[field.upper()][2], f"{field.upper()} has no description in README.md"


def test_configuration_table_lists_no_unknown_setting() -> None:
    rows = _table_rows(_section("Configuration"))
    documented = {name for name in rows if re.fullmatch(r"[A-Z][A-Z0-9_]*", name)}
    assert documented <= {field.upper() for field in Settings.model_fields}


@pytest.mark.parametrize("code", list(ErrorCode), ids=str)
def test_every_error_code_is_in_the_table_with_its_status_and_close_code(code: ErrorCode) -> None:
    rows = _table_rows(_section("Error codes"))
    assert code.value in rows, f"{code.value} is missing from README.md's Error codes table"
    spec = ERROR_TABLE[code]
    assert rows[code.value][1:3] == [str(spec.status), str(int(spec.close_code))]
