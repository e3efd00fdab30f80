"""Fixtures for the deployment checks: rendered overlays, the compose file, the setting names.

These tests read files and run linters; they need no PostgreSQL or Valkey.
"""

from __future__ import annotations

import pytest

from tests.deploy.manifests import OVERLAYS, Manifest, render_overlay


@pytest.fixture(autouse=True)
def clean_database() -> None:
    """Overrides the suite's autouse fixture: no database is involved here."""


@pytest.fixture(scope="session")
def rendered_overlays() -> dict[str, Manifest]:
    """Every overlay rendered once per session, as the cluster would receive it."""
    return {overlay: render_overlay(overlay) for overlay in OVERLAYS}


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, rendered_overlays: dict[str, Manifest]) -> Manifest:
    """One rendered overlay; tests using it run once per overlay."""
    return rendered_overlays[request.param]
