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
from modeldeploy.core.plan import Event, PodGate, ResolveRequest, SpecChange, ValidationRequest
from modeldeploy.model.observed import (
    ChildState,
    Observed,
    Refusal,
    RefusalKey,
    RegistryResult,
    Undelivered,
)
from modeldeploy.model.resource import Resource
from modeldeploy.model.settings import Settings
from modeldeploy.model.spec import JSON
from modeldeploy.model.status import RegistryWrite

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

    def set_pod_gate(self, namespace: str, gate: PodGate) -> None:
        """Set a pod's readiness gate condition (its status); a pod gone is fine."""

    def too_large(self, requests: tuple[tuple[str, str], ...]) -> str | None:
        """Why no node could hold a pod asking `requests` even with nothing else on it
        (a resource beyond every node's allocatable); None when some node could, or the
        nodes cannot be read."""


class Notifier(Protocol):
    def notify(
        self, resource: Resource, event: Event, url: str, done: Callable[[str | None], None]
    ) -> bool:
        """Queue one attempt to deliver `event` to `url`; `done(None)` once it was
        answered 2xx, `done(why)` once it failed. False when that receiver's queue is
        full (nothing was queued; try again later)."""


class Measurer(Protocol):
    def request(self, key: Key, queries: tuple[Query, ...]) -> None:
        """Take these analysis measurements off the reconcile path."""


class Validating(Protocol):
    def request(self, key: Key, requests: tuple[ValidationRequest, ...]) -> None:
        """Send these golden requests to their pods off the reconcile path."""


class ModelRegistry(Protocol):
    def resolve(
        self, namespace: str, tracking_uri: str, authorization: str | None, wanted: ResolveRequest
    ) -> RegistryResult:
        """What the registry at `tracking_uri` says the reference names, within one
        deadline per call, under the egress policy for `namespace`; never raises."""

    def write(
        self, namespace: str, tracking_uri: str, authorization: str | None, owed: RegistryWrite
    ) -> tuple[str | None, bool]:
        """Tag the model version (and move the alias); (None, False) once the registry
        took it all, else why not and whether it did not answer (worth trying again)."""


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
    registry: ModelRegistry | None = None  # spec.registry's MLflow (modeldeploy.mlflow)


Hook = tuple[NoticeKey, str]  # one notice to one webhook URL
REGISTRY_BACKOFF_S = 2.0  # after the registry's first unanswered call; doubled, capped
REGISTRY_BACKOFF_CAP_S = 60.0


@dataclass(frozen=True)
class Attempts:
    """A notice's failed webhook attempts to one URL: how many, the last error, when."""

    count: int
    error: str
    receiver: str  # host:port, all that is said of where (a URL may be a credential)
    first_at: datetime
    last_at: datetime


