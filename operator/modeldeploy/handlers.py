"""Thin kopf adapters: settings, the caches (indexes), and the watch triggers.

The top of the operator. kopf indexes hold the latest ModelDeployments and their
children (pods, Deployments and Services are watched with a server-side label
selector); any watch event marks its ModelDeployment's key in the runtime's work
queue, and the runtime reconciles it (runtime.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import kopf

from modeldeploy import constants as c
from modeldeploy import metrics
from modeldeploy.model.observed import (
    ChildState,
    PodState,
    ReplicaSetState,
    owner_key,
    parse_child,
    parse_pod,
    parse_replica_set,
)
from modeldeploy.model.resource import ACTIVE_VERSION_MANAGERS, active_version_managers
from modeldeploy.ports import Key
from modeldeploy.runtime import SELECTOR, Caches, Options, Runtime, Stalled

MANAGED = {c.LABEL_MANAGED_BY: c.MANAGER}
# kopf retries a failed request (a watch's too) after 1, 1, 2, 3, 5, 8, 13 and 21 s: an API
# server back after a short outage was seen up to half a minute late. Retry every second
# instead, for about as long in all, before kopf gives that request up.
API_RETRY_BACKOFFS = (0.5,) + (1.0,) * 60
# kopf's own requests (its LISTs; a watch's connect) get deadlines: 5 s to connect, 60 s in all
# (a LIST; a watch stream is ended by its inactivity timeout instead, 70 s without an event).
CONNECT_TIMEOUT_S, REQUEST_TIMEOUT_S = 5.0, 60.0


def runtime_of(memo: kopf.Memo) -> Runtime:
    runtime = memo.get("runtime")
    assert isinstance(runtime, Runtime), "the startup handler builds the runtime first"
    return runtime


def index_of(kwargs: Mapping[str, Any], indexer: Callable[..., Any]) -> kopf.Index[Any, Any]:
    """The live index an `@kopf.index` function fills: kopf passes it under the function's name."""
    index = kwargs[indexer.__name__]
    assert isinstance(index, kopf.Index)
    return index


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    settings.persistence.finalizer = f"{c.KOPF_PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=c.KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=c.KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.posting.enabled = False  # we post our own Events, on transitions only
    settings.networking.error_backoffs = API_RETRY_BACKOFFS
    settings.networking.connect_timeout = CONNECT_TIMEOUT_S
    settings.networking.request_timeout = REQUEST_TIMEOUT_S
    settings.scanning.disabled = True  # our resources are fixed: no CRD/namespace watch (RBAC)
    children = (("v1", "pods"), ("apps", "v1", "deployments"), ("apps", "v1", "replicasets"))
    for resource in (*children, ("v1", "services")):
        settings.watching.label_selectors[resource] = SELECTOR  # server-side filtering
    options = memo.get("options") or Options()
    caches = Caches(
        resources=index_of(kwargs, resource_index),
        deployments=index_of(kwargs, deployment_index),
        replica_sets=index_of(kwargs, replica_set_index),
        services=index_of(kwargs, service_index),
        pods=index_of(kwargs, pod_index),
    )
    runtime = memo.runtime = Runtime(options, caches)
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


# ------------------------------------------------------------------ the caches


@kopf.index(c.GROUP, c.VERSION, c.PLURAL)
async def resource_index(body: kopf.Body, **_: Any) -> dict[Key, Mapping[str, Any]]:
    return {
        (body.metadata.namespace or "", body.metadata.name or ""): {
            # managedFields can outweigh the rest of the object; decisions need only who
            # owns spec.activeVersion.
            ACTIVE_VERSION_MANAGERS: active_version_managers(body.metadata),
            "metadata": {k: v for k, v in body.metadata.items() if k != "managedFields"},
            "spec": dict(body.spec),
            "status": dict(body.status),
        }
    }


@kopf.index("apps", "v1", "deployments", labels=MANAGED)
async def deployment_index(body: kopf.Body, **_: Any) -> dict[Key, ChildState]:
    key = owner_key(body)
    return {key: parse_child(body)} if key else {}


@kopf.index("apps", "v1", "replicasets", labels=MANAGED)
async def replica_set_index(body: kopf.Body, **_: Any) -> dict[Key, ReplicaSetState]:
    key = owner_key(body)
    return {key: parse_replica_set(body)} if key else {}


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
async def on_resource(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    runtime = runtime_of(memo)
    if type is None:  # from a listing: at start, or after a watch lost its place (410 Gone)
        runtime.relisted()
    if type == "DELETED":
        metrics.forget(namespace, name)
    else:
        runtime.queue.add((namespace, name))


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
@kopf.on.event("apps", "v1", "replicasets", labels=MANAGED)
@kopf.on.event("v1", "services", labels=MANAGED)
@kopf.on.event("v1", "pods", labels=MANAGED)
async def on_child(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    runtime = runtime_of(memo)
    if type is None:
        runtime.relisted()
    key = owner_key(body)
    if key:
        runtime.queue.add(key)
