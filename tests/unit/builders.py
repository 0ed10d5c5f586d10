"""Builders for unit tests of the pure core: resources, observed children, time.

They speak in the operator's own types, so a test reads as a scenario: a spec,
what the cluster shows, the time; then what `decide` makes of it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from modeldeploy import constants as c
from modeldeploy.core.decide import decide
from modeldeploy.core.plan import Decision
from modeldeploy.core.render import render_deployment, render_service, template_hash
from modeldeploy.model.observed import (
    ChildState,
    ContainerState,
    DeploymentCondition,
    Observed,
    PodState,
    ReplicaSetState,
)
from modeldeploy.model.resource import Resource, parse_resource
from modeldeploy.model.spec import Spec
from modeldeploy.model.status import (
    AnalysisRecord,
    Baseline,
    CheckRecord,
    Condition,
    ConfigRecord,
    Intent,
    Notice,
    Revert,
    RolloutRecord,
    StandbyRecord,
    Status,
    ValidationRecord,
    VersionRecord,
)
from testbed.manifests import model_deployment

T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
UID = "uid-1"
DEPLOY_UID, RS_UID = "deployment-uid", "replicaset-uid"
OURS = (ReplicaSetState(uid=RS_UID, controller_uid=DEPLOY_UID),)
T = TypeVar("T")
GOOD, BAD = "registry.example/m:1", "registry.example/m:2"


def present(value: T | None) -> T:
    """`value`, which the scenario guarantees is there."""
    assert value is not None
    return value


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def body(
    active: str = "v1",
    versions: dict[str, str] | None = None,
    replicas: int = 2,
    generation: int = 1,
    retry: str | None = None,
    **rollout: Any,
) -> dict[str, Any]:
    """The one builder's manifest (testbed/manifests.py), as the API server would hand it
    back: named `m` in `ns`, with its uid and generation."""
    built = model_deployment(
        "m", versions or {"v1": GOOD, "v2": BAD}, active, replicas, model_uris=False, **rollout
    )
    built["metadata"] = {"name": "m", "namespace": "ns", "uid": UID, "generation": generation}
    if retry:
        built["metadata"]["annotations"] = {c.ANNOTATION_RETRY: retry}
    return built


def resource(status: Status | None = None, **kwargs: Any) -> Resource:
    parsed = parse_resource(body(**kwargs))
    return replace(parsed, status=status or Status())


def spec_of(res: Resource) -> Spec:
    """The parsed spec of a resource the test built valid."""
    assert isinstance(res.spec, Spec), res.spec
    return res.spec


def digest(res: Resource, version: str | None = None) -> str:
    spec = spec_of(res)
    return template_hash(res.name, spec, spec.versions[version or spec.active_version])


def deployment(
    res: Resource,
    version: str | None = None,
    ready: int | None = None,
    old: int = 0,
    deadline_exceeded: bool = False,
    owner: str = UID,
) -> ChildState:
    """Our Deployment as the cluster shows it, running `version` with `ready` new pods."""
    spec = spec_of(res)
    chosen = spec.versions[version or spec.active_version]
    manifest = render_deployment(res, spec, chosen, template_hash(res.name, spec, chosen))
    new = spec.replicas if ready is None else ready
    return ChildState(
        name=res.name,
        uid=DEPLOY_UID,
        controller_uid=owner,
        spec=manifest["spec"],
        template_hash=manifest["metadata"]["annotations"][c.ANNOTATION_TEMPLATE_HASH],
        generation=2,
        observed_generation=2,
        replicas=new + old,
        updated_replicas=new,
        ready_replicas=new + old,
        available_replicas=new,
        progress_deadline=DeploymentCondition(
            c.REASON_PROGRESS_DEADLINE,
            "stuck",
            at(9),
            replica_set=replica_set(res, chosen.name).name,
        )
        if deadline_exceeded
        else None,
    )


def replica_set(res: Resource, version: str) -> ReplicaSetState:
    """The ReplicaSet our Deployment made for `version`'s template."""
    res_digest = digest(res, version)
    return ReplicaSetState(
        uid=f"rs-{res_digest}",
        controller_uid=DEPLOY_UID,
        name=f"{res.name}-{res_digest[:10]}",
        template_hash=res_digest,
    )


def service(res: Resource) -> ChildState:
    spec = spec_of(res)
    manifest = render_service(res, spec)
    return ChildState(name=res.name, controller_uid=UID, spec=manifest["spec"])


