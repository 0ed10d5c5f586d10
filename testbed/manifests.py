"""ModelDeployment manifests, as the tests, the benchmarks and the demo write them.

One builder for every caller (unit tests give it a namespace and uid; e2e tests and the
benchmarks let the API server fill those in), and one pod template for the real node:
its placement (the node is tainted so only pods asking for it land there), the
reference model server's port and readiness, small requests. Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from testbed import images, mlserver_image, realnode, resource_metrics

GROUP, VERSION = "modeldeploy.io", "v1alpha1"
JSON = dict[str, Any]


def model_deployment(
    name: str,
    versions: Mapping[str, str],
    active: str = "v1",
    replicas: int = 2,
    *,
    model_uris: bool = True,
    resources: Mapping[str, JSON] | None = None,
    **rollout: Any,
) -> JSON:
    """A ModelDeployment manifest; `versions` maps each version's name to its image.
    `model_uris`: give each version an s3:// model URI (the reference server's images
    carry their model and take none); `resources`: per-version overrides; `rollout`:
    spec.rollout's fields."""
    entries: list[JSON] = []
    for version, image in versions.items():
        entry: JSON = {"name": version, "image": image}
        if model_uris:
            entry["modelUri"] = f"s3://models/{name}/{version}"
        if resources and version in resources:
            entry["resources"] = dict(resources[version])
        entries.append(entry)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "activeVersion": active,
            "replicas": replicas,
            "versions": entries,
            "rollout": dict(rollout),
        },
    }


def real_node_template() -> JSON:
    """spec.template for the reference model server on the test bed's real node."""
    return {
        **realnode.POD_PLACEMENT,
        "port": images.SERVER_PORT,
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": 1,
        },
        "resources": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "96Mi"}},
    }


def real_model(
    name: str, variants: Mapping[str, str], active: str = "v1", replicas: int = 2, **rollout: Any
) -> JSON:
    """A ModelDeployment whose versions (name -> reference server image variant) run on
    the real node."""
    images_by_version = {v: images.model_server_image(variant) for v, variant in variants.items()}
    body = model_deployment(name, images_by_version, active, replicas, model_uris=False, **rollout)
    body["spec"]["template"] = real_node_template()
    return body


# Where the MLServer images keep their model: a version's modelUri must be a path in the
# container (MLServer reads no remote storage; docs/runtimes/mlserver.md).
MLSERVER_MODEL_URI = f"{mlserver_image.MODEL_FOLDER}/model.joblib"


def mlserver_model(
    name: str, variants: Mapping[str, str], active: str = "v1", replicas: int = 2, **rollout: Any
) -> JSON:
    """A ModelDeployment whose versions (name -> MLServer image variant) run on the real
    node with modeldeploy's defaults: image and model URI, and the placement that takes
    pods to the node, nothing else (no probe, port, drain or resources of its own)."""
    images_by_version = {v: mlserver_image.image_name(variant) for v, variant in variants.items()}
    body = model_deployment(name, images_by_version, active, replicas, model_uris=False, **rollout)
    for entry in body["spec"]["versions"]:
        entry["modelUri"] = MLSERVER_MODEL_URI
    body["spec"]["template"] = dict(realnode.POD_PLACEMENT)
    return body


GPU = "nvidia.com/gpu"


def gpu_node(name: str, pool: str) -> JSON:
    """A kwok node with one GPU, tainted and labelled `pool=<pool>`: only pods that
    tolerate and select it land there (`pool_placement`), so a test fills it exactly."""
    room = {"cpu": "8", "memory": "32Gi", "pods": "110", GPU: "1"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                "kwok.x-k8s.io/node": "fake",
                **resource_metrics.node_annotations(name),
            },
            "labels": {"kubernetes.io/hostname": name, "pool": pool},
        },
        "spec": {"taints": [{"key": "pool", "value": pool, "effect": "NoSchedule"}]},
        "status": {"allocatable": room, "capacity": room},
    }


def pool_placement(pool: str) -> JSON:
    """spec.template's placement onto the `gpu_node`s of `pool`."""
    return {
        "nodeSelector": {"pool": pool},
        "tolerations": [{"key": "pool", "value": pool, "effect": "NoSchedule"}],
    }
