"""Thin kopf adapters: keep caches of what the cluster shows, reconcile, write.

The top of the operator. kopf indexes hold the latest ModelDeployments and their
children (pods, Deployments and Services are watched with a server-side label
selector); any watch event marks its ModelDeployment's key in the work queue. A
worker reads the caches, asks `rollout.decide`, and writes through `kube`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import kopf

from modeldeploy import constants as c
from modeldeploy import metrics
from modeldeploy.kube import Cluster
from modeldeploy.model import (
    ChildState,
    Observed,
    PodState,
    owner_key,
    parse_child,
    parse_pod,
    parse_resource,
    to_json,
)
from modeldeploy.notify import Notifier
from modeldeploy.prometheus import Analyzer
from modeldeploy.rollout import Decision, decide
from modeldeploy.workqueue import WorkQueue

DEFAULT_WORKERS = 16  # reconciles at once; --workers

logger = logging.getLogger(__name__)
MANAGED = {c.LABEL_MANAGED_BY: c.MANAGER}
SELECTOR = f"{c.LABEL_MANAGED_BY}={c.MANAGER}"
Key = tuple[str, str]


@dataclass
class Caches:
    """Live kopf indexes, keyed by (namespace, ModelDeployment name)."""

    resources: kopf.Index[Key, Mapping[str, Any]]
    deployments: kopf.Index[Key, ChildState]
    services: kopf.Index[Key, ChildState]
    pods: kopf.Index[Key, PodState]

    def read(self, key: Key) -> tuple[Mapping[str, Any], Observed] | None:
        bodies = list(self.resources.get(key, ()))
        if not bodies:
            return None  # deleted; owner references clean up the children (B11)
        deployments = list(self.deployments.get(key, ()))
        services = list(self.services.get(key, ()))
        return bodies[0], Observed(
            deployment=deployments[0] if deployments else None,
            service=services[0] if services else None,
            pods=tuple(self.pods.get(key, ())),
        )


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    settings.persistence.finalizer = f"{c.KOPF_PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=c.KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=c.KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.posting.enabled = False  # we post our own Events, on transitions only
    settings.scanning.disabled = True  # our resources are fixed: no CRD/namespace watch (RBAC)
    for resource in (("v1", "pods"), ("apps", "v1", "deployments"), ("v1", "services")):
        settings.watching.label_selectors[resource] = SELECTOR  # server-side filtering
    workers = int(memo.get("workers", DEFAULT_WORKERS))  # the client is configured in main()
    loop = asyncio.get_running_loop()
    # Reconciles wait on the API server, not the CPU: a pool of their own, as wide as
    # the queue, so a burst of failures is reverted side by side, not four at a time.
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile")
    services = Services(
        cluster=Cluster(),
        notifier=Notifier(memo.get("webhook_url")),
        analyzer=Analyzer(
            memo.get("prometheus_url"),
            wake=lambda key: loop.call_soon_threadsafe(memo.queue.add, key),
        ),
    )
    memo.services = services
    if memo.get("metrics_port"):
        metrics.serve(int(memo.metrics_port))
    caches = Caches(
        resources=kwargs["resource_index"],
        deployments=kwargs["deployment_index"],
        services=kwargs["service_index"],
        pods=kwargs["pod_index"],
    )

    async def reconcile(key: Hashable) -> float | None:
        snapshot = caches.read(key)  # type: ignore[arg-type]
        if snapshot is None:
            return None
        body, observed = snapshot
        observed = replace(observed, measurements=services.analyzer.take(key))
        return await loop.run_in_executor(pool, reconcile_once, services, body, observed)

    memo.pool = pool
    memo.queue = WorkQueue(reconcile, workers=workers)
    memo.queue.start()


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    await memo.queue.stop()
    memo.pool.shutdown(wait=False, cancel_futures=True)
    memo.services.notifier.close()
    memo.services.analyzer.close()


@dataclass(frozen=True)
class Services:
    """Where a reconcile's decisions go: the API, webhooks, the analysis queries."""

    cluster: Cluster
    notifier: Notifier
    analyzer: Analyzer


def reconcile_once(services: Services, body: Mapping[str, Any], observed: Observed) -> float | None:
    """Read -> decide -> write, in the order B6 requires: status before anything it records."""
    cluster, notifier = services.cluster, services.notifier
    resource = parse_resource(body)
    now = datetime.now(UTC)
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
        notifier.notify(resource, event)
    services.analyzer.request((resource.namespace, resource.name), decision.queries)
    writes = decision.status_changed or decision.deployment or decision.service or change
    if not writes:
        logger.debug(
            "reconciled %s/%s: up to date, nothing written", resource.namespace, resource.name
        )
    return decision.requeue_after


# ------------------------------------------------------------------ the caches


@kopf.index(c.GROUP, c.VERSION, c.PLURAL)
async def resource_index(body: kopf.Body, **_: Any) -> dict[Key, Mapping[str, Any]]:
    return {
        (body.metadata.namespace or "", body.metadata.name or ""): {
            # managedFields can outweigh the rest of the object; decisions never need them.
            "metadata": {k: v for k, v in body.metadata.items() if k != "managedFields"},
            "spec": dict(body.spec),
            "status": dict(body.status),
        }
    }


@kopf.index("apps", "v1", "deployments", labels=MANAGED)
async def deployment_index(body: kopf.Body, **_: Any) -> dict[Key, ChildState]:
    key = owner_key(body)
    return {key: parse_child(body)} if key else {}


@kopf.index("v1", "services", labels=MANAGED)
async def service_index(body: kopf.Body, **_: Any) -> dict[Key, ChildState]:
    key = owner_key(body)
    return {key: parse_child(body)} if key else {}


@kopf.index("v1", "pods", labels=MANAGED)
async def pod_index(body: kopf.Body, **_: Any) -> dict[Key, PodState]:
    key = owner_key(body)
    return {key: parse_pod(body)} if key else {}


# ------------------------------------------------------------- the triggers


@kopf.on.event(c.GROUP, c.VERSION, c.PLURAL)
async def on_resource(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    if type == "DELETED":
        metrics.forget(namespace, name)
    else:
        memo.queue.add((namespace, name))


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
@kopf.on.event("v1", "services", labels=MANAGED)
@kopf.on.event("v1", "pods", labels=MANAGED)
async def on_child(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    key = owner_key(body)
    if key:
        memo.queue.add(key)
