"""One reconcile: read -> decide -> write, in the order the behaviour rules require.

Between the pure core and the adapters: `reconcile_once` asks `decide` and writes
through the `Cluster` protocol: status first (holding the Events it owes), then
the children, then the conditional spec change, then the owed Events and webhooks.
What the API refused and what was delivered is kept in the resource's `Memory` and
shown to the next decision. It imports neither kopf nor kubernetes, so tests/unit
drive it with a recording fake and tests/e2e with the real API server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from modeldeploy import faults, metrics
from modeldeploy.core import capacity, config
from modeldeploy.core.children import APPLY
from modeldeploy.core.decide import decide
from modeldeploy.core.plan import Decision, Event, ResolveRequest, SnapshotRequest, SpecChange
from modeldeploy.core.reads import reads
from modeldeploy.core.render import standby_name
from modeldeploy.core.revert import retry_delay_s, retry_due
from modeldeploy.delivery import (
    DRAIN_S,
    deliver,
    recheck_webhook,
    registry_credentials,
    sooner,
    write_registry,
)
from modeldeploy.model.observed import Observed, RefusalKey, RegistryResult, SnapshotResult
from modeldeploy.model.resource import Resource, parse_resource
from modeldeploy.model.spec import Spec
from modeldeploy.model.status import Status, to_json
from modeldeploy.ports import Cluster, Memory, Refused, Services, resource_version

logger = logging.getLogger(__name__)
T = TypeVar("T")
# A body our own write replaced is skipped: the watch brings the new one at once; this
# look again is only in case it does not.
STALE_RECHECK_S = 2.0
PROGRESS_PACE_S = 5.0  # the least time between two status writes that only report progress


def reconcile_once(
    services: Services,
    body: Mapping[str, Any],
    observed: Observed,
    now: datetime,
    memory: Memory | None = None,
    wake: Callable[[], None] = lambda: None,
) -> float | None:
    """Decide and write; the seconds until this resource should be looked at again."""
    memory = memory if memory is not None else Memory()
    if memory.outdated(body):
        logger.debug("a stale view of %s: our own write is on its way", body["metadata"]["name"])
        return STALE_RECHECK_S
    cluster = services.cluster
    resource = parse_resource(body)
    observed = _with_room(cluster, memory.observe(observed))
    decision = _decide(cluster, resource, observed, now, services, memory)
    written: tuple[str, ...] = (resource_version(body),)  # what our writes replace
    decision = _paced(decision, memory, now)
    if decision.status_changed:
        try:
            made = cluster.replace_status(resource, written[0], to_json(decision.status))
        except Refused as error:
            return _status_refused(cluster, resource, error, memory, now)
        if made is None:
            return None  # stale view; the newer object is on its way, reconciled then
        memory.wrote_over(*written)
        memory.status_written_at = now
        written = (*written, made)
        _forget_pruned(memory, decision.status)
        metrics.observe(resource, resource.status, decision.status)
        if decision.dropped_notices:
            metrics.NOTIFICATIONS_DROPPED.inc(decision.dropped_notices)
        for event in decision.events:
            faults.point(f"status:{event.reason}")
    requeue = decision.requeue_after
    _say_if_idle(resource, decision)
    failed: list[Exception] = []

    def attempt(write: Callable[[], T]) -> T | None:
        """Each write after the status runs even if one before it failed (an outage, a
        5xx): a failed apply must not keep the spec change that consumes an annotation
        from landing, or every retry would owe its Event again. The first error is
        raised at the end, so the reconcile is retried as before."""
        try:
            return write()
        except Exception as error:  # raised again at the end
            failed.append(error)
            return None

    attempt(lambda: _apply_children(cluster, resource, decision, memory, now))
    attempt(lambda: _remove_children(cluster, resource, decision))
    if attempt(lambda: _change_spec(cluster, resource, decision.spec_change, memory, now)):
        memory.wrote_over(*written)
    if decision.release_active_version:
        attempt(lambda: cluster.release_active_version(resource))
    if decision.deletes:
        deletes = decision.deletes
        requeue = sooner(
            requeue, attempt(lambda: _delete_snapshots(cluster, resource, deletes, memory, now))
        )
    requeue = sooner(
        requeue, attempt(lambda: deliver(services, resource, decision.notices, memory, wake, now))
    )
    requeue = sooner(requeue, attempt(lambda: recheck_webhook(services, resource, memory, now)))
    requeue = sooner(  # what status owes the registry (core/writeback.py)
        requeue,
        attempt(
            lambda: write_registry(services, resource, decision.status.registry_writes, memory, now)
        ),
    )
    services.measurer.request((resource.namespace, resource.name), decision.queries)
    if services.validator is not None:
        services.validator.request((resource.namespace, resource.name), decision.validations)
    elif decision.validations:
        logger.error("no validator to send %d golden requests", len(decision.validations))
    if failed:
        raise failed[0]
    return requeue


def _decide(
    cluster: Cluster,
    resource: Resource,
    observed: Observed,
    now: datetime,
    services: Services,
    memory: Memory,
) -> Decision:
    """The core's decision, once, with what it asks to read first: a version's
    configuration snapshot (taken before its rollout, docs/validation-and-config.md), its
    registry model version (resolved before its rollout, docs/registry.md), and each
    child of our name that our caches do not show (B1)."""
    wanted = reads(resource, observed, now, services.settings)
    if wanted.snapshots:
        taken = tuple(take_snapshot(cluster, resource, one) for one in wanted.snapshots)
        observed = replace(observed, snapshots=taken)
    backoff = None
    if wanted.resolutions:
        resolved, backoff = resolve_all(services, resource, wanted.resolutions, memory, now)
        observed = replace(observed, resolutions=resolved, registry_down=memory.registry_down())
    if wanted.children:
        observed = replace(observed, **_read_children(cluster, resource, wanted.children))
    decision = decide(resource, observed, now, services.settings)
    if backoff is not None:  # the registry did not answer: ask again after the backoff
        decision = replace(decision, requeue_after=sooner(decision.requeue_after, backoff))
    return decision


# Where each child kind is kept in Observed, and the kind and name it is read by.
CHILD_READS: dict[str, tuple[str, str, Callable[[str], str]]] = {
    "Deployment": ("deployment", "Deployment", lambda name: name),
    "Service": ("service", "Service", lambda name: name),
    "Standby": ("standby", "Deployment", standby_name),
    "PodDisruptionBudget": ("budget", "PodDisruptionBudget", lambda name: name),
}


def _read_children(cluster: Cluster, resource: Resource, kinds: tuple[str, ...]) -> dict[str, Any]:
    """Each named child as the API server has it (None when there is none)."""
    found: dict[str, Any] = {}
    for kind in kinds:
        field, api_kind, named = CHILD_READS[kind]
        found[field] = cluster.read_child(api_kind, resource, named(resource.name))
    return found


def _say_if_idle(resource: Resource, decision: Decision) -> None:
    """The debug line operators (and tests/e2e) read to see a no-op reconcile."""
    writes = decision.status_changed or decision.deployment or decision.service
    if not writes and decision.spec_change is None and not decision.notices:
        logger.debug(
            "reconciled %s/%s: up to date, nothing written", resource.namespace, resource.name
        )


def _paced(decision: Decision, memory: Memory, now: datetime) -> Decision:
    """The decision with a progress-only status write held back until PROGRESS_PACE_S
    after the last one: counts move with every pod, and written each time they cost a
    burst of new resources a write per pod. Anything else (a condition, a verdict, a
    notice) goes at once, and with it whatever progress waited."""
    if not (decision.status_changed and decision.status_may_wait):
        return decision
    if memory.status_written_at is None:
        return decision
    left = PROGRESS_PACE_S - (now - memory.status_written_at).total_seconds()
    if left <= 0:
        return decision
    requeue = sooner(decision.requeue_after, left)
    return replace(decision, status_changed=False, requeue_after=requeue)


def _with_room(cluster: Cluster, observed: Observed) -> Observed:
    """For each pod the scheduler found Insufficient: whether any node could hold it at
    all (core/capacity.py tells a full pool from a version too large for every node)."""
    too_large = tuple(
        (pod.name, why)
        for pod in observed.pods
        if capacity.insufficient(pod) and (why := cluster.too_large(pod.requests)) is not None
    )
    return replace(observed, too_large=too_large) if too_large else observed


def take_snapshot(cluster: Cluster, resource: Resource, wanted: SnapshotRequest) -> SnapshotResult:
    """Copy a version's source ConfigMap into its immutable snapshot (or find it made)."""
    namespace, source = resource.namespace, wanted.source

    def failed(why: str) -> SnapshotResult:
        return SnapshotResult(wanted.version, source, error=why)

    try:
        body = cluster.read_config_map(namespace, source)
        if body is None:
            return failed(f"ConfigMap {source} not found in namespace {namespace}")
        digest = config.content_hash(body.get("data") or {}, body.get("binaryData") or {})
        manifest = config.render_snapshot(resource, wanted.version, source, body, digest)
        existing = cluster.create_config_map(manifest)
    except Refused as error:
        return failed(
            f"the API server refused the snapshot of ConfigMap {source} "
            f"(HTTP {error.code}): {error.message}"
        )
    name = manifest["metadata"]["name"]
    if existing is not None and not config.is_snapshot(existing, resource, digest):
        return failed(
            f"a ConfigMap named {name} exists and is not this snapshot; it is left untouched"
        )
    return SnapshotResult(wanted.version, source, name=name, hash=digest)


