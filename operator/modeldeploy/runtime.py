"""The running operator's parts, typed: caches, work queue, reconcile pool, adapters.

Built once by the kopf startup handler (handlers.py) from the flags (`Options`)
and kopf's indexes; every watch event marks a key in its queue, and its workers
run `reconcile_once` on their own thread pool.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import kopf

from modeldeploy import metrics
from modeldeploy.core.render import standby_name
from modeldeploy.kube import KubeCluster
from modeldeploy.model.egress import EgressPolicy
from modeldeploy.model.observed import ChildState, Observed, PodState, ReplicaSetState
from modeldeploy.model.settings import Settings
from modeldeploy.notify import Notifier
from modeldeploy.prometheus import Analyzer, Sources
from modeldeploy.reconcile import Key, Memory, Services, reconcile_once
from modeldeploy.validator import Validator
from modeldeploy.workqueue import WorkQueue

DEFAULT_WORKERS = 16  # reconciles at once; --workers


@dataclass(frozen=True)
class Options:
    """What the flags configure (see __main__)."""

    workers: int = DEFAULT_WORKERS
    metrics_port: int = 0
    metrics_address: str = "127.0.0.1"
    webhook_url: str | None = None
    prometheus_url: str | None = None
    prometheus_for: Mapping[str, str] = field(default_factory=dict)  # namespace -> URL
    prometheus_namespace_param: str | None = None
    allowed_url_prefixes: tuple[str, ...] = ()
    webhook_deadline_s: float = 3.0

    def egress(self) -> EgressPolicy:
        """The allow-list, with the admin's own endpoints always on it."""
        return EgressPolicy.of(
            self.allowed_url_prefixes,
            self.webhook_url,
            self.prometheus_url,
            *self.prometheus_for.values(),
        )


@dataclass(frozen=True)
class Caches:
    """Live kopf indexes, keyed by (namespace, ModelDeployment name): everything that
    carries our name label. Whether it is really ours (owner uids) the core decides."""

    resources: kopf.Index[Key, Mapping[str, Any]]
    deployments: kopf.Index[Key, ChildState]
    replica_sets: kopf.Index[Key, ReplicaSetState]
    services: kopf.Index[Key, ChildState]
    pods: kopf.Index[Key, PodState]

    def read(self, key: Key) -> tuple[Mapping[str, Any], Observed] | None:
        bodies = list(self.resources.get(key, ()))
        if not bodies:
            return None  # deleted; owner references clean up the children (B11)
        _, name = key
        return bodies[0], Observed(
            deployment=_named(self.deployments.get(key, ()), name),
            standby=_named(self.deployments.get(key, ()), standby_name(name)),
            service=_named(self.services.get(key, ()), name),
            replica_sets=tuple(self.replica_sets.get(key, ())),
            pods=tuple(self.pods.get(key, ())),
        )


def _named(children: Iterable[ChildState], name: str) -> ChildState | None:
    """The child named after the resource: a labelled one of another name is not ours."""
    return next((child for child in children if child.name == name), None)


class Runtime:
    """One operator process's moving parts, started and stopped together."""

    def __init__(self, options: Options, caches: Caches) -> None:
        loop = asyncio.get_running_loop()
        self.caches = caches
        policy = options.egress()
        self.notifier = Notifier(policy, deadline_s=options.webhook_deadline_s)
        sources = Sources(
            default_url=options.prometheus_url,
            per_namespace=options.prometheus_for,
            namespace_param=options.prometheus_namespace_param,
            policy=policy,
        )
        self.analyzer = Analyzer(
            sources, wake=lambda key: loop.call_soon_threadsafe(self.queue.add, key)
        )
        self.validator = Validator(wake=lambda key: loop.call_soon_threadsafe(self.queue.add, key))
        self.services = Services(
            cluster=KubeCluster(),
            notifier=self.notifier,
            measurer=self.analyzer,
            settings=Settings(egress=policy),
            webhook_url=options.webhook_url,
            validator=self.validator,
        )
        # Reconciles wait on the API server, not the CPU: a pool of their own, as wide as
        # the queue, so a burst of failures is reverted side by side, not four at a time.
        self.pool = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="reconcile")
        self.queue: WorkQueue[Key] = WorkQueue(self.reconcile, workers=options.workers)
        self.memory: dict[Key, Memory] = {}
        if options.metrics_port:
            metrics.serve(options.metrics_port, options.metrics_address)

    async def reconcile(self, key: Key) -> float | None:
        snapshot = self.caches.read(key)
        if snapshot is None:
            self.memory.pop(key, None)
            return None
        body, observed = snapshot
        observed = replace(
            observed, measurements=self.analyzer.take(key), validations=self.validator.take(key)
        )
        loop = asyncio.get_running_loop()
        memory = self.memory.setdefault(key, Memory())
        now = datetime.now(UTC)
        return await loop.run_in_executor(
            self.pool,
            functools.partial(
                reconcile_once, self.services, body, observed, now, memory, self._waker(key)
            ),
        )

    def _waker(self, key: Key) -> Callable[[], None]:
        """Queues `key` from any thread (a webhook finished)."""
        loop = asyncio.get_running_loop()

        def wake() -> None:
            loop.call_soon_threadsafe(self.queue.add, key)

        return wake

    def start(self) -> None:
        self.queue.start()

    async def stop(self) -> None:
        await self.queue.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.notifier.close()
        self.analyzer.close()
        self.validator.close()
