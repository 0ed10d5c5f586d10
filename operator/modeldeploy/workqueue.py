"""A deduplicating work queue for reconciles, in the spirit of client-go's workqueue.

Sits beside the kube layer, below the handlers: watch events for a
ModelDeployment or any of its children only *mark* its key dirty; workers then
reconcile each key from the latest cached state, one reconcile per key at a time,
so a burst of pod events costs one reconcile, not one per event. A paused queue
(before its caches are warm, or a follower's) keeps collecting keys but hands none
out; so does an open one whose `gate` says no (the leader's write fence: a key is
handed out only while this process may write, asked at the moment it is).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
ERROR_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
GATE_POLL_S = 0.5  # a closed gate opens with time, not only by `kick`: look this often


class WorkQueue(Generic[K]):
    """Keys to reconcile; `handler(key)` returns seconds until the key's next deadline."""

    def __init__(
        self,
        handler: Callable[[K], Awaitable[float | None]],
        workers: int = 4,
        gate: Callable[[], bool] = lambda: True,
    ) -> None:
        self._handler = handler
        self._workers = workers
        self._gate = gate
        self._kicked = asyncio.Event()  # the gate may have opened: look again
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._active: set[K] = set()
        self._dirty: set[K] = set()
        self._failures: dict[K, int] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}  # one pending deadline per key
        self._tasks: list[asyncio.Task[None]] = []
        self._open = asyncio.Event()
        self._open.set()
        self._paused_at: float | None = None
        self._progress_at = time.monotonic()  # the last reconcile's end, or the last resume

    def add(self, key: K, delay: float = 0.0) -> None:
        """Ask for `key` to be reconciled (after `delay` seconds)."""
        if delay > 0:
            self._add_later(key, delay)
            return
        if self.idle():
            self._progress_at = time.monotonic()  # the wait for a reconcile starts now
        if key in self._active:
            self._dirty.add(key)  # reconcile again once the running one ends
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def _add_later(self, key: K, delay: float) -> None:
        loop = asyncio.get_running_loop()
        timer = self._timers.get(key)
        if timer is not None and not timer.cancelled() and timer.when() <= loop.time() + delay:
            return  # an earlier wake-up is already due; that reconcile sets the next one
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self._workers)]

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def idle(self) -> bool:
        return not (self._queued or self._active)

    def pause(self) -> None:
        """Hand out no more keys (running reconciles finish); adds are still collected."""
        if self._open.is_set():
            self._paused_at = time.monotonic()
        self._open.clear()

    def resume(self) -> None:
        if not self._open.is_set():
            self._progress_at = time.monotonic()
            self._paused_at = None
            self._open.set()
        self.kick()

    def kick(self) -> None:
        """The gate may have opened (a renewal): workers look again now."""
        self._kicked.set()

    def paused_for(self) -> float:
        """Seconds since the queue was paused (0 when it is not)."""
        return 0.0 if self._paused_at is None else time.monotonic() - self._paused_at

    def running(self) -> int:
        """Reconciles running now."""
        return len(self._active)

    def stalled_for(self) -> float:
        """Seconds that work has waited with no reconcile ending (0 when idle or paused)."""
        if self.idle() or not self._open.is_set():
            return 0.0
        return time.monotonic() - self._progress_at

    async def _until_open(self) -> None:
        """Until the queue is open and its gate says yes."""
        while True:
            await self._open.wait()
            if self._gate():
                return
            self._kicked.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kicked.wait(), GATE_POLL_S)

    async def _work(self) -> None:
        while True:
            await self._until_open()
            key = await self._queue.get()
            if not (self._open.is_set() and self._gate()):
                self._queue.put_nowait(key)  # still queued; handed out once open again
                continue
            self._queued.discard(key)
            self._active.add(key)
            requeue: float | None = None
            try:
                requeue = await self._handler(key)
                self._failures.pop(key, None)
            except Exception:  # a worker must outlive one bad reconcile; it is retried
                failures = self._failures.get(key, 0)
                self._failures[key] = failures + 1
                requeue = ERROR_BACKOFF_S[min(failures, len(ERROR_BACKOFF_S) - 1)]
                logger.exception("reconcile of %s failed; retrying in %.1fs", key, requeue)
            finally:
                self._active.discard(key)
                self._progress_at = time.monotonic()  # a failure is progress too: not stuck
            if key in self._dirty:
                self._dirty.discard(key)
                self.add(key)
            if requeue is not None:
                self.add(key, delay=requeue)
