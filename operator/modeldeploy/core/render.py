"""Pure rendering: a ModelDeployment's spec and one version -> Deployment and Service (B1).

Part of the pure core (no kopf, no kubernetes). The pod template hash computed
here identifies a version's content: it decides when a rollout starts (B3) and
what the ledger quarantines (B7).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from modeldeploy import constants as c
from modeldeploy.core import capacity
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import JSON, Spec, VersionSpec


def selector_labels(name: str) -> dict[str, str]:
    # Never the version: a Deployment's selector is immutable.
    return {c.LABEL_NAME: name}


def common_labels(name: str) -> dict[str, str]:
    return {c.LABEL_APP: name, c.LABEL_MANAGED_BY: c.MANAGER, **selector_labels(name)}


def owner_reference(resource: Resource) -> JSON:
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "name": resource.name,
        "uid": resource.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _container(name: str, spec: Spec, version: VersionSpec) -> JSON:
    env: list[JSON] = [
        {"name": "MODEL_NAME", "value": name},
        {"name": "MODEL_VERSION", "value": version.name},
    ]
    if version.model_location:  # modelUri, or the registry's source for it
        env.append({"name": "MODEL_URI", "value": version.model_location})
    if version.config_map:
        env.append({"name": "MODEL_CONFIG", "value": c.CONFIG_PATH})
    env.extend(version.env)
    container: JSON = {
        "name": c.CONTAINER,
        "image": version.image,
        "ports": [{"name": c.PORT_NAME, "containerPort": spec.template.port, "protocol": "TCP"}],
        "env": env,
    }
    mounts: list[JSON] = []
    if version.config_map:
        mounts.append({"name": c.CONFIG_VOLUME, "mountPath": c.CONFIG_PATH, "readOnly": True})
    if spec.template.scratch_path:
        mounts.append({"name": c.SCRATCH_VOLUME, "mountPath": spec.template.scratch_path})
    if mounts:
        container["volumeMounts"] = mounts
    resources = version.resources or spec.template.resources
    if resources:
        container["resources"] = resources
    probe = default_readiness_probe(name) if spec.template.readiness_probe is None else None
    if probe or spec.template.readiness_probe:
        container["readinessProbe"] = probe or spec.template.readiness_probe
    if spec.template.liveness_probe:
        container["livenessProbe"] = spec.template.liveness_probe
    container["securityContext"] = spec.template.security_context or RESTRICTED_CONTAINER
    if spec.template.drain_s > 0:
        # Kubernetes' own sleep action: no shell or sleep binary needed in the image.
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": spec.template.drain_s}}}
    return container


def default_readiness_probe(name: str) -> JSON:
    """Ready when the server says the model `name` (MODEL_NAME) is loaded: the Open
    Inference Protocol's model readiness, served by MLServer, KServe, Triton and the
    reference server. Not /v2/health/ready: MLServer answers it 200 for a moment after a
    failed load, while it shuts down (docs/runtimes/mlserver.md)."""
    return {
        "httpGet": {"path": f"/v2/models/{name}/ready", "port": c.PORT_NAME},
        "periodSeconds": 2,
        "failureThreshold": 3,
    }


# The "restricted" Pod Security Standard, met by default, and more (docs/security.md): the
# model runs as a non-root user and group of its own (above any a host or image would
# give out: 10000 and up), cannot gain privileges, holds no capabilities, has the
# runtime's seccomp profile, and cannot write its root filesystem (an emptyDir at
# spec.template.scratchPath takes what it writes). A template's own podSecurityContext
# or securityContext replaces these.
MODEL_USER = 10001
RESTRICTED_POD: JSON = {
    "runAsNonRoot": True,
    "runAsUser": MODEL_USER,
    "runAsGroup": MODEL_USER,
    "fsGroup": MODEL_USER,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER: JSON = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def _pod_spec(name: str, spec: Spec, version: VersionSpec) -> JSON:
    template = spec.template
    pod: JSON = {
        "containers": [_container(name, spec, version)],
        "securityContext": template.pod_security_context or RESTRICTED_POD,
        # A model server has no business with the API: no token unless asked for.
        "automountServiceAccountToken": template.automount_service_account_token,
        # The drain (preStop sleep), then the server's own graceful stop, then SIGKILL.
        "terminationGracePeriodSeconds": template.grace_period_s,
    }
    if template.service_account_name:
        pod["serviceAccountName"] = template.service_account_name
    if spec.template.node_selector:
        pod["nodeSelector"] = spec.template.node_selector
    if spec.disruption and spec.disruption.spread_across_nodes:
        # A preference, never a wait: on a pool with fewer free nodes than replicas the
        # pods still schedule (B23), just not spread.
        pod["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector_labels(name)},
            }
        ]
    if spec.template.tolerations:
        pod["tolerations"] = list(spec.template.tolerations)
    volumes: list[JSON] = []
    if version.config_map:
        # The version's snapshot, whose name holds its content hash: a new snapshot is a
        # new template. None yet: decide holds the rollout until it is taken.
        snapshot = version.snapshot.name if version.snapshot else ""
        volumes.append({"name": c.CONFIG_VOLUME, "configMap": {"name": snapshot}})
    if template.scratch_path:
        volumes.append({"name": c.SCRATCH_VOLUME, "emptyDir": {}})
    if volumes:
        pod["volumes"] = volumes
    return pod


def template_hash(name: str, spec: Spec, version: VersionSpec) -> str:
    """A short, stable hash of everything that shapes a version's pods."""
    content = {
        "labels": {**common_labels(name), c.LABEL_VERSION: version.name},
        "spec": _pod_spec(name, spec, version),
    }
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    return digest[:12]


