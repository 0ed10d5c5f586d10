"""The status the operator writes: conditions, the ledger, history, analysis, intent.

Frozen dataclasses with `datetime` times; `to_json` and `parse_status` are the only
places they meet the camelCase JSON the CRD declares (tests/unit/test_crd.py checks
every field written is declared, so nothing is pruned).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modeldeploy import constants as c
from modeldeploy.model.spec import RegistryRef, Resolved, Snapshot
from modeldeploy.model.times import format_time, parse_time


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str
    last_transition_time: datetime
    observed_generation: int = 0


@dataclass(frozen=True)
class VersionRecord:
    """One entry of the ledger: what the operator knows of a version."""

    name: str
    state: str
    template_hash: str
    reason: str | None = None
    message: str | None = None
    failed_at: datetime | None = None
    last_available_at: datetime | None = None
    # Its pods carry the readiness gate (spec.validation was set when it was rolled out):
    # rendered so again for this content, so a revert finds its ReplicaSet unchanged.
    gated: bool | None = None


@dataclass(frozen=True)
class Baseline:
    """A container's restart count when the rollout began: only restarts after it count."""

    pod: str
    container: str
    restarts: int


@dataclass(frozen=True)
class RolloutRecord:
    """The rollout in progress or the last one; its times survive restarts (B3)."""

    revision: int
    version: str
    template_hash: str
    trigger: str
    started_at: datetime
    generation: int | None = None  # of the spec that started it (what `wait` judges)
    from_version: str | None = None
    outcome: str = c.OUTCOME_PROGRESSING
    reason: str | None = None
    message: str | None = None
    finished_at: datetime | None = None
    stage: str | None = None  # "Guard": it failed in the guard window after promotion
    # Pods of this template that had restarted before it began (a revert's old pods).
    baseline: tuple[Baseline, ...] = ()
    # How it makes room (STRATEGY_SURGE or STRATEGY_REPLACE: Auto records which it uses),
    # and, while a new pod waits for the pool to have room, the scheduler's words.
    strategy: str | None = None
    capacity_wait: str | None = None


@dataclass(frozen=True)
class Intent:
    """A spec change the operator itself made (revert or retry), recorded before it."""

    trigger: str
    version: str
    generation: int
    from_version: str | None = None
    at: datetime | None = None
    applied: bool | None = None  # seen in the spec (and recorded as a revert)


@dataclass(frozen=True)
class CheckRecord:
    """What analysis measured for one check so far."""

    name: str
    passed: int = 0
    failed: int = 0
    inconclusive: int = 0
    last_outcome: str | None = None  # Passed, Failed, Inconclusive or Invalid
    last_value: str | None = None  # as Prometheus wrote it: "0.02", "+Inf", "NaN"
    last_measured_at: datetime | None = None
    message: str | None = None


@dataclass(frozen=True)
class AnalysisRecord:
    """The analysis of one rollout's template; its window survives restarts."""

    version: str
    template_hash: str
    started_at: datetime
    ends_at: datetime
    phase: str = c.ANALYSIS_RUNNING  # then Passed, Failed, Inconclusive, or Guarding
    checks: tuple[CheckRecord, ...] = ()
    # The guard after promotion (spec.analysis.guardSeconds): until when, and the last
    # good version before this one, the target of a revert if the guard fails.
    guard_ends_at: datetime | None = None
    previous_good: str | None = None
    previous_good_hash: str | None = None


@dataclass(frozen=True)
class StandbyRecord:
    """The previous good version kept warm (spec.rollout.standby) as `<name>-standby`."""

    version: str
    template_hash: str
    ends_at: datetime | None = None  # set when the new version is promoted
    serving: bool = False  # the Service sends traffic to it (a revert switched to it)


@dataclass(frozen=True)
class ValidationRecord:
    """Golden requests sent to one template's pods: which pods passed, or what failed.

    Kept per rollout (`revision`), or, before a revert, for the rollback target's pods
    (`revision` None, for the spec `generation` it was decided on)."""

    version: str
    template_hash: str
    started_at: datetime
    revision: int | None = None
    generation: int | None = None
    phase: str = c.VALIDATION_RUNNING  # then Passed or Failed
    passed_pods: tuple[str, ...] = ()
    message: str | None = None


@dataclass(frozen=True)
class ConfigRecord:
    """A configuration snapshot the operator took: an immutable copy of a version's source
    ConfigMap, which that version's pods mount."""

    version: str
    source: str  # the ConfigMap copied
    name: str  # the snapshot ConfigMap
    hash: str  # of its content; part of the version's template hash
    taken_at: datetime
    retired_at: datetime | None = None  # a newer snapshot replaced it, or its version left

    @property
    def snapshot(self) -> Snapshot:
        return Snapshot(source=self.source, name=self.name, hash=self.hash)


