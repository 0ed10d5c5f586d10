"""Typed, frozen views of a ModelDeployment and of what the cluster shows, parsed once.

Sits just above constants: the kube layer parses raw dicts into these at the
boundary; the pure core (render, rollout, conditions) only ever sees these types.
Status types convert back to the JSON the CRD schema declares.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from modeldeploy import constants as c

JSON = dict[str, Any]


class SpecError(ValueError):
    """The spec passed admission but cannot be served; the message says why."""


# ---------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class VersionSpec:
    name: str
    image: str
    model_uri: str | None = None
    env: tuple[JSON, ...] = ()
    resources: JSON | None = None


@dataclass(frozen=True)
class TemplateSpec:
    port: int = 8080
    readiness_probe: JSON | None = None
    liveness_probe: JSON | None = None
    resources: JSON | None = None
    node_selector: JSON | None = None
    tolerations: tuple[JSON, ...] = ()


@dataclass(frozen=True)
class ServiceSpec:
    enabled: bool = True
    port: int = 80


@dataclass(frozen=True)
class RolloutPolicy:
    auto_rollback: bool = True
    progress_deadline_s: int = 300
    ready_timeout_s: int = 300
    max_restarts: int = 2
    unschedulable_grace_s: int = 60
    max_surge: int = 1
    history_limit: int = 20


@dataclass(frozen=True)
class Check:
    """One analysis check: a PromQL query and its bound."""

    name: str
    query: str
    max: float | None = None
    min: float | None = None
    failure_limit: int = 0  # failed measurements tolerated; one more fails the version
    on_no_data: str = "Inconclusive"  # or "Fail": an empty result or unreachable Prometheus


@dataclass(frozen=True)
class AnalysisSpec:
    checks: tuple[Check, ...]
    prometheus: str | None = None  # None: the operator-wide --prometheus address
    bake_s: int = 300
    interval_s: int = 30


@dataclass(frozen=True)
class Spec:
    active_version: str
    replicas: int
    versions: Mapping[str, VersionSpec]  # by name, built once per parse (B12)
    template: TemplateSpec = TemplateSpec()
    service: ServiceSpec = ServiceSpec()
    rollout: RolloutPolicy = RolloutPolicy()
    webhook_url: str | None = None  # spec.notifications.webhook.url
    analysis: AnalysisSpec | None = None

    @property
    def active(self) -> VersionSpec:
        return self.versions[self.active_version]


class VersionIndex(Mapping[str, VersionSpec]):
    """spec.versions by name (B12): indexed once, each entry parsed when first looked up.

    A reconcile looks at a handful of versions (the active one, the last good one),
    so its cost must not grow with how many versions the resource lists.
    """

    def __init__(self, entries: Iterable[Mapping[str, Any]]) -> None:
        entries = entries if isinstance(entries, list) else list(entries)
        # The schema makes every name a string; indexing is the one pass a reconcile
        # makes over spec.versions, so it is kept to a bare dict build.
        try:
            self._raw = {entry["name"]: entry for entry in entries}
        except (KeyError, TypeError):
            raise SpecError("spec.versions: every entry needs a name") from None
        if len(self._raw) != len(entries):
            names = [str(entry.get("name", "")) for entry in entries]
            duplicate = next(name for name in names if names.count(name) > 1)
            raise SpecError(f"spec.versions: duplicate version name {duplicate!r}")
        self._parsed: dict[str, VersionSpec] = {}

    def __getitem__(self, name: str) -> VersionSpec:
        parsed = self._parsed.get(name)
        if parsed is None:
            entry = self._raw[name]
            if not entry.get("image"):
                raise SpecError(f"spec.versions[{name}].image must not be empty")
            parsed = self._parsed[name] = VersionSpec(
                name=name,
                image=str(entry["image"]),
                model_uri=entry.get("modelUri"),
                env=tuple(entry.get("env") or ()),
                resources=entry.get("resources"),
            )
        return parsed

    def __contains__(self, name: object) -> bool:
        return name in self._raw

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VersionIndex) and self._raw == other._raw

    __hash__ = None  # type: ignore[assignment]  # mutable memo inside: not hashable


def parse_spec(raw: Mapping[str, Any]) -> Spec:
    """Parse a spec the API server admitted; raise SpecError for what CEL cannot check."""
    versions = VersionIndex(raw.get("versions") or ())
    active = str(raw.get("activeVersion", ""))
    if active not in versions:
        raise SpecError(f"spec.activeVersion {active!r} names no entry of spec.versions")
    versions[active]
    replicas = int(raw.get("replicas", 1))
    if replicas < 0:
        raise SpecError("spec.replicas must be >= 0")
    template = raw.get("template") or {}
    service = raw.get("service") or {}
    rollout = raw.get("rollout") or {}
    defaults = RolloutPolicy()
    webhook = (raw.get("notifications") or {}).get("webhook") or {}
    return Spec(
        webhook_url=webhook.get("url"),
        analysis=parse_analysis(raw.get("analysis")),
        active_version=active,
        replicas=replicas,
        versions=versions,
        template=TemplateSpec(
            port=int(template.get("port", 8080)),
            readiness_probe=template.get("readinessProbe"),
            liveness_probe=template.get("livenessProbe"),
            resources=template.get("resources"),
            node_selector=template.get("nodeSelector"),
            tolerations=tuple(template.get("tolerations") or ()),
        ),
        service=ServiceSpec(
            enabled=bool(service.get("enabled", True)), port=int(service.get("port", 80))
        ),
        rollout=RolloutPolicy(
            auto_rollback=bool(rollout.get("autoRollback", defaults.auto_rollback)),
            progress_deadline_s=int(
                rollout.get("progressDeadlineSeconds", defaults.progress_deadline_s)
            ),
            ready_timeout_s=int(rollout.get("readyTimeoutSeconds", defaults.ready_timeout_s)),
            max_restarts=int(rollout.get("maxRestarts", defaults.max_restarts)),
            unschedulable_grace_s=int(
                rollout.get("unschedulableGraceSeconds", defaults.unschedulable_grace_s)
            ),
            max_surge=int(rollout.get("maxSurge", defaults.max_surge)),
            history_limit=int(rollout.get("historyLimit", defaults.history_limit)),
        ),
    )


def parse_analysis(raw: Mapping[str, Any] | None) -> AnalysisSpec | None:
    if not raw or not raw.get("checks"):
        return None
    checks = []
    for entry in raw["checks"]:
        bound_max, bound_min = entry.get("max"), entry.get("min")
        if bound_max is None and bound_min is None:
            raise SpecError(f"spec.analysis.checks[{entry.get('name')}] needs max or min")
        checks.append(
            Check(
                name=str(entry["name"]),
                query=str(entry["query"]),
                max=None if bound_max is None else float(bound_max),
                min=None if bound_min is None else float(bound_min),
                failure_limit=int(entry.get("failureLimit", 0)),
                on_no_data=str(entry.get("onNoData", "Inconclusive")),
            )
        )
    return AnalysisSpec(
        checks=tuple(checks),
        prometheus=raw.get("prometheus"),
        bake_s=int(raw.get("bakeSeconds", 300)),
        interval_s=int(raw.get("intervalSeconds", 30)),
    )


# -------------------------------------------------------------------------- status


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str
    last_transition_time: str
    observed_generation: int = 0


@dataclass(frozen=True)
class VersionRecord:
    """One entry of the ledger: what the operator knows of a version."""

    name: str
    state: str
    template_hash: str
    reason: str | None = None
    message: str | None = None
    failed_at: str | None = None
    last_available_at: str | None = None


@dataclass(frozen=True)
class RolloutRecord:
    """The rollout in progress or the last one; its times survive restarts (B3)."""

    revision: int
    version: str
    template_hash: str
    trigger: str
    started_at: str
    from_version: str | None = None
    outcome: str = c.OUTCOME_PROGRESSING
    reason: str | None = None
    message: str | None = None
    finished_at: str | None = None


@dataclass(frozen=True)
class Intent:
    """A spec change the operator itself made (revert or retry), recorded before it."""

    trigger: str
    version: str
    generation: int
    from_version: str | None = None
    at: str | None = None


@dataclass(frozen=True)
class CheckRecord:
    """What analysis measured for one check so far."""

    name: str
    passed: int = 0
    failed: int = 0
    inconclusive: int = 0
    last_outcome: str | None = None  # Passed, Failed or Inconclusive
    last_value: float | None = None
    last_measured_at: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class AnalysisRecord:
    """The analysis of one rollout's template; its window survives restarts."""

    version: str
    template_hash: str
    started_at: str
    ends_at: str
    phase: str = "Running"  # Running, Inconclusive, Passed, Failed
    checks: tuple[CheckRecord, ...] = ()


