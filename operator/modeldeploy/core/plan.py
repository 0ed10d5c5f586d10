"""What a decision asks the edges to do: the plan types every other layer shares.

The lowest floor of the core: `decide` returns a `Decision`; the kube layer writes
its status, children and `SpecChange`; Events and webhooks carry its `Event`s.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from modeldeploy import constants as c
from modeldeploy.core.analysis import Query
from modeldeploy.model.spec import JSON, GoldenRequest
from modeldeploy.model.status import Notice, Status


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str
    key: str = ""  # identity of an owed Event (its outbox entry): the same on every attempt


def event_id(uid: str, event: Event) -> str:
    """16 hex characters naming an owed Event of resource `uid`, stable across attempts:
    the Event object's name suffix and the webhook payload's `id`."""
    return hashlib.sha256(f"{uid}\0{event.key}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Problem:
    """Why a rollout failed, or why the resource is stalled: a reason and a sentence."""

    reason: str
    message: str


def pointer(*segments: str) -> str:
    """A JSON pointer (RFC 6901) to a field: `~` and `/` in a segment escaped."""
    return "".join("/" + s.replace("~", "~0").replace("/", "~1") for s in segments)


def preconditions_hold(body: JSON, patch: list[JSON]) -> bool:
    """Whether a JSON patch's preconditions hold on `body`: each `test` finds its value,
    each `remove` finds something to remove (what the API server checks before it
    applies the patch)."""
    for op in patch:
        found, value = _at(body, op["path"])
        if op["op"] == "test" and (not found or value != op["value"]):
            return False
        if op["op"] == "remove" and not found:
            return False
    return True


def _at(body: JSON, path: str) -> tuple[bool, object]:
    node: object = body
    for raw in path.split("/")[1:]:
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return False, None
    return True, node


@dataclass(frozen=True)
class SpecChange:
    """A write to the resource itself, made only after the status recording it."""

    set_version: str | None  # the new spec.activeVersion, if any
    # Apply only while the spec is still the one the decision was about: this version,
    # at this generation (a user's edit in between wins).
    expect_version: str | None
    expect_generation: int | None = None
    remove_retry: bool = False
    remove_refresh: bool = False  # the refresh-config annotation was handled
    remove_refresh_registry: bool = False  # the refresh-registry annotation was handled

    def ops(self) -> list[JSON]:
        """The JSON patch: its preconditions (`test`), then the change. A `remove` of an
        annotation that is gone fails the patch too (someone consumed it first)."""
        patch: list[JSON] = []
        if self.expect_generation is not None:
            patch.append(
                {"op": "test", "path": "/metadata/generation", "value": self.expect_generation}
            )
        if self.expect_version is not None:
            patch.append(
                {"op": "test", "path": "/spec/activeVersion", "value": self.expect_version}
            )
        if self.set_version is not None:
            patch.append(
                {"op": "replace", "path": "/spec/activeVersion", "value": self.set_version}
            )
        for wanted, annotation in (
            (self.remove_retry, c.ANNOTATION_RETRY),
            (self.remove_refresh, c.ANNOTATION_REFRESH_CONFIG),
            (self.remove_refresh_registry, c.ANNOTATION_REFRESH_REGISTRY),
        ):
            if wanted:
                patch.append(
                    {"op": "remove", "path": pointer("metadata", "annotations", annotation)}
                )
        return patch


@dataclass(frozen=True)
class ValidationRequest:
    """Golden requests for one pod, sent straight to its IP and the template's port."""

    pod: str
    ip: str
    port: int
    template_hash: str
    requests: tuple[GoldenRequest, ...]  # their paths filled in


@dataclass(frozen=True)
class PodGate:
    """Set one pod's readiness gate (c.CONDITION_VALIDATED): True lets it be Ready."""

    pod: str
    passed: bool
    reason: str
    message: str


@dataclass(frozen=True)
class SnapshotRequest:
    """Copy a version's source ConfigMap into an immutable snapshot (before its rollout)."""

    version: str
    source: str


@dataclass(frozen=True)
class ResolveRequest:
    """Ask the registry what a version's reference names (before its rollout)."""

    version: str
    model: str
    requested_version: str | None = None
    alias: str | None = None


@dataclass(frozen=True)
class Decision:
    status: Status
    status_changed: bool
    # Only progress changed (core/summary.only_progress): the write may wait a little.
    status_may_wait: bool = False
    deployment: JSON | None = None  # apply this; None leaves the Deployment alone
    service: JSON | None = None
    standby: JSON | None = None  # the standby Deployment (spec.rollout.standby)
    remove_standby: bool = False
    budget: JSON | None = None  # the PodDisruptionBudget (spec.disruption)
    remove_budget: bool = False
    spec_change: SpecChange | None = None
    requeue_after: float | None = None  # seconds until the next deadline to check
    queries: tuple[Query, ...] = ()  # analysis measurements due now
    validations: tuple[ValidationRequest, ...] = ()  # pods to send golden requests to
    gates: tuple[PodGate, ...] = ()  # pods whose readiness gate to set
    deletes: tuple[str, ...] = ()  # snapshot ConfigMaps no longer needed
    events: tuple[Event, ...] = ()  # what this decision adds to the outbox
    dropped_notices: int = 0  # owed notices given up on (a day old, or the outbox full)
    # Give up the field manager's hold on spec.activeVersion our revert took, once the
    # revert is acknowledged or overtaken: later writers must not conflict with us.
    release_active_version: bool = False

    @property
    def notices(self) -> tuple[Notice, ...]:
        """Events and webhooks owed: delivered after the status that holds them is written."""
        return self.status.outbox
