"""The spec of a ModelDeployment: typed, frozen, parsed once per reconcile.

Each default lives once, as a dataclass field default; the parsers read the JSON
keys listed beside each type and fall back to those defaults. tests/unit/test_crd.py
pins the CRD's `default:` values against them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

from modeldeploy import constants as c

JSON = dict[str, Any]


class SpecError(ValueError):
    """The spec passed admission but cannot be served; the message says why."""


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
    # None: the "restricted" Pod Security Standard's settings (render.py); set to own them.
    pod_security_context: JSON | None = None
    security_context: JSON | None = None  # the model container's
    service_account_name: str | None = None
    automount_service_account_token: bool = False


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
    on_failure: str = c.ON_FAILURE_REVERT_SPEC  # or ON_FAILURE_KEEP_SPEC

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


@dataclass(frozen=True)
class Webhook:
    """spec.notifications.webhook: a URL, or where in a Secret of the namespace it is."""

    url: str | None = None
    secret_name: str | None = None  # urlFrom.secretKeyRef: the URL is a credential
    secret_key: str | None = None


@dataclass(frozen=True)
class Spec:
    active_version: str
    versions: Mapping[str, VersionSpec]  # by name, built once per parse (B12)
    replicas: int = 1
    template: TemplateSpec = TemplateSpec()
    service: ServiceSpec = ServiceSpec()
    rollout: RolloutPolicy = RolloutPolicy()
    webhook: Webhook | None = None
    analysis: AnalysisSpec | None = None

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
}
SERVICE_KEYS: Keys = {"enabled": ("enabled", bool), "port": ("port", int)}
ROLLOUT_KEYS: Keys = {
    "autoRollback": ("auto_rollback", bool),
    "progressDeadlineSeconds": ("progress_deadline_s", int),
    "readyTimeoutSeconds": ("ready_timeout_s", int),
    "maxRestarts": ("max_restarts", int),
    "unschedulableGraceSeconds": ("unschedulable_grace_s", int),
    "maxSurge": ("max_surge", int),
    "historyLimit": ("history_limit", int),
    "onFailure": ("on_failure", str),
}
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
}
SPEC_KEYS: Keys = {"replicas": ("replicas", int)}


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
    versions[active]  # parses (and checks) the active entry now
    spec = Spec(
        active_version=active,
        versions=versions,
        template=TemplateSpec(**known(raw.get("template"), TEMPLATE_KEYS)),
        service=ServiceSpec(**known(raw.get("service"), SERVICE_KEYS)),
        rollout=RolloutPolicy(**known(raw.get("rollout"), ROLLOUT_KEYS)),
        webhook=parse_webhook((raw.get("notifications") or {}).get("webhook")),
        analysis=parse_analysis(raw.get("analysis")),
        **known(raw, SPEC_KEYS),
    )
    if spec.replicas < 0:
        raise SpecError("spec.replicas must be >= 0")
    return spec


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
