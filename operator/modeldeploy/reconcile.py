"""One reconcile: read -> decide -> write, in the order the behaviour rules require.

Between the pure core and the adapters: `reconcile_once` asks `decide` and writes
through the `Cluster` protocol (status first, then children, then the conditional
spec change, then Events and webhooks). It imports neither kopf nor kubernetes, so
tests/unit drive it with a recording fake and tests/e2e with the real API server.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from modeldeploy import metrics
from modeldeploy.core.analysis import Query
from modeldeploy.core.decide import decide
from modeldeploy.core.plan import Decision, Event, SpecChange
from modeldeploy.model.observed import ChildState, Observed
from modeldeploy.model.resource import Resource, parse_resource
from modeldeploy.model.spec import JSON
from modeldeploy.model.status import to_json

logger = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace, ModelDeployment name): what the work queue holds


class Cluster(Protocol):
    """The writes a reconcile makes (modeldeploy.kube.KubeCluster against the API)."""

    def replace_status(self, resource: Resource, resource_version: str, status: JSON) -> bool:
        """Write the whole status if the object is still at `resource_version`."""

    def apply(self, manifest: JSON) -> None:
        """Create or repair a child by server-side apply."""

    def read_child(self, kind: str, resource: Resource) -> ChildState | None:
        """The child of that kind named after `resource`, whoever made it."""

    def change_spec(self, resource: Resource, change: SpecChange) -> bool:
        """The conditional spec write; False when its precondition no longer held."""

    def post_event(self, resource: Resource, event: Event) -> None:
        """A Kubernetes Event about `resource`."""


class Notifier(Protocol):
    def notify(self, resource: Resource, event: Event) -> None:
        """Queue `event` for the resource's webhooks; never blocks."""


class Measurer(Protocol):
    def request(self, key: Key, queries: tuple[Query, ...]) -> None:
        """Take these analysis measurements off the reconcile path."""


@dataclass(frozen=True)
class Services:
    """Where a reconcile's decisions go: the API, webhooks, the analysis queries."""

    cluster: Cluster
    notifier: Notifier
    measurer: Measurer


def reconcile_once(
    services: Services, body: Mapping[str, Any], observed: Observed, now: datetime
) -> float | None:
    """Decide and write; the seconds until the next deadline to look at, if any."""
    cluster = services.cluster
    resource = parse_resource(body)
    decision: Decision = decide(resource, observed, now)
    if (decision.deployment and observed.deployment is None) or (
        decision.service and observed.service is None
    ):
        # About to create a child our label-filtered caches do not show: one of that
        # name may still exist, made by someone else. Look first, never take it over (B1).
        observed = replace(
            observed,
            deployment=observed.deployment or cluster.read_child("Deployment", resource),
            service=observed.service or cluster.read_child("Service", resource),
        )
        decision = decide(resource, observed, now)
    if decision.status_changed:
        version = str(body["metadata"]["resourceVersion"])
        if not cluster.replace_status(resource, version, to_json(decision.status)):
            return None  # stale view; the newer object is on its way and is reconciled then
        metrics.observe(resource, resource.status, decision.status)
    for manifest in (decision.service, decision.deployment):
        if manifest is not None:
            cluster.apply(manifest)
    change = decision.spec_change
    applied = change is not None and cluster.change_spec(resource, change)
    for event in decision.events + (change.events if change and applied else ()):
        cluster.post_event(resource, event)
        services.notifier.notify(resource, event)
    services.measurer.request((resource.namespace, resource.name), decision.queries)
    writes = decision.status_changed or decision.deployment or decision.service or change
    if not writes:
        logger.debug(
            "reconciled %s/%s: up to date, nothing written", resource.namespace, resource.name
        )
    return decision.requeue_after