def render_deployment(
    resource: Resource,
    spec: Spec,
    version: VersionSpec,
    digest: str,
    gated: bool = False,
    strategy: str = c.STRATEGY_SURGE,
) -> JSON:
    """The Deployment running `version`, whose pod template hash is `digest`. `gated`:
    its pods carry the validated readiness gate (not part of the hash: it is how the
    version was rolled out, kept so a revert finds its ReplicaSet unchanged).
    `strategy`: how its rollout makes room (Surge or Replace, core/capacity.py)."""
    name = resource.name
    pod_spec = _pod_spec(name, spec, version)
    if gated:
        pod_spec["readinessGates"] = [{"conditionType": c.CONDITION_VALIDATED}]
    pod_labels = {
        **common_labels(name),
        c.LABEL_VERSION: version.name,
        c.LABEL_TEMPLATE_HASH: digest,
    }
    if version.snapshot:  # which snapshot the pods mount: kept while pods use it
        pod_labels[c.LABEL_CONFIG_HASH] = version.snapshot.hash
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": resource.namespace,
            "labels": common_labels(name),
            "annotations": {c.ANNOTATION_TEMPLATE_HASH: digest},
            "ownerReferences": [owner_reference(resource)],
        },
        "spec": {
            # Left out when an autoscaler owns the count: applied without the field, the
            # operator never writes over what the autoscaler set (B24).
            **({} if spec.autoscaled else {"replicas": spec.replicas}),
            "selector": {"matchLabels": selector_labels(name)},
            "progressDeadlineSeconds": spec.rollout.progress_deadline_s,
            "revisionHistoryLimit": 10,
            # Surge (maxUnavailable 0) unless this rollout makes room first (Replace).
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": capacity.rolling_update(spec.rollout, strategy),
            },
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }


def render_disruption_budget(resource: Resource, spec: Spec) -> JSON | None:
    """The PodDisruptionBudget over the serving pods (spec.disruption), or None. Its
    selector is the Deployment's: the standby's pods are not covered (they serve nothing
    until a revert switches to them)."""
    if spec.disruption is None:
        return None
    name = resource.name
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": name,
            "namespace": resource.namespace,
            "labels": common_labels(name),
            "ownerReferences": [owner_reference(resource)],
        },
        "spec": {
            "maxUnavailable": spec.disruption.max_unavailable,
            "selector": {"matchLabels": selector_labels(name)},
        },
    }


def standby_name(name: str) -> str:
    return f"{name}{STANDBY_SUFFIX}"


STANDBY_SUFFIX = "-standby"


def render_standby(
    resource: Resource, spec: Spec, version: VersionSpec, digest: str, replicas: int
) -> JSON:
    """The standby Deployment: `version` kept warm. Its pods carry standby-of, never the
    name label, so neither the main Deployment's selector nor the Service (unless a
    revert switched it) ever picks them up."""
    name = resource.name
    pod_labels = {
        c.LABEL_APP: name,
        c.LABEL_MANAGED_BY: c.MANAGER,
        c.LABEL_STANDBY_OF: name,
        c.LABEL_VERSION: version.name,
        c.LABEL_TEMPLATE_HASH: digest,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": standby_name(name),
            "namespace": resource.namespace,
            "labels": common_labels(name),
            "annotations": {c.ANNOTATION_TEMPLATE_HASH: digest},
            "ownerReferences": [owner_reference(resource)],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {c.LABEL_STANDBY_OF: name}},
            "revisionHistoryLimit": 2,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": spec.rollout.max_surge, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": _pod_spec(name, spec, version),
            },
        },
    }


def render_service(
    resource: Resource, spec: Spec, to_standby: bool = False, only: str | None = None
) -> JSON:
    """The Service in front of the resource's pods, whatever version they run; while a
    revert is switched to the standby, in front of the standby's pods instead; with
    `only`, in front of that template's pods alone (a failed version's are left out)."""
    if to_standby:
        selector = {c.LABEL_STANDBY_OF: resource.name}
    elif only is not None:
        selector = {**selector_labels(resource.name), c.LABEL_TEMPLATE_HASH: only}
    else:
        selector = selector_labels(resource.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": resource.name,
            "namespace": resource.namespace,
            "labels": common_labels(resource.name),
            "ownerReferences": [owner_reference(resource)],
        },
        "spec": {
            "selector": selector,
            "ports": [
                {
                    "name": c.PORT_NAME,
                    "port": spec.service.port,
                    "targetPort": c.PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def covers(observed: Any, desired: Any) -> bool:
    """True when every field we set has our value in the observed object.

    Fields the API server defaults (imagePullPolicy, terminationMessagePath...)
    are extra in `observed` and ignored, so an unchanged object compares equal
    and needs no write (B2), while a hand edit of our fields does not (drift).
    """
    if isinstance(desired, Mapping):
        return isinstance(observed, Mapping) and all(
            covers(observed.get(key), value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(observed, list)
            and len(observed) == len(desired)
            and all(covers(o, d) for o, d in zip(observed, desired, strict=True))
        )
    return bool(observed == desired or str(observed) == str(desired))