@dataclass(frozen=True)
class Revert:
    from_version: str
    to_version: str
    at: str


@dataclass(frozen=True)
class Status:
    observed_generation: int = 0
    phase: str = c.PHASE_PENDING
    serving_version: str | None = None
    last_good_version: str | None = None
    last_good_template_hash: str | None = None
    rollout: RolloutRecord | None = None
    intent: Intent | None = None
    versions: tuple[VersionRecord, ...] = ()
    history: tuple[RolloutRecord, ...] = ()
    reverts: tuple[Revert, ...] = ()
    replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    readiness: str | None = None  # "ready/desired", for the printer column
    analysis: AnalysisRecord | None = None
    conditions: tuple[Condition, ...] = ()

    def version_record(self, name: str) -> VersionRecord | None:
        return next((record for record in self.versions if record.name == name), None)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


_FIELD_NAMES = {"from_version": "from", "to_version": "to"}


def to_json(value: Any) -> Any:
    """Dataclasses to the camelCase JSON of the CRD; None fields are left out."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: JSON = {}
        for item in dataclasses.fields(value):
            item_value = getattr(value, item.name)
            if item_value is not None:
                out[_FIELD_NAMES.get(item.name) or _camel(item.name)] = to_json(item_value)
        return out
    if isinstance(value, tuple | list):
        return [to_json(item) for item in value]
    return value


def _from_json(cls: type[Any], raw: Mapping[str, Any]) -> Any:
    kwargs = {}
    for item in dataclasses.fields(cls):
        key = _FIELD_NAMES.get(item.name) or _camel(item.name)
        if key in raw:
            kwargs[item.name] = raw[key]
    return cls(**kwargs)


def parse_status(raw: Mapping[str, Any] | None) -> Status:
    raw = raw or {}
    rollout = raw.get("rollout")
    intent = raw.get("intent")
    analysis = raw.get("analysis")
    return Status(
        observed_generation=int(raw.get("observedGeneration", 0)),
        phase=raw.get("phase", c.PHASE_PENDING),
        serving_version=raw.get("servingVersion"),
        last_good_version=raw.get("lastGoodVersion"),
        last_good_template_hash=raw.get("lastGoodTemplateHash"),
        rollout=_from_json(RolloutRecord, rollout) if rollout else None,
        intent=_from_json(Intent, intent) if intent else None,
        versions=tuple(_from_json(VersionRecord, v) for v in raw.get("versions") or ()),
        history=tuple(_from_json(RolloutRecord, h) for h in raw.get("history") or ()),
        reverts=tuple(_from_json(Revert, r) for r in raw.get("reverts") or ()),
        replicas=int(raw.get("replicas", 0)),
        ready_replicas=int(raw.get("readyReplicas", 0)),
        updated_replicas=int(raw.get("updatedReplicas", 0)),
        readiness=raw.get("readiness"),
        analysis=replace(
            _from_json(AnalysisRecord, analysis),
            checks=tuple(_from_json(CheckRecord, k) for k in analysis.get("checks") or ()),
        )
        if analysis
        else None,
        conditions=tuple(_from_json(Condition, k) for k in raw.get("conditions") or ()),
    )


# ------------------------------------------------------------ the resource as read


@dataclass(frozen=True)
class Resource:
    """A ModelDeployment as read: identity, parsed spec (or why not), status."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: Spec | SpecError
    status: Status = Status()
    retry_version: str | None = None  # the modeldeploy.io/retry annotation, if set


