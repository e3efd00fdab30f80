"""deploy/compose.yaml: valid against the compose spec, and in step with the code's settings."""

from __future__ import annotations

import pytest

from tests.deploy.compose import (
    COMPOSE_FILE,
    app_services,
    is_required_variable,
    load_compose,
    service_env,
)
from tests.deploy.settings_facts import (
    duration_seconds,
    seconds_setting,
    settings_from_env,
    unknown_names,
)
from tests.deploy.tools import dev_tool, run_tool, tool_output

COMPOSE = load_compose()
APP_SERVICES = app_services(COMPOSE)
# Docker's stop_grace_period when none is given.
DOCKER_DEFAULT_STOP_SECONDS = 10.0


def test_matches_the_compose_spec_schema() -> None:
    # check-jsonschema ships a copy of the compose-spec JSON schema, so this runs offline.
    checker = dev_tool("check-jsonschema", "check-jsonschema")
    result = run_tool([checker, "--builtin-schema", "vendor.compose-spec", COMPOSE_FILE])
    assert result.returncode == 0, tool_output(result)


def test_project_image_runs_migrate_gateway_and_persistence() -> None:
    commands = {name: svc["command"] for name, svc in APP_SERVICES.items()}
    assert commands == {
        "migrate": ["migrate"],
        "gateway": ["gateway"],
        "persistence": ["persistence"],
    }


def test_two_gateways_and_one_worker() -> None:
    assert APP_SERVICES["gateway"]["deploy"]["replicas"] == 2
    assert APP_SERVICES["persistence"].get("deploy", {}).get("replicas", 1) == 1


@pytest.mark.parametrize("service", ["gateway", "persistence"])
def test_services_start_after_a_successful_migration(service: str) -> None:
    depends_on = APP_SERVICES[service]["depends_on"]
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"
    assert depends_on["postgres"]["condition"] == "service_healthy"
    assert depends_on["redis"]["condition"] == "service_healthy"


def test_migration_runs_once() -> None:
    assert APP_SERVICES["migrate"]["restart"] == "no"


@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_every_variable_is_a_setting(service: str) -> None:
    names = set(service_env(APP_SERVICES[service]))
    assert not unknown_names(names)


@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_values_are_valid_settings_under_the_image_defaults(service: str) -> None:
    env = {"ENVIRONMENT": "production", **service_env(APP_SERVICES[service])}
    settings = settings_from_env(env)
    assert settings.redis_url.get_secret_value().startswith("redis://redis:")
    assert settings.db_host == "postgres"


def test_secrets_are_required_from_the_environment() -> None:
    """A missing secret stops compose; none is written in the file."""
    gateway = APP_SERVICES["gateway"]["environment"]
    postgres = COMPOSE["services"]["postgres"]["environment"]
    assert is_required_variable(gateway["JWT_SECRET"])
    assert is_required_variable(gateway["DB_PASSWORD"])
    assert is_required_variable(postgres["POSTGRES_PASSWORD"])


def test_worker_gets_no_jwt_secret() -> None:
    assert "JWT_SECRET" not in service_env(APP_SERVICES["persistence"])


def test_gateway_stop_grace_period_covers_the_drain() -> None:
    env = service_env(APP_SERVICES["gateway"])
    drain = seconds_setting(env, "DRAIN_DELAY_SECONDS") + seconds_setting(
        env, "SHUTDOWN_TIMEOUT_SECONDS"
    )
    assert _stop_grace_seconds("gateway") > drain


def test_worker_stop_grace_period_covers_its_last_batch() -> None:
    env = service_env(APP_SERVICES["persistence"])
    assert _stop_grace_seconds("persistence") > seconds_setting(env, "SHUTDOWN_TIMEOUT_SECONDS")


def _stop_grace_seconds(service: str) -> float:
    """How long Docker waits after SIGTERM before it sends SIGKILL."""
    written = APP_SERVICES[service].get("stop_grace_period")
    return DOCKER_DEFAULT_STOP_SECONDS if written is None else duration_seconds(written)


def test_valkey_keeps_every_acknowledged_message() -> None:
    command = COMPOSE["services"]["redis"]["command"]
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    assert options["--maxmemory-policy"] == "noeviction"


def test_postgres_18_keeps_its_data_in_a_volume() -> None:
    postgres = COMPOSE["services"]["postgres"]
    assert postgres["image"].split(":")[1].split(".")[0] == "18"
    # The 18 images refuse a volume at /var/lib/postgresql/data.
    assert any(v.endswith(":/var/lib/postgresql") for v in postgres["volumes"])


def test_only_nginx_is_published() -> None:
    published = {name for name, svc in COMPOSE["services"].items() if svc.get("ports")}
    assert published == {"nginx"}


def test_datastores_are_off_the_edge_network() -> None:
    for name in ("postgres", "redis"):
        assert COMPOSE["services"][name]["networks"] == ["backend"]
    assert COMPOSE["networks"]["backend"]["internal"] is True
