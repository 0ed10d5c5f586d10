"""The spec of a ModelDeployment: typed, frozen, parsed once per reconcile.

Each default lives once, as a dataclass field default; the parsers read the JSON
keys listed beside each type and fall back to those defaults. tests/unit/test_crd.py
pins the CRD's `default:` values against them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from modeldeploy import constants as c

JSON = dict[str, Any]


class SpecError(ValueError):
    """The spec passed admission but cannot be served; the message says why."""


@dataclass(frozen=True)
class Snapshot:
    """The immutable copy of a version's source ConfigMap its pods mount (status.configs)."""

    source: str  # the ConfigMap it was copied from
    name: str  # the snapshot ConfigMap
    hash: str  # its content hash


@dataclass(frozen=True)
class RegistryRef:
    """versions[].registry: a model version of spec.registry's MLflow registry, by its
    number or by an alias (resolved once, at the version's first rollout)."""

    model: str
    version: str | None = None  # "3"
    alias: str | None = None  # "champion"

    @property
    def named(self) -> str:
        """How a sentence names it: fraud/3 or fraud@champion."""
        return f"{self.model}/{self.version}" if self.version else f"{self.model}@{self.alias}"


@dataclass(frozen=True)
class Resolved:
    """What a RegistryRef resolved to (status.registry): the model version behind it and
    where its files are."""

    model_version: str
    source: str  # the storage location: the pods' MODEL_URI
    run_id: str | None = None


@dataclass(frozen=True)
class VersionSpec:
    name: str
    image: str
    model_uri: str | None = None
    env: tuple[JSON, ...] = ()
    resources: JSON | None = None
    config_map: str | None = None  # versions[].config.configMapName: the source
    # Never read from the spec: the snapshot status records for this version, filled in
    # when the spec is read beside its status, while it is of the source the spec names.
    snapshot: Snapshot | None = None
    registry: RegistryRef | None = None  # versions[].registry
    # Never read from the spec: what status.registry records this reference resolved to.
    resolved: Resolved | None = None

    @property
    def model_location(self) -> str | None:
        """MODEL_URI: modelUri when the spec gives one, else the registry's answer."""
        if self.model_uri:
            return self.model_uri
        return self.resolved.source if self.resolved else None


@dataclass(frozen=True)
class MlflowRegistry:
    """spec.registry.mlflow: the MLflow tracking server whose model registry versions
    name, the Secret with its credentials, and the alias to move to what serves."""

    tracking_uri: str
    credentials_secret: str | None = None  # keys `token`, or `username` and `password`
    alias: str | None = None  # moved to the version that serves (write-back)


# What the default grace period leaves a server, after the drain, to finish what it serves.
GRACE_AFTER_DRAIN_S = 30


@dataclass(frozen=True)
class TemplateSpec:
    port: int = 8080
    # None: the Open Inference Protocol's model readiness, GET /v2/models/NAME/ready on
    # the port (render.py); {} for no probe at all.
    readiness_probe: JSON | None = None
    liveness_probe: JSON | None = None
    resources: JSON | None = None
    node_selector: JSON | None = None
    tolerations: tuple[JSON, ...] = ()
    # None: the "restricted" Pod Security Standard's settings (render.py); set to own them.
    pod_security_context: JSON | None = None
    security_context: JSON | None = None  # the model container's
    service_account_name: str | None = None
    automount_service_account_token: bool = False
    # An emptyDir mounted here for what the server writes (the root filesystem is
    # read-only by default); "" for none.
    scratch_path: str = "/tmp"  # noqa: S108  (a path in the pod, an emptyDir)
    # A pod told to stop keeps serving this long (a preStop sleep) while the Service
    # takes it out of its endpoints; then SIGTERM, and the server's own graceful stop.
    drain_s: int = 5
    # None: drain_s + GRACE_AFTER_DRAIN_S. Must cover the drain and the longest request.
    termination_grace_period_s: int | None = None

    @property
    def grace_period_s(self) -> int:
        """The pods' terminationGracePeriodSeconds: as set, or the drain plus time to
        finish the requests in flight."""
        if self.termination_grace_period_s is not None:
            return self.termination_grace_period_s
        return self.drain_s + GRACE_AFTER_DRAIN_S


