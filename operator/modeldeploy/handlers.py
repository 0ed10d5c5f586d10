"""Thin kopf adapters: settings, and the watches that fill the caches.

The top of the operator. Each watch event (pods, ReplicaSets, Deployments and
Services are watched with a server-side label selector) puts its object into the
runtime's caches (caches.py) and marks its ModelDeployment's key in the runtime's
work queue; the runtime reconciles it (runtime.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import kopf

from modeldeploy import constants as c
from modeldeploy import metrics
from modeldeploy.caches import Caches
from modeldeploy.controller import Stalled
from modeldeploy.model.observed import owner_key, parse_child, parse_pod, parse_replica_set
from modeldeploy.model.resource import ACTIVE_VERSION_MANAGERS, active_version_managers
from modeldeploy.ports import Identity
from modeldeploy.runtime import SELECTOR, Options, Runtime

MANAGED = {c.LABEL_MANAGED_BY: c.MANAGER}
# kopf retries a failed request (a watch's too) after 1, 1, 2, 3, 5, 8, 13 and 21 s: an API
# server back after a short outage was seen up to half a minute late. Retry every second
# instead, for about as long in all, before kopf gives that request up.
API_RETRY_BACKOFFS = (0.5,) + (1.0,) * 60
# kopf's own requests (its LISTs; a watch's connect) get deadlines: 5 s to connect, 60 s in all
# (a LIST; a watch stream is ended by its inactivity timeout instead, 70 s without an event).
CONNECT_TIMEOUT_S, REQUEST_TIMEOUT_S = 5.0, 60.0


class NoDiffBase(kopf.DiffBaseStorage):
    """No handler here reacts to what changed (kopf's on.create/update/field): kopf's
    essence of each object, a deep copy of all of it on every watch event, a sixth of
    the CPU of a start among 7,000 objects, is never needed."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def runtime_of(memo: kopf.Memo) -> Runtime:
    runtime = memo.get("runtime")
    assert isinstance(runtime, Runtime), "the startup handler builds the runtime first"
    return runtime


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    settings.persistence.finalizer = f"{c.KOPF_PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=c.KOPF_PREFIX)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.enabled = False  # we post our own Events, on transitions only
    settings.networking.error_backoffs = API_RETRY_BACKOFFS
    settings.networking.connect_timeout = CONNECT_TIMEOUT_S
    settings.networking.request_timeout = REQUEST_TIMEOUT_S
    settings.scanning.disabled = True  # our resources are fixed: no CRD/namespace watch (RBAC)
    children = (("v1", "pods"), ("apps", "v1", "deployments"), ("apps", "v1", "replicasets"))
    for resource in (*children, ("v1", "services"), ("policy", "v1", "poddisruptionbudgets")):
        settings.watching.label_selectors[resource] = SELECTOR  # server-side filtering
    options = memo.get("options") or Options()
    runtime = memo.runtime = Runtime(options, Caches.empty())
    runtime.start()


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    await runtime_of(memo).stop()


@kopf.on.probe(id="reconciling")
async def reconciling(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    """Liveness: kopf's endpoint answers 500 when queued work has stopped being reconciled."""
    try:
        return runtime_of(memo).health()
    except Stalled as stalled:
        raise kopf.PermanentError(str(stalled)) from None


# ------------------------------------------------------------- the watches


def identity(body: kopf.Body) -> Identity:
    meta = body.metadata
    return (meta.namespace or "", meta.name or "", meta.uid or "")


def cached_resource(body: kopf.Body) -> Mapping[str, Any]:
    """What the caches keep of a ModelDeployment: managedFields can outweigh the rest of
    the object, and decisions need only who owns spec.activeVersion."""
    return {
        ACTIVE_VERSION_MANAGERS: active_version_managers(body.metadata),
        "metadata": {k: v for k, v in body.metadata.items() if k != "managedFields"},
        "spec": dict(body.spec),
        "status": dict(body.status),
    }


@kopf.on.event(c.GROUP, c.VERSION, c.PLURAL)
async def on_resource(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    key = (body.metadata.namespace or "", body.metadata.name or "")
    runtime = runtime_of(memo)
    if type is None:  # from a listing: at start, or after a watch lost its place (410 Gone)
        runtime.relisted()
    if type == "DELETED":
        runtime.caches.resources.discard(identity(body))
        metrics.forget(*key)
    else:
        runtime.caches.resources.put(identity(body), key, cached_resource(body))
        runtime.queue.add(key)


CHILDREN: Mapping[str, tuple[str, Callable[[kopf.Body], Any]]] = {
    "deployments": ("deployments", parse_child),
    "replicasets": ("replica_sets", parse_replica_set),
    "services": ("services", parse_child),
    "pods": ("pods", parse_pod),
    "poddisruptionbudgets": ("budgets", parse_child),
}


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
@kopf.on.event("apps", "v1", "replicasets", labels=MANAGED)
@kopf.on.event("v1", "services", labels=MANAGED)
@kopf.on.event("v1", "pods", labels=MANAGED)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=MANAGED)
async def on_child(
    type: str | None, body: kopf.Body, memo: kopf.Memo, resource: kopf.Resource, **_: Any
) -> None:
    runtime = runtime_of(memo)
    if type is None:
        runtime.relisted()
    cache, parse = CHILDREN[resource.plural]
    store = runtime.caches.store(cache)
    key = owner_key(body)
    if type == "DELETED":
        was = store.discard(identity(body))
    else:
        was = None
        store.put(identity(body), key, parse(body) if key else None)
    for marked in {key, was}:
        if marked is not None:
            runtime.queue.add(marked)
