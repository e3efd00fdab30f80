"""The Kubernetes manifests agree with the code: routes, port, settings, drain timing."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from gateway.app import create_app
from shared.settings import Settings
from tests.deploy.manifests import (
    K8S,
    K8sObject,
    Manifest,
    app_workloads,
    container,
    container_env,
    find,
    load_yaml_documents,
    pod_spec,
)
from tests.deploy.settings_facts import (
    PLACEHOLDER_SECRET,
    seconds_setting,
    settings_from_env,
    unknown_names,
)

SECRET_EXAMPLE = load_yaml_documents(K8S / "base" / "secret.example.yaml")[0]


def _gateway(overlay: Manifest) -> tuple[K8sObject, dict[str, Any]]:
    """The gateway Deployment and its container."""
    deployment = find(overlay, "Deployment", "gateway")
    return deployment, container(deployment, "gateway")


def _app_routes() -> set[str]:
    app = create_app(Settings(jwt_secret=PLACEHOLDER_SECRET))
    return {resource.canonical for resource in app.router.resources()}


def _prestop_seconds(spec: dict[str, Any]) -> float:
    pre_stop = spec["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep", f"preStop is not a plain sleep: {command}"
    return float(command[1])


def test_probes_ask_routes_the_gateway_serves(overlay: Manifest) -> None:
    _, gateway = _gateway(overlay)
    readiness = gateway["readinessProbe"]["httpGet"]["path"]
    liveness = gateway["livenessProbe"]["httpGet"]["path"]
    assert (readiness, liveness) == ("/readyz", "/healthz")
    assert {readiness, liveness} <= _app_routes()


def test_container_port_is_the_port_the_gateway_listens_on(overlay: Manifest) -> None:
    _, gateway = _gateway(overlay)
    port = settings_from_env(container_env(overlay, gateway)).port
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert ports == {"http": port}
    # The probes and the Service reach that port by its name.
    assert gateway["readinessProbe"]["httpGet"]["port"] == "http"
    assert gateway["livenessProbe"]["httpGet"]["port"] == "http"
    assert find(overlay, "Service", "gateway")["spec"]["ports"][0]["targetPort"] == "http"


def test_grace_period_covers_prestop_drain_and_shutdown(overlay: Manifest) -> None:
    deployment, gateway = _gateway(overlay)
    env = container_env(overlay, gateway)
    needed = (
        _prestop_seconds(gateway)
        + seconds_setting(env, "DRAIN_DELAY_SECONDS")
        + seconds_setting(env, "SHUTDOWN_TIMEOUT_SECONDS")
    )
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] > needed


def test_worker_grace_period_covers_its_last_batch(overlay: Manifest) -> None:
    deployment = find(overlay, "Deployment", "persistence")
    env = container_env(overlay, container(deployment, "persistence"))
    grace = pod_spec(deployment).get("terminationGracePeriodSeconds", 30)
    assert grace > seconds_setting(env, "SHUTDOWN_TIMEOUT_SECONDS")


def test_app_containers_set_only_settings(overlay: Manifest) -> None:
    for workload in app_workloads(overlay):
        for spec in pod_spec(workload)["containers"]:
            unknown = unknown_names(set(container_env(overlay, spec)))
            assert not unknown, f"{workload['metadata']['name']}: {unknown}"


def test_app_containers_start_with_valid_settings(overlay: Manifest) -> None:
    for workload in app_workloads(overlay):
        for spec in pod_spec(workload)["containers"]:
            settings_from_env(container_env(overlay, spec))


def test_ingress_timeouts_outlast_the_heartbeat(overlay: Manifest) -> None:
    _, gateway = _gateway(overlay)
    heartbeat = seconds_setting(container_env(overlay, gateway), "WS_HEARTBEAT_SECONDS")
    annotations = find(overlay, "Ingress", "gateway")["metadata"]["annotations"]
    for name in ("proxy-read-timeout", "proxy-send-timeout"):
        assert float(annotations[f"nginx.ingress.kubernetes.io/{name}"]) > heartbeat
    assert not any("affinity" in key for key in annotations), "no sticky sessions"


def test_secret_keys_used_are_in_the_example(overlay: Manifest) -> None:
    example_name = SECRET_EXAMPLE["metadata"]["name"]
    example_keys = set(SECRET_EXAMPLE["stringData"])
    # An optional key (JWT_SECRET_PREVIOUS) is commented out in the example, as
    # an empty value would be refused: the example still has to name it.
    example_text = (K8S / "base" / "secret.example.yaml").read_text()
    for workload in app_workloads(overlay):
        for spec in pod_spec(workload)["containers"]:
            for variable in spec.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None:
                    assert ref["name"] == example_name
                    if ref.get("optional"):
                        assert f"# {ref['key']}: " in example_text
                    else:
                        assert ref["key"] in example_keys


def test_gateways_take_the_previous_key_during_a_rotation(overlay: Manifest) -> None:
    _, gateway = _gateway(overlay)
    refs = {
        variable["name"]: variable.get("valueFrom", {}).get("secretKeyRef")
        for variable in gateway.get("env", [])
    }
    assert refs["JWT_SECRET_PREVIOUS"] == {
        "name": SECRET_EXAMPLE["metadata"]["name"],
        "key": "JWT_SECRET_PREVIOUS",
        "optional": True,
    }


def test_only_gateways_get_the_jwt_secret(overlay: Manifest) -> None:
    holders = {
        workload["metadata"]["name"]
        for workload in app_workloads(overlay)
        for spec in pod_spec(workload)["containers"]
        if "JWT_SECRET" in container_env(overlay, spec)
    }
    assert holders == {"gateway"}


def test_secret_example_names_settings_and_holds_no_usable_secret() -> None:
    assert not unknown_names(set(SECRET_EXAMPLE["stringData"]))
    # A gateway refuses to start in production with the example's JWT_SECRET.
    with pytest.raises(pydantic.ValidationError, match="JWT_SECRET"):
        Settings(environment="production", jwt_secret=SECRET_EXAMPLE["stringData"]["JWT_SECRET"])