def resolve_all(
    services: Services,
    resource: Resource,
    wanted: tuple[ResolveRequest, ...],
    memory: Memory,
    now: datetime,
) -> tuple[tuple[RegistryResult, ...], float | None]:
    """Ask the registry about each reference; after calls it did not answer, wait for
    the backoff first. The answers, and the seconds until the next call is due when
    the registry did not answer."""
    spec = resource.spec
    if not wanted or not isinstance(spec, Spec) or spec.registry is None:
        return (), None

    def each(error: str, unreachable: bool) -> tuple[RegistryResult, ...]:
        return tuple(
            RegistryResult(
                w.version,
                w.model,
                w.requested_version,
                w.alias,
                error=error,
                unreachable=unreachable,
            )
            for w in wanted
        )

    left = memory.registry_due_in(now)
    if left > 0:
        return each(memory.registry_error, True), left
    authorization, problem = registry_credentials(
        services.cluster, resource.namespace, spec.registry.credentials_secret
    )
    if problem is not None:
        return each(problem, False), None
    client = services.registry
    if client is None:
        return each("this operator process has no registry client", True), None
    uri = spec.registry.tracking_uri
    answers = tuple(client.resolve(resource.namespace, uri, authorization, w) for w in wanted)
    down = next((a for a in answers if a.unreachable), None)
    if down is not None:
        logger.warning(
            "registry of %s/%s did not answer: %s", resource.namespace, resource.name, down.error
        )
    return answers, memory.registry_answered(down is None, down.error if down else None, now)