@dataclass(frozen=True)
class ServiceSpec:
    enabled: bool = True
    port: int = 80


@dataclass(frozen=True)
class Standby:
    """spec.rollout.standby: the previous good version kept Ready, without traffic, for
    `seconds` after a new version is promoted, so a late revert is a Service switch."""

    seconds: int
    replicas: int | None = None  # None: spec.replicas (fewer: a GPU budget, less capacity)


@dataclass(frozen=True)
class RolloutPolicy:
    auto_rollback: bool = True
    progress_deadline_s: int = 300
    ready_timeout_s: int = 300
    max_restarts: int = 2
    unschedulable_grace_s: int = 60
    max_surge: int = 1
    strategy: str = c.STRATEGY_SURGE  # or STRATEGY_REPLACE, STRATEGY_AUTO
    max_unavailable: int = 1  # Replace (and Auto once switched): old pods down at a time
    history_limit: int = 20
    on_failure: str = c.ON_FAILURE_REVERT_SPEC  # or ON_FAILURE_KEEP_SPEC
    standby: Standby | None = None  # keep the previous good version warm after promotion
    # A failed version's Ready pods: out of the Service at once (Stop) or until they go (Keep).
    failed_traffic: str = c.FAILED_TRAFFIC_STOP

    @property
    def keeps_spec(self) -> bool:
        """KeepSpec: a failure puts the Deployment back, never rewrites the spec."""
        return self.on_failure == c.ON_FAILURE_KEEP_SPEC


@dataclass(frozen=True)
class Check:
    """One analysis check: a PromQL query and its bound."""

    name: str
    query: str
    max: float | None = None
    min: float | None = None
    failure_limit: int = 0  # failed measurements tolerated; one more fails the version
    on_no_data: str = c.NO_DATA_INCONCLUSIVE  # or NO_DATA_FAIL: no data, or unreachable


@dataclass(frozen=True)
class AnalysisSpec:
    checks: tuple[Check, ...]
    prometheus: str | None = None  # None: the operator-wide --prometheus address
    bake_s: int = 300
    interval_s: int = 30
    guard_s: int = 0  # after promotion, keep judging the version this long (0: no guard)


OIP_INFER_PATH = "/v2/models/{{name}}/infer"  # the Open Inference Protocol's, for the model
JsonPath = tuple[str | int, ...]  # keys and list indexes, from the document's root


@dataclass(frozen=True)
class Expectation:
    """A value the answer must hold at `path`: the string `equals`, or a number within
    `tolerance` of `number`."""

    path: str  # as written: outputs[0].data[0]
    steps: JsonPath
    equals: str | None = None
    number: float | None = None
    tolerance: float = 0.0


@dataclass(frozen=True)
class Expect:
    status: int = 200
    values: tuple[Expectation, ...] = ()


@dataclass(frozen=True)
class GoldenRequest:
    """One request sent to each new pod (and a rollback target's) and what must come back."""

    name: str
    body: JSON | None = None
    path: str = OIP_INFER_PATH  # {{name}}, {{namespace}} and {{version}} are filled in
    method: str = "POST"
    timeout_s: float = 5.0  # the whole request, connect to last byte
    expect: Expect = Expect()


@dataclass(frozen=True)
class ValidationSpec:
    requests: tuple[GoldenRequest, ...]


@dataclass(frozen=True)
class Webhook:
    """spec.notifications.webhook: a URL, or where in a Secret of the namespace it is."""

    url: str | None = None
    secret_name: str | None = None  # urlFrom.secretKeyRef: the URL is a credential
    secret_key: str | None = None


