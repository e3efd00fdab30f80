"""Availability and hardening of the Kubernetes workloads, per overlay."""

from __future__ import annotations

from tests.deploy.dockerfile import image_uid
from tests.deploy.manifests import (
    K8sObject,
    Manifest,
    app_workloads,
    find,
    is_app_image,
    of_kind,
    pod_spec,
)

GATEWAY_LABELS = {"app.kubernetes.io/name": "chat-group", "app.kubernetes.io/component": "gateway"}


def test_at_least_two_gateways_at_all_times(overlay: Manifest) -> None:
    deployment = find(overlay, "Deployment", "gateway")
    autoscaler = find(overlay, "HorizontalPodAutoscaler", "gateway")
    assert deployment["spec"]["replicas"] >= 2
    assert autoscaler["spec"]["minReplicas"] >= 2
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == "gateway"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_disruption_budget_covers_the_gateways(overlay: Manifest) -> None:
    budget = find(overlay, "PodDisruptionBudget", "gateway")
    assert budget["spec"]["selector"]["matchLabels"] == GATEWAY_LABELS
    assert budget["spec"]["maxUnavailable"] == 1


def test_gateways_spread_over_nodes(overlay: Manifest) -> None:
    affinity = pod_spec(find(overlay, "Deployment", "gateway"))["affinity"]["podAntiAffinity"]
    terms = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    assert terms[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert terms[0]["podAffinityTerm"]["labelSelector"]["matchLabels"] == GATEWAY_LABELS


def test_service_is_not_sticky_and_selects_the_gateways(overlay: Manifest) -> None:
    service = find(overlay, "Service", "gateway")
    assert service["spec"].get("sessionAffinity", "None") == "None"
    assert service["spec"]["selector"] == GATEWAY_LABELS


def test_app_pods_run_as_the_image_user_with_a_read_only_root(overlay: Manifest) -> None:
    workloads = app_workloads(overlay)
    assert {w["metadata"]["name"] for w in workloads} == {"gateway", "persistence", "migrate"}
    for workload in workloads:
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == image_uid()
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]


def test_app_containers_have_requests_and_limits(overlay: Manifest) -> None:
    for workload in app_workloads(overlay):
        for container in pod_spec(workload)["containers"]:
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"])
            assert "memory" in resources["limits"]


def test_images_are_tagged(overlay: Manifest) -> None:
    for workload in app_workloads(overlay):
        for container in pod_spec(workload)["containers"]:
            image = container["image"]
            assert is_app_image(image)
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert tag, f"{image} has no tag"
            assert tag != "latest"


def _allowed_components(policy: K8sObject) -> set[str]:
    """Components of the project the policy lets in; fails on any broader rule."""
    allowed: set[str] = set()
    for rule in policy["spec"]["ingress"]:
        for peer in rule["from"]:
            assert set(peer) == {"podSelector"}, f"{peer} admits more than the project's pods"
            expressions = {e["key"]: e for e in peer["podSelector"]["matchExpressions"]}
            assert expressions["app.kubernetes.io/name"]["values"] == ["chat-group"]
            allowed |= set(expressions["app.kubernetes.io/component"]["values"])
    return allowed


def _policy_for(overlay: Manifest, datastore: str) -> K8sObject:
    for policy in of_kind(overlay, "NetworkPolicy"):
        labels = policy["spec"]["podSelector"].get("matchLabels", {})
        if labels.get("app.kubernetes.io/name") == datastore:
            return policy
    raise AssertionError(f"no NetworkPolicy guards {datastore}")


def test_only_the_projects_processes_reach_postgres(overlay: Manifest) -> None:
    policy = _policy_for(overlay, "postgres")
    assert _allowed_components(policy) == {"gateway", "persistence", "migrate"}


def test_only_gateways_and_workers_reach_redis(overlay: Manifest) -> None:
    assert _allowed_components(_policy_for(overlay, "redis")) == {"gateway", "persistence"}


def test_in_cluster_datastores_are_the_ones_the_policies_select(overlay: Manifest) -> None:
    for datastore in of_kind(overlay, "StatefulSet"):
        labels = datastore["spec"]["template"]["metadata"]["labels"]
        selected = _policy_for(overlay, labels["app.kubernetes.io/name"])
        assert selected["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
