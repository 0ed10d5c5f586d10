"""The composition root: one operator process's parts, built from the flags.

Built once by the kopf startup handler (handlers.py) from the flags (`Options`) and
the caches (caches.py) its event handlers fill: the adapters (the API client behind
the leader's fence, webhooks, analysis queries, golden requests), the reconcile that
runs `reconcile_once` with them on a thread pool, and the controller (controller.py)
that hands keys to it. Start, stop and health go through here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from modeldeploy import constants as c
from modeldeploy import metrics
from modeldeploy.caches import Caches
from modeldeploy.controller import Controller
from modeldeploy.kube import WRITE_DEADLINE, KubeCluster, KubeLeases
from modeldeploy.leader import Elector, Timing
from modeldeploy.mlflow import MlflowRegistry
from modeldeploy.model.egress import EgressPolicy
from modeldeploy.model.settings import Settings
from modeldeploy.notify import Notifier
from modeldeploy.ports import Identity, Key, Memory, Services
from modeldeploy.prometheus import Analyzer, Sources
from modeldeploy.reconcile import STALE_RECHECK_S, reconcile_once
from modeldeploy.validator import Validator

logger = logging.getLogger(__name__)

DEFAULT_WORKERS = 16  # reconciles at once; --workers
DEFAULT_STALL_TIMEOUT_S = 120.0  # --stall-timeout
SELECTOR = f"{c.LABEL_MANAGED_BY}={c.MANAGER}"  # children are watched and listed with it


@dataclass(frozen=True)
class Election:
    """Leader election's settings (--leader-elect-*)."""

    namespace: str
    lease_name: str
    identity: str
    timing: Timing


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
    # (namespace or None for every namespace, URL prefix), per purpose
    allowed_analysis: tuple[tuple[str | None, str], ...] = ()
    allowed_webhooks: tuple[tuple[str | None, str], ...] = ()
    allowed_registries: tuple[tuple[str | None, str], ...] = ()
    webhook_deadline_s: float = 3.0

    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    election: Election | None = None
    stall_timeout: float = DEFAULT_STALL_TIMEOUT_S

    def egress(self) -> EgressPolicy:
        """The allow-lists, with the admin's own endpoints on them, each for its purpose
        (and a namespace's Prometheus for that namespace only)."""
        return EgressPolicy.of(
            analysis=self.allowed_analysis,
            webhooks=self.allowed_webhooks,
            prometheus=self.prometheus_url,
            prometheus_for=self.prometheus_for.items(),
            webhook=self.webhook_url,
            registries=self.allowed_registries,
        )


@dataclass(frozen=True)
class Watched:
    """Where a cache's objects come from: the API path, the plural, the label selector."""

    api_path: str
    plural: str
    selector: str | None


WATCHED = {
    "resources": Watched(f"/apis/{c.GROUP}/{c.VERSION}", c.PLURAL, None),
    "deployments": Watched("/apis/apps/v1", "deployments", SELECTOR),
    "replica_sets": Watched("/apis/apps/v1", "replicasets", SELECTOR),
    "services": Watched("/api/v1", "services", SELECTOR),
    "pods": Watched("/api/v1", "pods", SELECTOR),
    "budgets": Watched("/apis/policy/v1", "poddisruptionbudgets", SELECTOR),
}


class Runtime:
    """One operator process's parts, built from the flags, started and stopped together:
    the adapters (API client, webhooks, analysis, golden requests), the reconcile that
    writes through them, and the controller that runs it."""

    def __init__(self, options: Options, caches: Caches) -> None:
        loop = asyncio.get_running_loop()
        self.options = options
        self.caches = caches
        election = options.election
        self.elector = elector(election)
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
        self.cluster = KubeCluster(
            fence=self.elector.may_write if self.elector else None,
            instance=election.identity if election else None,
            # A fenced write ends before another process may lead (leader.Timing).
            write_deadline=election.timing.write_deadline if election else WRITE_DEADLINE,
        )
        self.validator = Validator(wake=lambda key: loop.call_soon_threadsafe(self.queue.add, key))
        self.services = Services(
            cluster=self.cluster,
            notifier=self.notifier,
            measurer=self.analyzer,
            settings=Settings(egress=policy),
            webhook_url=options.webhook_url,
            validator=self.validator,
            registry=MlflowRegistry(policy),
        )
        # Reconciles wait on the API server, not the CPU: a pool of their own, as wide as
        # the queue, so a burst of failures is reverted side by side, not four at a time.
        self.pool = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="reconcile")
        self.memory: dict[Key, Memory] = {}
        self.controller = Controller(
            caches,
            self.reconcile,
            self._live,
            elector=self.elector,
            workers=options.workers,
            stall_timeout=options.stall_timeout,
        )
        self.queue = self.controller.queue
        if options.metrics_port:
            metrics.serve(options.metrics_port, options.metrics_address)

    async def reconcile(self, key: Key) -> float | None:
        snapshot = self.caches.read(key)
        if snapshot is None:
            self.memory.pop(key, None)
            return None
        body, observed = snapshot
        memory = self.memory.setdefault(key, Memory())
        if memory.outdated(body):
            # Our own write is on its way; what arrived meanwhile waits for it (not taken).
            return STALE_RECHECK_S
        observed = replace(
            observed, measurements=self.analyzer.take(key), validations=self.validator.take(key)
        )
        loop = asyncio.get_running_loop()
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

    async def _live(self, kind: str) -> set[Identity]:
        """Who of `kind` exists now, in every namespace served (a metadata LIST)."""
        loop = asyncio.get_running_loop()
        watched = WATCHED[kind]
        live: set[Identity] = set()
        for namespace in self.options.namespaces or (None,):
            live |= await loop.run_in_executor(
                self.pool,
                self.cluster.list_identities,
                watched.api_path,
                watched.plural,
                namespace,
                watched.selector,
            )
        return live

    def start(self) -> None:
        self.controller.start()

    def relisted(self) -> None:
        self.controller.relisted()

    def health(self) -> dict[str, Any]:
        return self.controller.health()

    async def stop(self) -> None:
        await self.controller.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.notifier.close()
        self.analyzer.close()
        self.validator.close()


def elector(election: Election | None) -> Elector | None:
    if election is None:
        return None
    leases = KubeLeases(election.namespace, election.lease_name)
    return Elector(leases, election.identity, election.timing)