@dataclass(frozen=True)
class Disruption:
    """spec.disruption: a PodDisruptionBudget over the serving pods, so a node drain never
    takes more than `max_unavailable` of them at once; optionally spread over nodes."""

    max_unavailable: int = 1
    spread_across_nodes: bool = False


@dataclass(frozen=True)
class Spec:
    active_version: str
    versions: Mapping[str, VersionSpec]  # by name, built once per parse (B12)
    # spec.replicas; left out, an autoscaler (HPA, KEDA) owns the count: the operator
    # never writes it and judges against what the Deployment asks now (`with_replicas`).
    replicas: int = 1
    autoscaled: bool = False
    template: TemplateSpec = TemplateSpec()
    service: ServiceSpec = ServiceSpec()
    rollout: RolloutPolicy = RolloutPolicy()
    webhook: Webhook | None = None
    analysis: AnalysisSpec | None = None
    validation: ValidationSpec | None = None
    disruption: Disruption | None = None
    registry: MlflowRegistry | None = None  # spec.registry.mlflow

    @property
    def active(self) -> VersionSpec:
        return self.versions[self.active_version]


# JSON key -> (field, conversion), for the plain fields of each type. The CRD pin test
# reads these to compare the CRD's defaults with the dataclasses'.
Keys = Mapping[str, tuple[str, Callable[[Any], Any]]]
TEMPLATE_KEYS: Keys = {
    "port": ("port", int),
    "readinessProbe": ("readiness_probe", dict),
    "livenessProbe": ("liveness_probe", dict),
    "resources": ("resources", dict),
    "nodeSelector": ("node_selector", dict),
    "tolerations": ("tolerations", tuple),
    "podSecurityContext": ("pod_security_context", dict),
    "securityContext": ("security_context", dict),
    "serviceAccountName": ("service_account_name", str),
    "automountServiceAccountToken": ("automount_service_account_token", bool),
    "scratchPath": ("scratch_path", str),
    "drainSeconds": ("drain_s", int),
    "terminationGracePeriodSeconds": ("termination_grace_period_s", int),
}
SERVICE_KEYS: Keys = {"enabled": ("enabled", bool), "port": ("port", int)}
ROLLOUT_KEYS: Keys = {
    "autoRollback": ("auto_rollback", bool),
    "progressDeadlineSeconds": ("progress_deadline_s", int),
    "readyTimeoutSeconds": ("ready_timeout_s", int),
    "maxRestarts": ("max_restarts", int),
    "unschedulableGraceSeconds": ("unschedulable_grace_s", int),
    "maxSurge": ("max_surge", int),
    "strategy": ("strategy", str),
    "maxUnavailable": ("max_unavailable", int),
    "historyLimit": ("history_limit", int),
    "onFailure": ("on_failure", str),
    "standby": ("standby", lambda raw: Standby(**known(raw, STANDBY_KEYS))),
    "failedTraffic": ("failed_traffic", str),
}
STANDBY_KEYS: Keys = {"seconds": ("seconds", int), "replicas": ("replicas", int)}
CHECK_KEYS: Keys = {
    "name": ("name", str),
    "query": ("query", str),
    "max": ("max", float),
    "min": ("min", float),
    "failureLimit": ("failure_limit", int),
    "onNoData": ("on_no_data", str),
}
ANALYSIS_KEYS: Keys = {
    "prometheus": ("prometheus", str),
    "bakeSeconds": ("bake_s", int),
    "intervalSeconds": ("interval_s", int),
    "guardSeconds": ("guard_s", int),
}
SPEC_KEYS: Keys = {"replicas": ("replicas", int)}
DISRUPTION_KEYS: Keys = {
    "maxUnavailable": ("max_unavailable", int),
    "spreadAcrossNodes": ("spread_across_nodes", bool),
}
REQUEST_KEYS: Keys = {
    "name": ("name", str),
    "body": ("body", dict),
    "path": ("path", str),
    "method": ("method", str),
    "timeoutSeconds": ("timeout_s", float),
}
EXPECT_KEYS: Keys = {"status": ("status", int)}


