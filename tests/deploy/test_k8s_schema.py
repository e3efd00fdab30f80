"""Every object the overlays render, and the Secret example, is valid Kubernetes.

kubernetes-validate ships the Kubernetes JSON schemas, so this runs offline.
Strict mode: an unknown field (a typo) is an error, not silently dropped.
"""

from __future__ import annotations

import kubernetes_validate
import pytest

from tests.deploy.manifests import K8S, Manifest, load_yaml_documents

# The oldest Kubernetes the manifests support, and the newest the package knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def _schema_errors(objects: Manifest, version: str) -> list[str]:
    errors = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: no schema for this kind")
    return errors


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_rendered_objects_match_the_schemas(overlay: Manifest, version: str) -> None:
    assert overlay, "the overlay rendered nothing"
    assert _schema_errors(overlay, version) == []


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_secret_example_matches_the_schema(version: str) -> None:
    assert _schema_errors(load_yaml_documents(K8S / "base" / "secret.example.yaml"), version) == []
