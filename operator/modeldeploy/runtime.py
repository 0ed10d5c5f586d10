"""The running operator's parts, typed: caches, work queue, reconcile pool, adapters.

Built once by the kopf startup handler (handlers.py) from the flags (`Options`)
and the caches (caches.py) its event handlers fill; every watch event marks a key
in its queue, and its workers run `reconcile_once` on their own thread pool. The
queue hands out nothing until the caches hold what a LIST of each kind shows. With
leader election, only the leader's queue hands out keys, and every write is fenced
by its Lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from modeldeploy import constants as c
from modeldeploy import metrics
from modeldeploy.caches import Caches
from modeldeploy.kube import Fenced, KubeCluster, KubeLeases
from modeldeploy.leader import Elector, Timing
from modeldeploy.model.egress import EgressPolicy
from modeldeploy.model.settings import Settings
from modeldeploy.notify import Notifier
from modeldeploy.ports import Identity, Key, Memory, Services
from modeldeploy.prometheus import Analyzer, Sources
from modeldeploy.reconcile import STALE_RECHECK_S, reconcile_once
from modeldeploy.validator import Validator
from modeldeploy.workqueue import WorkQueue

logger = logging.getLogger(__name__)

DEFAULT_WORKERS = 16  # reconciles at once; --workers
DEFAULT_STALL_TIMEOUT_S = 120.0  # --stall-timeout
SELECTOR = f"{c.LABEL_MANAGED_BY}={c.MANAGER}"  # children are watched and listed with it
RESYNC_DEBOUNCE_S = 1.0  # a re-list brings a burst of events: one resync after it
RESYNC_PERIOD_S = 600.0  # a backstop for a re-list that brought no event at all
CATCH_UP_RESYNC_S = 10.0  # the longest a new leader waits for its resync before reconciling
WARM_TIMEOUT_S = 30.0  # the longest the start waits for the caches to hold what was listed
WARM_POLL_S = 0.1


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
}


class Runtime:
    """One operator process's moving parts, started and stopped together."""

    def __init__(self, options: Options, caches: Caches) -> None:
        loop = asyncio.get_running_loop()
        self.options = options
        self.caches = caches
        self.elector = elector(options.election)
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
            instance=options.election.identity if options.election else None,
        )
        self.validator = Validator(wake=lambda key: loop.call_soon_threadsafe(self.queue.add, key))
        self.services = Services(
            cluster=self.cluster,
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
        self._tasks: set[asyncio.Task[None]] = set()
        self._resync_wanted = asyncio.Event()
        self._warm = asyncio.Event()
        if options.metrics_port:
            metrics.serve(options.metrics_port, options.metrics_address)

    def leads(self) -> bool:
        return self.elector is None or self.elector.may_write()

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
        try:
            return await loop.run_in_executor(
                self.pool,
                functools.partial(
                    reconcile_once, self.services, body, observed, now, memory, self._waker(key)
                ),
            )
        except Fenced as refused:
            # Leadership ended mid-reconcile: hand out nothing more until it is back (the
            # elector resumes the queue then); whoever leads reconciles this key afresh.
            logger.info("reconcile of %s/%s stopped: %s", key[0], key[1], refused)
            self.queue.pause()
            self.queue.add(key)
            return None

    def _waker(self, key: Key) -> Callable[[], None]:
        """Queues `key` from any thread (a webhook finished)."""
        loop = asyncio.get_running_loop()

        def wake() -> None:
            loop.call_soon_threadsafe(self.queue.add, key)

        return wake

    # ------------------------------------------------------------ leadership

    def start(self) -> None:
        self.queue.start()
        # Nothing is handed out before the caches are warm (a decision on a half-listed
        # cache would miss children and pods that exist), nor while a follower.
        self.queue.pause()
        self._spawn(self._warm_up())
        self._spawn(self._resync_loop())
        if self.elector is not None:
            self._spawn(self.elector.run(self._lead, self.queue.pause))

    def _lead(self) -> None:
        self._spawn(self._catch_up())

    async def _warm_up(self) -> None:
        try:
            await self._until_warm()
        finally:
            self._warm.set()
        if self.elector is None:
            self.queue.resume()  # the listing's events queued every key meanwhile

    async def _until_warm(self) -> None:
        """Until each cache holds every object a LIST of its kind showed at start. Past
        WARM_TIMEOUT_S (an object deleted between that LIST and the watch's own never
        arrives), the work goes out anyway, saying what was still missing."""
        started = time.monotonic()
        stores = dict(self.caches.stores())
        try:
            listed = await asyncio.wait_for(
                asyncio.gather(*(self._live(kind) for kind in stores)), WARM_TIMEOUT_S
            )
        except Exception as error:  # the API server is away: events are all there is
            logger.warning("could not list what the caches must hold: %s", error)
            return
        wanted = dict(zip(stores, listed, strict=True))
        while True:
            missing = {
                kind: len(wanted[kind] - stores[kind].identities().keys()) for kind in stores
            }
            missing = {kind: n for kind, n in missing.items() if n}
            waited = time.monotonic() - started
            if not missing:
                logger.info("caches warm after %.1fs: %s", waited, _sizes(wanted))
                return
            if waited > WARM_TIMEOUT_S:
                logger.warning("caches still missing %s after %.0fs; reconciling", missing, waited)
                return
            await asyncio.sleep(WARM_POLL_S)

    async def _catch_up(self) -> None:
        """On leading (or back after an outage): forget the gone, reconcile every key once.

        The resync goes first, but a slow API server does not hold the work up for long:
        past CATCH_UP_RESYNC_S the keys go out and the resync is tried again later.
        """
        await self._warm.wait()
        try:
            await asyncio.wait_for(self.resync(), CATCH_UP_RESYNC_S)
        except TimeoutError:
            logger.warning("resync took over %gs; reconciling, resyncing later", CATCH_UP_RESYNC_S)
            self._resync_wanted.set()
        for key in self.caches.resources.held_keys():
            self.queue.add(key)
        if self.leads():  # leadership may have gone again while the resync ran
            self.queue.resume()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ stale caches

    def relisted(self) -> None:
        """A watch listed again (kopf does after 410 Gone): what it missed is still cached.
        The first listing needs no resync: the caches start empty, and the warm-up lists."""
        if not self._warm.is_set():
            return
        self._resync_wanted.set()

    async def _resync_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._resync_wanted.wait(), RESYNC_PERIOD_S)
            await asyncio.sleep(RESYNC_DEBOUNCE_S)
            self._resync_wanted.clear()
            if self.leads():
                await self.resync()

    async def resync(self) -> None:
        """Forget cached objects that no longer exist, by a fresh LIST of each kind.

        The caches drop an object only on its DELETED event, and a watch that
        re-lists after 410 Gone never sends one for what was deleted meanwhile. An
        entry cached before the LIST began and absent from it is gone for good.
        """
        cached = {kind: store.identities() for kind, store in self.caches.stores()}
        kinds = [kind for kind, identities in cached.items() if identities]
        listed = await asyncio.gather(*(self._live(kind) for kind in kinds), return_exceptions=True)
        for kind, live in zip(kinds, listed, strict=True):
            if isinstance(live, BaseException):  # the API server is away; a later resync retries
                logger.warning("resync of %s failed: %s", kind, live)
                continue
            for gone in cached[kind].keys() - live:
                self._forget(kind, gone, cached[kind][gone])

    async def _live(self, kind: str) -> set[Identity]:
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

    def _forget(self, kind: str, gone: Identity, key: Key | None) -> None:
        self.caches.store(kind).discard(gone)
        logger.info("forgot %s %s/%s: gone while unwatched", kind, gone[0], gone[1])
        if key is None:
            return
        if kind == "resources" and key not in self.caches.resources:
            metrics.forget(*key)
        else:
            self.queue.add(key)

    # ------------------------------------------------------------ health

    def health(self) -> dict[str, Any]:
        """The liveness probe's answer; Stalled when queued work waited past the stall timeout."""
        waited = self.queue.stalled_for()
        if waited > self.options.stall_timeout:
            raise Stalled(
                f"work is queued and no reconcile has finished for {waited:.0f}s "
                f"(--stall-timeout {self.options.stall_timeout:g}s)"
            )
        return {"leading": self.leads(), "waitedSeconds": round(waited, 1)}

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.elector is not None:
            self.queue.pause()
            try:
                released = await self.elector.resign()
            except Exception as error:  # exiting anyway: the Lease then expires on its own
                logger.warning("could not release the lease: %s", error)
            else:
                logger.info("released the lease" if released else "held no lease to release")
            self.elector.close()
        await self.queue.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.notifier.close()
        self.analyzer.close()
        self.validator.close()


def _sizes(listed: Mapping[str, set[Identity]]) -> str:
    return ", ".join(f"{len(objects)} {kind}" for kind, objects in listed.items())


class Stalled(Exception):
    """Queued work has waited too long with no reconcile finishing: the process is stuck."""


def elector(election: Election | None) -> Elector | None:
    if election is None:
        return None
    leases = KubeLeases(
        election.namespace, election.lease_name, timeout=election.timing.request_timeout
    )
    return Elector(leases, election.identity, election.timing)