def known(raw: Mapping[str, Any] | None, keys: Keys) -> dict[str, Any]:
    """The fields `raw` sets (null counts as unset), converted, ready for a dataclass."""
    raw = raw or {}
    return {
        field: convert(raw[key])
        for key, (field, convert) in keys.items()
        if raw.get(key) is not None
    }


def field_default(cls: type[Any], name: str) -> Any:
    """The dataclass default of `cls.name` (what the CRD's default must equal)."""
    return next(f.default for f in fields(cls) if f.name == name)


class VersionIndex(Mapping[str, VersionSpec]):
    """spec.versions by name (B12): indexed once, each entry parsed when first looked up.

    A reconcile looks at a handful of versions (the active one, the last good one),
    so its cost must not grow with how many versions the resource lists.
    """

    def __init__(
        self,
        entries: Iterable[Mapping[str, Any]],
        snapshots: Mapping[str, Snapshot] | None = None,
        resolutions: Mapping[str, tuple[RegistryRef, Resolved]] | None = None,
    ) -> None:
        entries = entries if isinstance(entries, list) else list(entries)
        self._snapshots = snapshots or {}
        self._resolutions = resolutions or {}
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
            source = (entry.get("config") or {}).get("configMapName")
            snapshot = self._snapshots.get(name)
            reference = parse_registry_ref(entry.get("registry"), name)
            resolution = self._resolutions.get(name)
            parsed = self._parsed[name] = VersionSpec(
                name=name,
                image=str(entry["image"]),
                model_uri=entry.get("modelUri"),
                env=tuple(entry.get("env") or ()),
                resources=entry.get("resources"),
                config_map=str(source) if source else None,
                # A snapshot of another source than the one named now is not this config.
                snapshot=snapshot if snapshot and source and snapshot.source == source else None,
                registry=reference,
                # What another reference resolved to is not this version's model.
                resolved=resolution[1]
                if resolution and reference and resolution[0] == reference
                else None,
            )
        return parsed

    def with_snapshots(self, snapshots: Mapping[str, Snapshot]) -> VersionIndex:
        """The same entries, each version with the snapshot `snapshots` records for it."""
        index = VersionIndex.__new__(VersionIndex)
        index._raw, index._snapshots, index._parsed = self._raw, snapshots, {}
        index._resolutions = self._resolutions
        return index

    def with_resolutions(
        self, resolutions: Mapping[str, tuple[RegistryRef, Resolved]]
    ) -> VersionIndex:
        """The same entries, each version with what its registry reference resolved to."""
        index = VersionIndex.__new__(VersionIndex)
        index._raw, index._snapshots, index._parsed = self._raw, self._snapshots, {}
        index._resolutions = resolutions
        return index

    def __contains__(self, name: object) -> bool:
        return name in self._raw

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, VersionIndex)
            and self._raw == other._raw
            and self._snapshots == other._snapshots
            and self._resolutions == other._resolutions
        )

    __hash__ = None  # type: ignore[assignment]  # mutable memo inside: not hashable


