"""A recording stand-in for the API server's side of `modeldeploy.ports.Cluster`.

It keeps one ModelDeployment as the API server would (resourceVersion, generation,
spec, status, annotations) and applies the operator's writes with the API's
semantics: a status write fails when the resourceVersion moved on, and a JSON-patch
`test` that no longer holds refuses the whole spec change (HTTP 422), including a
`remove` of an annotation that is gone. Every write is logged in order, so unit
tests can check the write protocol itself (status before the revert). The e2e
tests check the same protocol against the real API server.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modeldeploy.core.plan import Event, PodGate, SpecChange, preconditions_hold
from modeldeploy.model.observed import ChildState
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import JSON


@dataclass
class RecordingCluster:
    body: JSON
    writes: list[tuple[str, Any]] = field(default_factory=list)
    children: dict[str, JSON] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    foreign: dict[str, ChildState] = field(default_factory=dict)  # what read_child finds
    # Runs just before a spec change lands: a user's concurrent edit, in tests.
    before_spec_change: Callable[[], None] | None = None
    # Writes to refuse, as admission would: "status", "spec", "Deployment", "Service";
    # any other exception is an outage of that write.
    refuse: dict[str, Exception] = field(default_factory=dict)
    after_status: JSON | None = None  # the object as the last status write left it
    # Each resource's most on one node, in whole units (None: nodes cannot be read).
    largest: dict[str, int] | None = None

    @classmethod
    def holding(cls, body: JSON) -> RecordingCluster:
        stored = copy.deepcopy(body)
        stored["metadata"].setdefault("resourceVersion", "1")
        stored["metadata"].setdefault("generation", 1)
        return cls(stored)

    # -------------------------------------------------------- what users do

    def edit_spec(self, **changes: Any) -> None:
        """A user's spec edit: a new generation."""
        self.body["spec"].update(changes)
        self._bump(generation=True)

    def annotate(self, key: str, value: str) -> None:
        self.body["metadata"].setdefault("annotations", {})[key] = value
        self._bump(generation=False)

    def snapshot(self) -> JSON:
        """The object as a watch would deliver it now."""
        return copy.deepcopy(self.body)

    # ----------------------------------------------------- the Cluster protocol

    def replace_status(self, resource: Resource, resource_version: str, status: JSON) -> str | None:
        if self.body["metadata"]["resourceVersion"] != resource_version:
            self.writes.append(("stale status", resource_version))  # a request all the same
            return None
        self._admit("status")
        self.body["status"] = copy.deepcopy(status)
        self._bump(generation=False)
        self.writes.append(("status", status))
        self.after_status = self.snapshot()
        return str(self.body["metadata"]["resourceVersion"])

    def apply(self, manifest: JSON) -> None:
        kind = manifest["kind"]
        if manifest["metadata"]["name"].endswith("-standby"):
            kind = "Standby"
        self._admit(kind)
        self.children[kind] = copy.deepcopy(manifest)
        self.writes.append(("apply", kind))

    def read_child(self, kind: str, resource: Resource, name: str) -> ChildState | None:
        found = self.foreign.get(kind)
        return found if found is not None and found.name == name else None

    def delete_child(self, kind: str, resource: Resource, name: str) -> None:
        self.children.pop("Standby" if name.endswith("-standby") else kind, None)
        self.writes.append(("delete", name))

    def change_spec(self, resource: Resource, change: SpecChange) -> bool:
        """The operator's own JSON patch (`SpecChange.ops`), applied as the API server
        applies one: every precondition checked first, all or nothing."""
        if self.before_spec_change is not None:
            self.before_spec_change()
            self.before_spec_change = None
        ops = change.ops()
        if not preconditions_hold(self.body, ops):
            self.writes.append(("spec refused", change))
            return False
        self._admit("spec")
        before = copy.deepcopy(self.body["spec"])
        for op in ops:
            apply_op(self.body, op)
        self._bump(generation=self.body["spec"] != before)
        self.writes.append(("spec", change))
        return True

    secrets: dict[tuple[str, str], str] = field(default_factory=dict)  # (name, key) -> value

    def read_secret_key(self, namespace: str, name: str, key: str) -> str | None:
        return self.secrets.get((name, key))

    def release_active_version(self, resource: Resource) -> None:
        self.writes.append(("release", "activeVersion"))

    config_maps: dict[str, JSON] = field(default_factory=dict)  # by name, one namespace

    def read_config_map(self, namespace: str, name: str) -> JSON | None:
        found = self.config_maps.get(name)
        return copy.deepcopy(found) if found is not None else None

    def create_config_map(self, manifest: JSON) -> JSON | None:
        name = manifest["metadata"]["name"]
        if name in self.config_maps:
            return copy.deepcopy(self.config_maps[name])
        self._admit("ConfigMap")
        self.config_maps[name] = copy.deepcopy(manifest)
        self.writes.append(("create ConfigMap", name))
        return None

    def delete_config_map(self, namespace: str, name: str) -> None:
        self._admit("delete ConfigMap")
        self.config_maps.pop(name, None)
        self.writes.append(("delete ConfigMap", name))

    gates: dict[str, bool] = field(default_factory=dict)  # pod -> its readiness gate

    def set_pod_gate(self, namespace: str, gate: PodGate) -> None:
        self._admit("gate")
        self.gates[gate.pod] = gate.passed
        self.writes.append(("gate", (gate.pod, gate.passed)))

    def too_large(self, requests: tuple[tuple[str, str], ...]) -> str | None:
        """As the nodes in `largest` would say."""
        if self.largest is None:
            return None
        for resource, quantity in requests:
            room = self.largest.get(resource, 0)
            if int(quantity) > room:
                return f"it asks for {quantity} {resource} and the largest node has {room}"
        return None

    def post_event(self, resource: Resource, event: Event) -> bool:
        self.events.append(event)
        self.writes.append(("event", event.reason))
        return True

    # ------------------------------------------------------------------ inner

    def _admit(self, write: str) -> None:
        refusal = self.refuse.get(write)
        if refusal is not None:
            self.writes.append(("refused", write))
            raise refusal

    def _bump(self, generation: bool) -> None:
        meta = self.body["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        if generation:
            meta["generation"] += 1


def apply_op(body: JSON, op: JSON) -> None:
    """One JSON-patch operation whose precondition held: replace, add or remove."""
    *parents, last = [
        part.replace("~1", "/").replace("~0", "~") for part in op["path"].split("/")[1:]
    ]
    node = body
    for part in parents:
        node = node.setdefault(part, {})
    if op["op"] in ("replace", "add"):
        node[last] = copy.deepcopy(op["value"])
    elif op["op"] == "remove":
        del node[last]


@dataclass
class RecordingNotifier:
    """Webhook receivers: each attempt is answered at once, 2xx unless the URL is `down`
    (the error it gives then); a URL in `full` has its receiver's queue full."""

    sent: list[tuple[str, str]] = field(default_factory=list)  # (resource, reason) 2xx
    urls: list[str] = field(default_factory=list)  # where each of those went
    attempts: list[tuple[str, str, str | None]] = field(default_factory=list)
    down: dict[str, str] = field(default_factory=dict)  # url -> the error it answers
    full: set[str] = field(default_factory=set)

    def notify(
        self, resource: Resource, event: Event, url: str, done: Callable[[str | None], None]
    ) -> bool:
        if url in self.full:
            return False
        error = self.down.get(url)
        self.attempts.append((event.reason, url, error))
        if error is None:
            self.sent.append((resource.name, event.reason))
            self.urls.append(url)
        done(error)
        return True


@dataclass
class RecordingMeasurer:
    requested: list[tuple[tuple[str, str], int]] = field(default_factory=list)

    def request(self, key: tuple[str, str], queries: tuple[Any, ...]) -> None:
        if queries:
            self.requested.append((key, len(queries)))