def parse_resource(body: Mapping[str, Any]) -> Resource:
    meta = body.get("metadata") or {}
    try:
        spec: Spec | SpecError = parse_spec(body.get("spec") or {})
    except SpecError as error:
        spec = error
    except (TypeError, ValueError) as error:
        spec = SpecError(f"spec cannot be read: {error}")
    return Resource(
        name=meta["name"],
        namespace=meta.get("namespace", "default"),
        uid=meta.get("uid", ""),
        generation=int(meta.get("generation", 0)),
        spec=spec,
        status=parse_status(body.get("status")),
        retry_version=(meta.get("annotations") or {}).get(c.ANNOTATION_RETRY),
    )


# --------------------------------------------------------------- observed children


@dataclass(frozen=True)
class ContainerState:
    name: str
    ready: bool = False
    restart_count: int = 0
    waiting_reason: str | None = None
    waiting_message: str | None = None
    last_terminated_reason: str | None = None
    last_exit_code: int | None = None


@dataclass(frozen=True)
class PodState:
    name: str
    owner: str  # the ModelDeployment it serves (LABEL_NAME)
    template_hash: str | None
    created_at: datetime
    ready: bool = False
    deleting: bool = False
    containers: tuple[ContainerState, ...] = ()
    unschedulable_since: datetime | None = None
    unschedulable_message: str | None = None