def parse_spec(
    raw: Mapping[str, Any],
    snapshots: Mapping[str, Snapshot] | None = None,
    resolutions: Mapping[str, tuple[RegistryRef, Resolved]] | None = None,
) -> Spec:
    """Parse a spec the API server admitted; raise SpecError for what CEL cannot check.

    `snapshots`: the configuration snapshot status records for each version, if any;
    `resolutions`: what each version's registry reference resolved to (status.registry)."""
    versions = VersionIndex(raw.get("versions") or (), snapshots, resolutions)
    active = str(raw.get("activeVersion", ""))
    if active not in versions:
        raise SpecError(f"spec.activeVersion {active!r} names no entry of spec.versions")
    versions[active]  # parses (and checks) the active entry now
    spec = Spec(
        active_version=active,
        versions=versions,
        template=TemplateSpec(**known(raw.get("template"), TEMPLATE_KEYS)),
        service=ServiceSpec(**known(raw.get("service"), SERVICE_KEYS)),
        rollout=RolloutPolicy(**known(raw.get("rollout"), ROLLOUT_KEYS)),
        webhook=parse_webhook((raw.get("notifications") or {}).get("webhook")),
        analysis=parse_analysis(raw.get("analysis")),
        validation=parse_validation(raw.get("validation")),
        disruption=Disruption(**known(raw["disruption"], DISRUPTION_KEYS))
        if raw.get("disruption") is not None
        else None,
        **known(raw, SPEC_KEYS),
        autoscaled=raw.get("replicas") is None,
        registry=parse_registry(raw.get("registry")),
    )
    if spec.replicas < 0:
        raise SpecError("spec.replicas must be >= 0")
    if spec.active.registry is not None and spec.registry is None:
        raise SpecError(
            f"spec.versions[{active}].registry names a model version, but spec.registry "
            "names no registry"
        )
    if spec.template.drain_s < 0:
        raise SpecError("spec.template.drainSeconds must be >= 0")
    if spec.template.grace_period_s < spec.template.drain_s:
        raise SpecError(
            f"spec.template.terminationGracePeriodSeconds ({spec.template.grace_period_s}) is"
            f" shorter than drainSeconds ({spec.template.drain_s}): the pods would be killed"
            " while they drain"
        )
    return spec


def parse_registry(raw: Mapping[str, Any] | None) -> MlflowRegistry | None:
    """spec.registry: one MLflow registry for the resource's versions (docs/registry.md)."""
    mlflow = (raw or {}).get("mlflow")
    if not mlflow:
        return None
    uri = str(mlflow.get("trackingURI") or "")
    if not uri:
        raise SpecError("spec.registry.mlflow.trackingURI must not be empty")
    secret, alias = mlflow.get("credentialsSecret"), mlflow.get("alias")
    return MlflowRegistry(
        tracking_uri=uri,
        credentials_secret=str(secret) if secret else None,
        alias=str(alias) if alias else None,
    )


def parse_registry_ref(raw: Mapping[str, Any] | None, name: str) -> RegistryRef | None:
    """versions[].registry: a model and exactly one of version or alias."""
    if not raw:
        return None
    model, version, alias = raw.get("model"), raw.get("version"), raw.get("alias")
    if not model:
        raise SpecError(f"spec.versions[{name}].registry.model must not be empty")
    if (version is None) == (alias is None):
        raise SpecError(f"spec.versions[{name}].registry needs version or alias, not both")
    if version is not None and not str(version).isdigit():
        raise SpecError(
            f"spec.versions[{name}].registry.version must be a model version number, "
            f"not {version!r}"
        )
    return RegistryRef(
        model=str(model),
        version=str(version) if version is not None else None,
        alias=str(alias) if alias is not None else None,
    )


def with_resolutions(spec: Spec, resolutions: Mapping[str, tuple[RegistryRef, Resolved]]) -> Spec:
    """`spec` with each version's registry reference as status.registry resolved it."""
    assert isinstance(spec.versions, VersionIndex), "specs come from parse_spec"
    return replace(spec, versions=spec.versions.with_resolutions(resolutions))


def parse_webhook(raw: Mapping[str, Any] | None) -> Webhook | None:
    if not raw:
        return None
    secret = (raw.get("urlFrom") or {}).get("secretKeyRef") or {}
    webhook = Webhook(
        url=raw.get("url"), secret_name=secret.get("name"), secret_key=secret.get("key")
    )
    if (webhook.url is None) == (webhook.secret_name is None):
        raise SpecError("spec.notifications.webhook needs url or urlFrom.secretKeyRef, not both")
    return webhook