def _delete_snapshots(
    cluster: Cluster, resource: Resource, names: tuple[str, ...], memory: Memory, now: datetime
) -> float | None:
    """Delete snapshots no version needs; look again soon to drop them from status, or,
    when the API refuses (RBAC), back off as for any refused write."""
    refused = memory.refusals.get(RefusalKey.DELETE_SNAPSHOT)
    if refused is not None and not retry_due(refused, now):
        return retry_delay_s(refused) - (now - refused.at).total_seconds()
    deleted = False
    for name in names:
        if name in memory.deleted_snapshots:
            continue
        try:
            cluster.delete_config_map(resource.namespace, name)
        except Refused as error:
            logger.warning("deleting snapshot %s/%s refused: %s", resource.namespace, name, error)
            memory.refused(RefusalKey.DELETE_SNAPSHOT, resource.generation, error, now)
            return float(retry_delay_s(memory.refusals[RefusalKey.DELETE_SNAPSHOT]))
        with memory.lock:
            memory.deleted_snapshots.add(name)
        deleted = True
    memory.refusals.pop(RefusalKey.DELETE_SNAPSHOT, None)
    return DRAIN_S if deleted else None


def _remove_children(cluster: Cluster, resource: Resource, decision: Decision) -> None:
    """The standby once its window is over, the PodDisruptionBudget once not asked for."""
    if decision.remove_standby:
        cluster.delete_child("Deployment", resource, standby_name(resource.name))
    if decision.remove_budget:
        cluster.delete_child("PodDisruptionBudget", resource, resource.name)