def pod(
    res: Resource,
    version: str | None = None,
    name: str = "m-abc-1",
    ready: bool = False,
    created: float = 0,
    **container: Any,
) -> PodState:
    return PodState(
        name=name,
        owner=res.name,
        template_hash=digest(res, version),
        created_at=at(created),
        controller_uid=RS_UID,
        ready=ready,
        containers=(ContainerState(name=c.CONTAINER, ready=ready, **container),),
    )


def step(res: Resource, observed: Observed, seconds: float) -> tuple[Resource, Decision]:
    """Decide, and carry the decided status into the next resource (a successful write)."""
    decision = decide(res, ours(observed), at(seconds))
    return replace(res, status=decision.status), decision


def ours(observed: Observed) -> Observed:
    """`observed` with our ReplicaSet in it, so its pods count as ours."""
    return observed if observed.replica_sets else replace(observed, replica_sets=OURS)


def select(res: Resource, version: str) -> Resource:
    """What a spec change of activeVersion does: a new generation."""
    spec = spec_of(res)
    return replace(res, spec=replace(spec, active_version=version), generation=res.generation + 1)


def serving_v1(**kwargs: Any) -> Resource:
    """A resource whose v1 rolled out and was observed Available."""
    res = resource(**kwargs)
    res, _ = step(res, Observed(), 0)
    res, _ = step(res, Observed(deployment=deployment(res)), 2)
    assert res.status.last_good_version == "v1"
    return res


def condition(res_or_status: Resource | Status, type_: str) -> tuple[str, str]:
    status = res_or_status.status if isinstance(res_or_status, Resource) else res_or_status
    found = next(k for k in status.conditions if k.type == type_)
    return found.status, found.reason


T1 = datetime(2026, 11, 23, 12, 0, 0, 250000, tzinfo=UTC)
T2 = datetime(2026, 11, 23, 12, 0, 1, 500000, tzinfo=UTC)
# A status with every field filled, as parsing and the CRD must take it.
FULL = Status(
    observed_generation=3,
    phase="Available",
    serving_version="v1",
    last_good_version="v1",
    last_good_template_hash="h1",
    rollout=RolloutRecord(
        revision=2,
        version="v1",
        template_hash="h1",
        trigger="Automatic",
        started_at=T1,
        from_version="v2",
        outcome="Succeeded",
        reason="RolledBack",
        message="m",
        finished_at=T2,
        stage="Guard",
        generation=2,
        baseline=(Baseline(pod="p", container="model", restarts=3),),
    ),
    intent=Intent(trigger="Automatic", version="v1", generation=2, from_version="v2", at=T1),
    versions=(
        VersionRecord(
            name="v2",
            state="Failed",
            template_hash="h2",
            reason="OOMKilled",
            message="m",
            failed_at=T1,
        ),
    ),
    history=(
        RolloutRecord(
            revision=1, version="v2", template_hash="h2", trigger="Manual", started_at=T1
        ),
    ),
    reverts=(Revert(from_version="v2", to_version="v1", at=T1),),
    replicas=3,
    ready_replicas=3,
    updated_replicas=3,
    readiness="3/3",
    analysis=AnalysisRecord(
        version="v1",
        template_hash="h1",
        started_at=T1,
        ends_at=T2,
        phase="Passed",
        checks=(CheckRecord(name="e", passed=2, last_value="0.01"),),
        guard_ends_at=T2,
        previous_good="v0",
        previous_good_hash="h0",
    ),
    validation=ValidationRecord(
        version="v1",
        template_hash="h1",
        started_at=T1,
        revision=2,
        generation=3,
        phase="Passed",
        passed_pods=("m-1-a", "m-1-b"),
        message="2/2 Ready pods answered every golden request as expected",
    ),
    configs=(
        ConfigRecord(
            version="v1",
            source="m-config",
            name="m-v1-0123abcd",
            hash="0123abcd45678901",
            taken_at=T1,
            retired_at=T2,
        ),
    ),
    standby=StandbyRecord(version="v0", template_hash="h0", ends_at=T2, serving=True),
    outbox=(Notice(type="Normal", reason="RolledBack", message="m", at=T1),),
    conditions=(
        Condition(
            type="Ready",
            status="True",
            reason="Available",
            message="",
            last_transition_time=T1,
            observed_generation=3,
        ),
    ),
)
