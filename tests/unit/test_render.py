"""Rendering (B1): owned children, immutable selector, the model container, the template hash."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from modeldeploy.core.render import covers, render_deployment, render_service, template_hash
from modeldeploy.model.spec import JSON, VersionSpec
from tests.unit.builders import UID, digest, resource, spec_of


def rendered(**kwargs: Any) -> JSON:
    res = resource(**kwargs)
    spec = spec_of(res)
    return render_deployment(res, spec, spec.active, digest(res))


def test_deployment_is_owned_by_the_resource() -> None:
    (owner,) = rendered()["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "name": "m",
        "uid": UID,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_selector_never_contains_the_version_but_pods_carry_it() -> None:
    for active in ("v1", "v2"):
        manifest = rendered(active=active)
        assert manifest["spec"]["selector"] == {"matchLabels": {"modeldeploy.io/name": "m"}}
        assert (
            manifest["spec"]["template"]["metadata"]["labels"]["modeldeploy.io/version"] == active
        )


def test_model_container_gets_image_and_model_env_then_the_versions_env() -> None:
    res = resource()
    spec = spec_of(res)
    version = VersionSpec(
        name="v7", image="r/m:7", model_uri="s3://m/7", env=({"name": "THRESHOLD", "value": "0.7"},)
    )
    manifest = render_deployment(res, spec, version, template_hash(res.name, spec, version))
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    assert (container["name"], container["image"]) == ("model", "r/m:7")
    assert container["env"] == [
        {"name": "MODEL_NAME", "value": "m"},
        {"name": "MODEL_VERSION", "value": "v7"},
        {"name": "MODEL_URI", "value": "s3://m/7"},
        {"name": "THRESHOLD", "value": "0.7"},
    ]


def test_rolling_update_never_takes_capacity_away() -> None:
    strategy = rendered(maxSurge=2)["spec"]["strategy"]
    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 2, "maxUnavailable": 0},
    }


def test_progress_deadline_is_copied_to_the_deployment() -> None:
    assert rendered(progressDeadlineSeconds=77)["spec"]["progressDeadlineSeconds"] == 77


def test_service_selects_all_versions_by_name() -> None:
    res = resource()
    service = render_service(res, spec_of(res))
    assert service["spec"]["selector"] == {"modeldeploy.io/name": "m"}
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_template_hash_follows_content_not_identity() -> None:
    res = resource()
    spec = spec_of(res)
    v1 = spec.versions["v1"]
    same = template_hash("m", spec, v1)
    assert template_hash("m", spec, replace(v1)) == same
    assert template_hash("m", spec, replace(v1, image="r/m:9")) != same
    assert template_hash("m", spec, replace(v1, env=({"name": "A", "value": "1"},))) != same
    other_port = replace(spec, template=replace(spec.template, port=9000))
    assert template_hash("m", other_port, v1) != same


def test_covers_ignores_server_defaults_and_sees_our_fields_changed() -> None:
    desired = rendered()["spec"]
    observed = {**desired, "revisionHistoryLimit": 10, "paused": False}
    container = dict(desired["template"]["spec"]["containers"][0])
    container.update(imagePullPolicy="IfNotPresent", terminationMessagePath="/dev/termination-log")
    observed["template"] = {
        **desired["template"],
        "spec": {**desired["template"]["spec"], "containers": [container]},
    }
    assert covers(observed, desired)
    container["image"] = "someone/else:1"
    assert not covers(observed, desired)


def test_pods_meet_the_restricted_pod_security_standard_and_more_by_default() -> None:
    """Restricted, a user and group of their own above 10000, a read-only root
    filesystem with an emptyDir for scratch (what a scanner such as kube-score checks)."""
    pod = rendered()["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["volumeMounts"] == [{"name": "scratch", "mountPath": "/tmp"}]  # noqa: S108
    assert pod["volumes"] == [{"name": "scratch", "emptyDir": {}}]


def test_the_scratch_directory_moves_or_goes_with_the_template() -> None:
    res = resource()
    spec = spec_of(res)
    for path, mounted in (("/var/scratch", True), ("", False)):
        own = replace(spec, template=replace(spec.template, scratch_path=path))
        pod = render_deployment(res, own, own.active, digest(res))["spec"]["template"]["spec"]
        mounts = pod["containers"][0].get("volumeMounts", [])
        assert mounts == ([{"name": "scratch", "mountPath": path}] if mounted else [])
        assert ("volumes" in pod) is mounted


def test_a_template_owns_its_security_settings_when_it_sets_them() -> None:
    res = resource()
    spec = spec_of(res)
    own = replace(
        spec,
        template=replace(
            spec.template,
            pod_security_context={"runAsUser": 1000, "runAsNonRoot": True},
            security_context={"readOnlyRootFilesystem": True},
            service_account_name="model-reader",
            automount_service_account_token=True,
        ),
    )
    pod = render_deployment(res, own, own.active, digest(res))["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsUser": 1000, "runAsNonRoot": True}
    assert pod["containers"][0]["securityContext"] == {"readOnlyRootFilesystem": True}
    assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == (
        "model-reader",
        True,
    )


def test_pods_drain_before_they_stop_by_default() -> None:
    """A pod told to stop keeps serving 5 s (preStop sleep) while the Service drops it,
    then has 30 s more for the requests in flight."""
    pod = rendered()["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert pod["terminationGracePeriodSeconds"] == 35


def test_the_drain_and_grace_period_follow_the_template() -> None:
    res = resource()
    spec = spec_of(res)
    cases: tuple[tuple[int, int | None, JSON | None, int], ...] = (
        (15, None, {"preStop": {"sleep": {"seconds": 15}}}, 45),
        (5, 120, {"preStop": {"sleep": {"seconds": 5}}}, 120),
        (0, None, None, 30),  # no drain: no preStop at all
    )
    for drain, grace, lifecycle, rendered_grace in cases:
        template = replace(spec.template, drain_s=drain, termination_grace_period_s=grace)
        own = replace(spec, template=template)
        pod = render_deployment(res, own, own.active, digest(res))["spec"]["template"]["spec"]
        assert pod["containers"][0].get("lifecycle") == lifecycle, (drain, grace)
        assert pod["terminationGracePeriodSeconds"] == rendered_grace, (drain, grace)
        assert template_hash(res.name, own, own.active) != digest(res)  # a change rolls out


def test_readiness_is_the_models_own_by_default_and_a_template_may_replace_or_drop_it() -> None:
    res = resource()
    spec = spec_of(res)
    (container,) = rendered()["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/models/m/ready", "port": "http"}
    own_probe = {"httpGet": {"path": "/healthz", "port": 9000}}
    for probe, expected in ((own_probe, own_probe), ({}, None)):
        own = replace(spec, template=replace(spec.template, readiness_probe=probe))
        pod = render_deployment(res, own, own.active, digest(res))["spec"]["template"]["spec"]
        assert pod["containers"][0].get("readinessProbe") == expected