def _apply_children(
    cluster: Cluster, resource: Resource, decision: Decision, memory: Memory, now: datetime
) -> None:
    children = {"Service": decision.service, "Deployment": decision.deployment}
    extra = {"Standby": decision.standby, "PodDisruptionBudget": decision.budget}
    for child, manifest in {**children, **extra}.items():
        if manifest is None:
            continue
        action = APPLY[child]
        try:
            cluster.apply(manifest)
        except Refused as error:
            logger.warning(
                "%s of %s/%s refused: %s", action, resource.namespace, resource.name, error
            )
            memory.refused(action, resource.generation, error, now)
            continue
        memory.refusals.pop(action, None)
        faults.point(f"apply:{manifest['kind']}")
    for gate in decision.gates:  # the pods' readiness gates, once what they join is there
        cluster.set_pod_gate(resource.namespace, gate)


def _change_spec(
    cluster: Cluster,
    resource: Resource,
    change: SpecChange | None,
    memory: Memory,
    now: datetime,
) -> bool:
    """Whether the spec was changed."""
    if change is None:
        return False
    action = RefusalKey.REVERT if change.expect_version is not None else RefusalKey.RETRY
    try:
        applied = cluster.change_spec(resource, change)
    except Refused as error:
        logger.warning("%s of %s/%s refused: %s", action, resource.namespace, resource.name, error)
        memory.refused(action, resource.generation, error, now)
        return False
    memory.refusals.pop(action, None)
    if applied and action == RefusalKey.REVERT:
        faults.point("revert")
    return applied


# Between two webhook attempts of one notice to one URL: capped, for as long as the
# notice is owed (core/outbox.py gives up after a day, saying so).
def _status_refused(
    cluster: Cluster, resource: Resource, error: Refused, memory: Memory, now: datetime
) -> float:
    """Status itself was refused: nothing else may be written (status comes first), so
    say it in an Event, once per spec, and look again later."""
    logger.error("status of %s/%s refused: %s", resource.namespace, resource.name, error)
    first = RefusalKey.STATUS not in memory.refusals
    memory.refused(RefusalKey.STATUS, resource.generation, error, now)
    if first:
        message = f"the API server refused the status write (HTTP {error.code}): {error.message}"
        cluster.post_event(resource, Event("Warning", "StatusRefused", message[:1024]))
    return float(min(300, 5 * 2 ** (memory.refusals[RefusalKey.STATUS].attempts - 1)))


def _forget_pruned(memory: Memory, status: Status) -> None:
    """Delivered notices the written status no longer holds need no remembering."""
    memory.forget_except({notice.key for notice in status.outbox})
    with memory.lock:
        memory.registry_written &= {write.key for write in status.registry_writes}
    recorded = {record.name for record in status.configs}
    with memory.lock:
        memory.deleted_snapshots &= recorded
