"""What a reconcile needs from outside the pure core, and what it remembers.

Below `reconcile`: the protocols it writes through (`Cluster`, `Notifier`, `Measurer`,
`Validating`), `Refused` (the API's or an admission check's own words), `Services`
(where a reconcile's decisions go) and `Memory` (one resource's refusals and notices
sent, in this process). The adapters implement the protocols; tests/unit fake them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from modeldeploy.core.analysis import Query
from modeldeploy.core.plan import Event, SpecChange, ValidationRequest
from modeldeploy.model.observed import ChildState, Observed, Refusal
from modeldeploy.model.resource import Resource
from modeldeploy.model.settings import Settings
from modeldeploy.model.spec import JSON

Key = tuple[str, str]  # (namespace, ModelDeployment name): what the work queue holds
Identity = tuple[str, str, str]  # (namespace, name, uid) of one object
NoticeKey = tuple[str, str, datetime]


class Refused(Exception):
    """The API server or an admission check refused a write; `message` is its own."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"HTTP {code}: {message}")
        self.code = code
        self.message = message


class Cluster(Protocol):
    """The writes a reconcile makes (modeldeploy.kube.KubeCluster against the API)."""

    def replace_status(self, resource: Resource, resource_version: str, status: JSON) -> str | None:
        """Write the whole status if the object is still at `resource_version`; the
        resourceVersion the write made, or None when the object had moved on."""

    def apply(self, manifest: JSON) -> None:
        """Create or repair a child by server-side apply; Refused if the API says no."""

    def read_child(self, kind: str, resource: Resource, name: str) -> ChildState | None:
        """The child of that kind and name in `resource`'s namespace, whoever made it."""

    def delete_child(self, kind: str, resource: Resource, name: str) -> None:
        """Delete a child (the standby Deployment); gone already is fine."""

    def change_spec(self, resource: Resource, change: SpecChange) -> bool:
        """The conditional spec write; False when the spec is no longer the one the
        decision was about, Refused when admission said no."""

    def post_event(self, resource: Resource, event: Event) -> bool:
        """A Kubernetes Event about `resource`; False if it could not be posted."""

    def read_secret_key(self, namespace: str, name: str, key: str) -> str | None:
        """One value of a Secret (decoded); None when the Secret or the key is missing."""

    def release_active_version(self, resource: Resource) -> None:
        """Drop our field manager's ownership of spec.activeVersion (managedFields)."""

    def read_config_map(self, namespace: str, name: str) -> JSON | None:
        """A ConfigMap's body; None when there is none."""

    def create_config_map(self, manifest: JSON) -> JSON | None:
        """Create a ConfigMap; when one of that name exists, return its body, else None."""

    def delete_config_map(self, namespace: str, name: str) -> None:
        """Delete a ConfigMap; one already gone is fine."""


class Notifier(Protocol):
    def notify(
        self, resource: Resource, event: Event, urls: tuple[str, ...], done: Callable[[], None]
    ) -> bool:
        """Queue `event` for `urls`; call `done` once each was sent or given up. False
        when nothing is sent (no URL, or an event no webhook receives)."""


class Measurer(Protocol):
    def request(self, key: Key, queries: tuple[Query, ...]) -> None:
        """Take these analysis measurements off the reconcile path."""


class Validating(Protocol):
    def request(self, key: Key, requests: tuple[ValidationRequest, ...]) -> None:
        """Send these golden requests to their pods off the reconcile path."""


@dataclass(frozen=True)
class Services:
    """Where a reconcile's decisions go: the API, webhooks, the analysis queries; and
    what the admin configured (the egress policy, the operator-wide webhook)."""

    cluster: Cluster
    notifier: Notifier
    measurer: Measurer
    settings: Settings = field(default_factory=Settings)
    webhook_url: str | None = None  # --webhook: every resource's notifications
    validator: Validating | None = None  # spec.validation's golden requests


@dataclass
class Memory:
    """What one resource's reconciles remember between runs, in this process only:
    refusals to back off from, notices sent. Losing it (a restart) costs a retry or a
    repeated Event, never a lost one."""

    refusals: dict[str, Refusal] = field(default_factory=dict)
    delivered: set[NoticeKey] = field(default_factory=set)
    sending: set[NoticeKey] = field(default_factory=set)
    deleted_snapshots: set[str] = field(default_factory=set)
    # The resourceVersions our last writes to the resource replaced. A body still at one
    # is our own cache lagging behind those writes: deciding on it again would repeat
    # them (a status patch that conflicts, an Event the API already has).
    superseded: frozenset[str] = frozenset()
    status_written_at: datetime | None = None  # when this process last wrote the status
    lock: threading.Lock = field(default_factory=threading.Lock)

    def outdated(self, body: Mapping[str, Any]) -> bool:
        """Whether `body` is one our own write has already replaced."""
        return resource_version(body) in self.superseded

    def wrote_over(self, *versions: str) -> None:
        self.superseded = frozenset(versions)

    def observe(self, observed: Observed) -> Observed:
        with self.lock:
            return replace(
                observed,
                refusals=tuple(self.refusals.values()),
                delivered=frozenset(self.delivered),
                deleted_snapshots=frozenset(self.deleted_snapshots),
            )

    def refused(self, action: str, generation: int, error: Refused, now: datetime) -> None:
        previous = self.refusals.get(action)
        again = previous is not None and previous.generation == generation
        attempts = previous.attempts + 1 if previous is not None and again else 1
        self.refusals[action] = Refusal(
            action, generation, error.code, error.message, now, attempts
        )

    def sent(self, key: NoticeKey) -> None:
        with self.lock:
            self.sending.discard(key)
            self.delivered.add(key)


def resource_version(body: Mapping[str, Any]) -> str:
    return str(body["metadata"]["resourceVersion"])