@dataclass(frozen=True)
class RegistryRecord:
    """What a version's registry reference resolved to, at its first rollout (or when a
    refresh asked): kept while the version names that reference, never looked up again
    behind the user's back (docs/registry.md)."""

    version: str  # the ModelDeployment's version
    model: str  # the registered model
    model_version: str  # the number the registry answered
    source: str  # its storage location: the pods' MODEL_URI
    resolved_at: datetime
    requested_version: str | None = None  # as the spec named it: a number,
    alias: str | None = None  # or an alias
    run_id: str | None = None

    @property
    def reference(self) -> RegistryRef:
        return RegistryRef(self.model, self.requested_version, self.alias)

    @property
    def resolved(self) -> Resolved:
        return Resolved(self.model_version, self.source, self.run_id)


@dataclass(frozen=True)
class RegistryWrite:
    """A write owed to the registry's model version (docs/registry.md): its state tag
    and reason, and the alias moved onto it; written with the status change it reports,
    removed once the registry took it, so a crash or an outage only delays it."""

    version: str  # the ModelDeployment's version
    model: str
    model_version: str
    state: str  # serving, failed or superseded
    reason: str
    at: datetime
    alias: str | None = None  # spec.registry.mlflow.alias, moved onto this model version

    @property
    def key(self) -> tuple[str, str, str, datetime]:
        return self.version, self.model_version, self.state, self.at


@dataclass(frozen=True)
class Revert:
    from_version: str
    to_version: str
    at: datetime
    generation: int | None = None  # the resource's generation once reverted


@dataclass(frozen=True)
class Notice:
    """An Event (and webhook) owed: written with the status change it reports, removed
    once delivered, so a crash in between re-sends it instead of losing it."""

    type: str  # Normal or Warning
    reason: str
    message: str
    at: datetime

    @property
    def key(self) -> tuple[str, str, datetime]:
        return self.reason, self.message, self.at


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
    validation: ValidationRecord | None = None
    # The spec.validation (a digest) the version that serves was last checked against:
    # by its rollout, or by a check of its running pods when the requests changed after.
    validated_spec: str | None = None
    configs: tuple[ConfigRecord, ...] = ()
    registry: tuple[RegistryRecord, ...] = ()
    registry_writes: tuple[RegistryWrite, ...] = ()  # owed to the registry, oldest first
    conditions: tuple[Condition, ...] = ()
    outbox: tuple[Notice, ...] = ()
    standby: StandbyRecord | None = None

    def version_record(self, name: str) -> VersionRecord | None:
        return next((record for record in self.versions if record.name == name), None)

    def snapshots(self) -> dict[str, Snapshot]:
        """Each version's current configuration snapshot."""
        return {k.version: k.snapshot for k in self.configs if k.retired_at is None}

    def resolutions(self) -> dict[str, tuple[RegistryRef, Resolved]]:
        """Each version's registry reference and what it resolved to."""
        return {r.version: (r.reference, r.resolved) for r in self.registry}


# ------------------------------------------------------------------ the JSON edge

_JSON_NAMES = {"from_version": "from", "to_version": "to"}
_NESTED: Mapping[str, type[Any]] = {
    "rollout": RolloutRecord,
    "intent": Intent,
    "versions": VersionRecord,
    "history": RolloutRecord,
    "reverts": Revert,
    "analysis": AnalysisRecord,
    "validation": ValidationRecord,
    "configs": ConfigRecord,
    "registry": RegistryRecord,
    "registry_writes": RegistryWrite,
    "checks": CheckRecord,
    "conditions": Condition,
    "baseline": Baseline,
    "outbox": Notice,
    "standby": StandbyRecord,
}


def _json_name(field: str) -> str:
    if field in _JSON_NAMES:
        return _JSON_NAMES[field]
    head, *rest = field.split("_")
    return head + "".join(part.title() for part in rest)


def to_json(value: Any) -> Any:
    """Dataclasses to the camelCase JSON of the CRD; None fields are left out."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            _json_name(item.name): to_json(item_value)
            for item in dataclasses.fields(value)
            if (item_value := getattr(value, item.name)) is not None
        }
    if isinstance(value, tuple | list):
        return [to_json(item) for item in value]
    if isinstance(value, datetime):
        return format_time(value)
    return value


def _from_json(cls: type[Any], raw: Mapping[str, Any]) -> Any:
    """One dataclass from its JSON: nested records and times converted by field."""
    kwargs: dict[str, Any] = {}
    for item in dataclasses.fields(cls):
        key = _json_name(item.name)
        if key not in raw:
            continue
        value = raw[key]
        nested = _NESTED.get(item.name)
        if nested is not None and isinstance(value, list):
            value = tuple(_from_json(nested, entry) for entry in value)
        elif nested is not None and isinstance(value, Mapping):
            value = _from_json(nested, value)
        elif isinstance(value, str) and "datetime" in str(item.type):
            value = parse_time(value)
        elif isinstance(value, list):
            value = tuple(value)  # a list of plain values: pod names
        kwargs[item.name] = value
    return cls(**kwargs)


def parse_status(raw: Mapping[str, Any] | None) -> Status:
    """The status as the operator last wrote it (empty when it never wrote one)."""
    status: Status = _from_json(Status, raw or {})
    return status