def parse_analysis(raw: Mapping[str, Any] | None) -> AnalysisSpec | None:
    if not raw or not raw.get("checks"):
        return None
    checks = []
    for entry in raw["checks"]:
        check = Check(**known(entry, CHECK_KEYS))
        if check.max is None and check.min is None:
            raise SpecError(f"spec.analysis.checks[{check.name}] needs max or min")
        checks.append(check)
    return AnalysisSpec(checks=tuple(checks), **known(raw, ANALYSIS_KEYS))


def with_snapshots(spec: Spec, snapshots: Mapping[str, Snapshot]) -> Spec:
    """`spec` with each version's configuration snapshot as `snapshots` records it."""
    assert isinstance(spec.versions, VersionIndex), "specs come from parse_spec"
    return replace(spec, versions=spec.versions.with_snapshots(snapshots))


def parse_validation(raw: Mapping[str, Any] | None) -> ValidationSpec | None:
    if not raw or not raw.get("requests"):
        return None
    requests = []
    for entry in raw["requests"]:
        name = str(entry.get("name") or "")
        where = f"spec.validation.requests[{name}]"
        expect = entry.get("expect") or {}
        values = tuple(_expectation(value, where) for value in expect.get("values") or ())
        request = GoldenRequest(
            **known(entry, REQUEST_KEYS),
            expect=Expect(values=values, **known(expect, EXPECT_KEYS)),
        )
        if request.timeout_s <= 0:
            raise SpecError(f"{where}.timeoutSeconds must be above 0")
        requests.append(request)
    return ValidationSpec(requests=tuple(requests))


def _expectation(raw: Mapping[str, Any], where: str) -> Expectation:
    path = str(raw.get("path") or "")
    equals, number = raw.get("equals"), raw.get("number")
    if (equals is None) == (number is None):
        raise SpecError(f"{where}: {path} needs equals (a string) or number, not both")
    tolerance = raw.get("tolerance")
    if tolerance is not None and number is None:
        raise SpecError(f"{where}: a tolerance applies only to a number ({path})")
    if tolerance is not None and float(tolerance) < 0:
        raise SpecError(f"{where}: the tolerance of {path} must not be negative")
    return Expectation(
        path=path,
        steps=parse_json_path(path, where),
        equals=str(equals) if equals is not None else None,
        number=float(number) if number is not None else None,
        tolerance=float(tolerance or 0.0),
    )


# A small JSONPath: an optional `$`, then `.key`, `[index]`, `['key']` or `["key"]`; the
# first key may go without its dot (outputs[0].data[0]).
_STEP = re.compile(r"\.?([A-Za-z_][-A-Za-z0-9_]*)|\[([0-9]+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")


def parse_json_path(path: str, where: str = "a JSON path") -> JsonPath:
    """The steps of `path`; SpecError when it is not one this operator reads."""
    rest = path[1:] if path.startswith("$") else path
    steps: list[str | int] = []
    position = 0
    while position < len(rest):
        found = _STEP.match(rest, position)
        if found is None:
            raise SpecError(f"{where}: {path!r} is not a JSON path like outputs[0].data[0]")
        key, index, single, double = found.groups()
        steps.append(
            int(index)
            if index is not None
            else next(part for part in (key, single, double) if part is not None)
        )
        position = found.end()
    if not steps:
        raise SpecError(f"{where}: {path!r} names no value")
    return tuple(steps)


def with_replicas(spec: Spec, deployment_replicas: int | None) -> Spec:
    """The spec with the count the resource wants now: its own, or, when an autoscaler
    owns the count, what the Deployment asks (1, the Deployment's default, before one)."""
    if not spec.autoscaled:
        return spec
    return replace(spec, replicas=1 if deployment_replicas is None else deployment_replicas)