@dataclass(frozen=True)
class ChildState:
    """An owned Deployment or Service as observed, trimmed to what decisions need."""

    name: str
    controller_uid: str | None  # uid of the controller ownerReference, if any
    spec: JSON = field(default_factory=dict)
    template_hash: str | None = None
    generation: int = 0
    observed_generation: int = 0
    replicas: int = 0
    updated_replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    progress_deadline_exceeded: bool = False


@dataclass(frozen=True)
class Measurement:
    """One analysis query's answer: a value, or None with why (no data, unreachable)."""

    check: str
    template_hash: str
    at: datetime
    value: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Observed:
    deployment: ChildState | None = None
    service: ChildState | None = None
    pods: tuple[PodState, ...] = ()
    measurements: tuple[Measurement, ...] = ()


def _controller_uid(meta: Mapping[str, Any]) -> str | None:
    for ref in meta.get("ownerReferences") or ():
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def parse_child(body: Mapping[str, Any]) -> ChildState:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    spec = dict(body.get("spec") or {})
    conditions = status.get("conditions") or ()
    return ChildState(
        name=meta.get("name", ""),
        controller_uid=_controller_uid(meta),
        spec=spec,
        template_hash=(meta.get("annotations") or {}).get(c.ANNOTATION_TEMPLATE_HASH),
        generation=int(meta.get("generation", 0)),
        observed_generation=int(status.get("observedGeneration", 0)),
        replicas=int(status.get("replicas", 0)),
        updated_replicas=int(status.get("updatedReplicas", 0)),
        ready_replicas=int(status.get("readyReplicas", 0)),
        available_replicas=int(status.get("availableReplicas", 0)),
        progress_deadline_exceeded=any(
            k.get("type") == "Progressing" and k.get("reason") == c.REASON_PROGRESS_DEADLINE
            for k in conditions
        ),
    )


def parse_pod(body: Mapping[str, Any]) -> PodState:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    labels = meta.get("labels") or {}
    conditions = {k.get("type"): k for k in status.get("conditions") or ()}
    scheduled = conditions.get("PodScheduled") or {}
    unschedulable = scheduled.get("status") == "False" and scheduled.get("reason") == (
        c.REASON_UNSCHEDULABLE
    )
    containers = []
    for raw in status.get("containerStatuses") or ():
        waiting = (raw.get("state") or {}).get("waiting") or {}
        terminated = (raw.get("lastState") or {}).get("terminated") or {}
        containers.append(
            ContainerState(
                name=raw.get("name", ""),
                ready=bool(raw.get("ready")),
                restart_count=int(raw.get("restartCount", 0)),
                waiting_reason=waiting.get("reason"),
                waiting_message=waiting.get("message"),
                last_terminated_reason=terminated.get("reason"),
                last_exit_code=terminated.get("exitCode"),
            )
        )
    created = parse_time(meta.get("creationTimestamp")) or datetime.now(UTC)
    return PodState(
        name=meta.get("name", ""),
        owner=labels.get(c.LABEL_NAME, ""),
        template_hash=labels.get(c.LABEL_TEMPLATE_HASH),
        created_at=created,
        ready=(conditions.get("Ready") or {}).get("status") == "True",
        deleting=bool(meta.get("deletionTimestamp")),
        containers=tuple(containers),
        unschedulable_since=parse_time(scheduled.get("lastTransitionTime"))
        if unschedulable
        else None,
        unschedulable_message=scheduled.get("message") if unschedulable else None,
    )


def owner_key(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, ModelDeployment name) of a child carrying our name label."""
    meta = body.get("metadata") or {}
    owner = (meta.get("labels") or {}).get(c.LABEL_NAME)
    return (meta.get("namespace", ""), owner) if owner else None
