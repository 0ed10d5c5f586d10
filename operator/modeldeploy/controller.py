"""The controller: resource keys reconciled from warm caches, one at a time each, while
this process may write.

Below the composition root (runtime.py), over the caches, the work queue and the
leader elector. Every watch event marks a key in its queue; its workers run the
`reconcile` they were given for each key. Nothing is handed out before the caches
hold what a LIST of each kind showed (the warm-up), and with leader election a key is
handed out only while the elector's fence says this process may write: the queue's
gate asks it at each hand-out, a renewal kicks the workers, losing the Lease pauses
the queue and winning it back catches up (resync, every key once) before it resumes.
A resync forgets what was deleted while no watch saw it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from modeldeploy import metrics
from modeldeploy.caches import Caches
from modeldeploy.kube import Fenced
from modeldeploy.leader import Elector
from modeldeploy.ports import Identity, Key
from modeldeploy.workqueue import WorkQueue

logger = logging.getLogger(__name__)

RESYNC_DEBOUNCE_S = 1.0  # a re-list brings a burst of events: one resync after it
RESYNC_PERIOD_S = 600.0  # a backstop for a re-list that brought no event at all
CATCH_UP_RESYNC_S = 10.0  # the longest a new leader waits for its resync before reconciling
WARM_TIMEOUT_S = 30.0  # the longest the start waits for the caches to hold what was listed
WARM_POLL_S = 0.1
DRAIN_TIMEOUT_S = 10.0  # on SIGTERM, the longest running reconciles are waited for

Reconcile = Callable[[Key], Awaitable[float | None]]
Lister = Callable[[str], Awaitable[set[Identity]]]  # a kind -> who exists now


class Stalled(Exception):
    """The process is stuck: queued work waits with no reconcile finishing, or it holds
    the Lease with its queue paused."""


class Controller:
    """The work queue, its leadership and its caches' freshness (see the module's doc)."""

    def __init__(
        self,
        caches: Caches,
        reconcile: Reconcile,
        lister: Lister,
        elector: Elector | None = None,
        workers: int = 16,
        stall_timeout: float = 120.0,
    ) -> None:
        self.caches = caches
        self._reconcile = reconcile
        self._lister = lister
        self.elector = elector
        self.stall_timeout = stall_timeout
        # A key is handed out only while this process may write (the leader's fence).
        self.queue: WorkQueue[Key] = WorkQueue(self._run, workers=workers, gate=self.leads)
        self._tasks: set[asyncio.Task[None]] = set()
        self._resync_wanted = asyncio.Event()
        self._warm = asyncio.Event()

    def leads(self) -> bool:
        return self.elector is None or self.elector.may_write()

    async def _run(self, key: Key) -> float | None:
        try:
            return await self._reconcile(key)
        except Fenced as refused:
            # The fence closed mid-reconcile: the gate hands out nothing more until it
            # opens again; whoever leads then reconciles this key afresh.
            logger.info("reconcile of %s/%s stopped: %s", key[0], key[1], refused)
            self.queue.add(key)
            return None

    # ------------------------------------------------------------ leadership

    def start(self) -> None:
        self.queue.start()
        # Nothing is handed out before the caches are warm (a decision on a half-listed
        # cache would miss children and pods that exist), nor while a follower.
        self.queue.pause()
        self._spawn(self._warm_up())
        self._spawn(self._resync_loop())
        if self.elector is not None:
            self._spawn(self.elector.run(self.lead, self.follow))

    def lead(self) -> None:
        """This process may write (again): catch up, then hand work out."""
        self.queue.kick()
        self._spawn(self._catch_up())

    def follow(self) -> None:
        """This process may no longer write: hand out nothing until it leads again."""
        self.queue.pause()

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
                asyncio.gather(*(self._lister(kind) for kind in stores)), WARM_TIMEOUT_S
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
        listed = await asyncio.gather(
            *(self._lister(kind) for kind in kinds), return_exceptions=True
        )
        for kind, live in zip(kinds, listed, strict=True):
            if isinstance(live, BaseException):  # the API server is away; a later resync retries
                logger.warning("resync of %s failed: %s", kind, live)
                continue
            for gone in cached[kind].keys() - live:
                self._forget(kind, gone, cached[kind][gone])

    def _forget(self, kind: str, gone: Identity, key: Key | None) -> None:
        self.caches.store(kind).discard(gone)
        logger.info("forgot %s %s/%s: gone while unwatched", kind, gone[0], gone[1])
        if key is None:
            return
        if kind == "resources" and key not in self.caches.resources:
            metrics.forget(*key)
        else:
            self.queue.add(key)

    # ------------------------------------------------------------ health and the end

    def health(self) -> dict[str, Any]:
        """The liveness probe's answer. Stalled when queued work waited past the stall
        timeout, or when this replica holds the Lease and its queue has been paused that
        long (a leader that does no work and keeps others from taking over)."""
        limit = self.stall_timeout
        waited = self.queue.stalled_for()
        if waited > limit:
            raise Stalled(
                f"work is queued and no reconcile has finished for {waited:.0f}s "
                f"(--stall-timeout {limit:g}s)"
            )
        paused = self.queue.paused_for()
        if self.elector is not None and self.elector.may_write() and paused > limit:
            raise Stalled(
                f"this replica holds the Lease and its work queue has been paused for "
                f"{paused:.0f}s (--stall-timeout {limit:g}s)"
            )
        return {"leading": self.leads(), "waitedSeconds": round(waited, 1)}

    async def stop(self) -> None:
        """Stop handing out work, let running reconciles end (bounded), then give up the
        Lease: a follower must not lead while this process still writes."""
        self.queue.pause()
        if not await _wait_until(lambda: self.queue.running() == 0, DRAIN_TIMEOUT_S):
            logger.warning(
                "%d reconciles still running after %gs; releasing the lease, which fences them",
                self.queue.running(),
                DRAIN_TIMEOUT_S,
            )
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.elector is not None:
            try:
                released = await self.elector.resign()
            except Exception as error:  # exiting anyway: the Lease then expires on its own
                logger.warning("could not release the lease: %s", error)
            else:
                logger.info("released the lease" if released else "held no lease to release")
            self.elector.close()
        await self.queue.stop()


async def _wait_until(done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _sizes(listed: Mapping[str, set[Identity]]) -> str:
    return ", ".join(f"{len(objects)} {kind}" for kind, objects in listed.items())
