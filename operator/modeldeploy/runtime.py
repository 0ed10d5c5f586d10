"""The running operator's parts, typed: caches, work queue, reconcile pool, adapters.

Built once by the kopf startup handler (handlers.py) from the flags (`Options`)
and kopf's indexes; every watch event marks a key in its queue, and its workers
run `reconcile_once` on their own thread pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import kopf

from modeldeploy import metrics
from modeldeploy.kube import KubeCluster
from modeldeploy.model.observed import ChildState, Observed, PodState
from modeldeploy.notify import Notifier
from modeldeploy.prometheus import Analyzer
from modeldeploy.reconcile import Key, Services, reconcile_once
from modeldeploy.workqueue import WorkQueue

DEFAULT_WORKERS = 16  # reconciles at once; --workers


@dataclass(frozen=True)
class Options:
    """What the flags configure (see __main__)."""

    workers: int = DEFAULT_WORKERS
    metrics_port: int = 0
    webhook_url: str | None = None
    prometheus_url: str | None = None


@dataclass(frozen=True)
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


class Runtime:
    """One operator process's moving parts, started and stopped together."""

    def __init__(self, options: Options, caches: Caches) -> None:
        loop = asyncio.get_running_loop()
        self.caches = caches
        self.notifier = Notifier(options.webhook_url)
        self.analyzer = Analyzer(
            options.prometheus_url, wake=lambda key: loop.call_soon_threadsafe(self.queue.add, key)
        )
        self.services = Services(
            cluster=KubeCluster(), notifier=self.notifier, measurer=self.analyzer
        )
        # Reconciles wait on the API server, not the CPU: a pool of their own, as wide as
        # the queue, so a burst of failures is reverted side by side, not four at a time.
        self.pool = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="reconcile")
        self.queue: WorkQueue[Key] = WorkQueue(self.reconcile, workers=options.workers)
        if options.metrics_port:
            metrics.serve(options.metrics_port)

    async def reconcile(self, key: Key) -> float | None:
        snapshot = self.caches.read(key)
        if snapshot is None:
            return None
        body, observed = snapshot
        observed = replace(observed, measurements=self.analyzer.take(key))
        loop = asyncio.get_running_loop()
        now = datetime.now(UTC)
        return await loop.run_in_executor(
            self.pool, reconcile_once, self.services, body, observed, now
        )

    def start(self) -> None:
        self.queue.start()

    async def stop(self) -> None:
        await self.queue.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.notifier.close()
        self.analyzer.close()