@dataclass
class Memory:
    """What one resource's reconciles remember between runs, in this process only:
    refusals to back off from, notices sent and webhook attempts. Losing it (a restart)
    costs a retry or a repeated Event or webhook, never a lost one: what is owed is in
    status.outbox."""

    refusals: dict[RefusalKey, Refusal] = field(default_factory=dict)
    delivered: set[NoticeKey] = field(default_factory=set)  # the Event and every webhook
    posted: set[NoticeKey] = field(default_factory=set)  # the Event
    hooks_done: set[Hook] = field(default_factory=set)  # answered 2xx
    hooks_sending: set[Hook] = field(default_factory=set)
    hooks_failed: dict[Hook, Attempts] = field(default_factory=dict)
    hooks_wanted: dict[NoticeKey, frozenset[str]] = field(default_factory=dict)  # its URLs
    deleted_snapshots: set[str] = field(default_factory=set)
    # The resourceVersions our last writes to the resource replaced. A body still at one
    # is our own cache lagging behind those writes: deciding on it again would repeat
    # them (a status patch that conflicts, an Event the API already has).
    superseded: frozenset[str] = frozenset()
    status_written_at: datetime | None = None  # when this process last wrote the status
    # The registry's failed attempts in a row (no answer) and when the last one was:
    # the next waits for the backoff (reconcile.resolve_all).
    registry_failures: int = 0
    registry_failed_at: datetime | None = None
    registry_error: str = ""
    registry_written: set[tuple[str, str, str, datetime]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def outdated(self, body: Mapping[str, Any]) -> bool:
        """Whether `body` is one our own write has already replaced."""
        return resource_version(body) in self.superseded

    def wrote_over(self, *versions: str) -> None:
        self.superseded = frozenset(versions)

    def observe(self, observed: Observed) -> Observed:
        with self.lock:
            owed = [a for hook, a in self.hooks_failed.items() if hook not in self.hooks_done]
            return replace(
                observed,
                refusals=tuple(self.refusals.values()),
                delivered=frozenset(self.delivered),
                deleted_snapshots=frozenset(self.deleted_snapshots),
                registry_written=frozenset(self.registry_written),
                registry_down=self.registry_down(),
                undelivered=tuple(
                    Undelivered(a.receiver, a.error, a.first_at, a.count)
                    for a in sorted(owed, key=lambda a: a.first_at)
                ),
            )

    def registry_down(self) -> str | None:
        """Why the registry's last call got no answer; None when it was answered."""
        return (self.registry_error or "no answer") if self.registry_failures else None

    def registry_due_in(self, now: datetime) -> float:
        """Seconds until the registry may be called again (0: now)."""
        if not self.registry_failures or self.registry_failed_at is None:
            return 0.0
        backoff: float = min(
            REGISTRY_BACKOFF_CAP_S, REGISTRY_BACKOFF_S * 2.0 ** (self.registry_failures - 1)
        )
        return float(max(0.0, backoff - (now - self.registry_failed_at).total_seconds()))

    def registry_answered(self, answered: bool, error: str | None, now: datetime) -> float | None:
        """Record how a call to the registry went; the backoff before the next, if it
        got no answer."""
        if answered:
            self.registry_failures, self.registry_failed_at, self.registry_error = 0, None, ""
            return None
        self.registry_failures += 1
        self.registry_failed_at, self.registry_error = now, error or "no answer"
        return self.registry_due_in(now)

    def refused(self, action: RefusalKey, generation: int, error: Refused, now: datetime) -> None:
        previous = self.refusals.get(action)
        again = previous is not None and previous.generation == generation
        attempts = previous.attempts + 1 if previous is not None and again else 1
        self.refusals[action] = Refusal(
            action, generation, error.code, error.message, now, attempts
        )

    def attempted(self, hook: Hook, receiver: str, error: str | None, at: datetime) -> None:
        """How one webhook attempt ended (from a sending thread)."""
        with self.lock:
            self.hooks_sending.discard(hook)
            if error is None:
                self.hooks_done.add(hook)
                self.hooks_failed.pop(hook, None)
                self._complete(hook[0])
                return
            before = self.hooks_failed.get(hook)
            self.hooks_failed[hook] = Attempts(
                count=before.count + 1 if before else 1,
                error=error,
                receiver=receiver,
                first_at=before.first_at if before else at,
                last_at=at,
            )

    def want(self, key: NoticeKey, urls: frozenset[str]) -> None:
        """The notice's Event is posted and these URLs are owed it: delivered once each
        answered 2xx (at once, if there are none)."""
        with self.lock:
            self.posted.add(key)
            self.hooks_wanted[key] = urls
            self._complete(key)

    def _complete(self, key: NoticeKey) -> None:
        wanted = self.hooks_wanted.get(key)
        if wanted is not None and all((key, url) in self.hooks_done for url in wanted):
            self.delivered.add(key)

    def forget_except(self, owed: set[NoticeKey]) -> None:
        """Drop what is remembered of notices status no longer holds."""
        with self.lock:
            self.delivered &= owed
            self.posted &= owed
            self.hooks_wanted = {k: v for k, v in self.hooks_wanted.items() if k in owed}
            self.hooks_done = {h for h in self.hooks_done if h[0] in owed}
            self.hooks_failed = {h: a for h, a in self.hooks_failed.items() if h[0] in owed}


def resource_version(body: Mapping[str, Any]) -> str:
    return str(body["metadata"]["resourceVersion"])
