"""Work in lanes: one queue per peer (a Prometheus, a webhook receiver, a pod: host and
port), served by a few workers, fairly between groups of lanes.

Beside the kube layer, below the handlers. A lane is served by at most one worker
at a time, so a peer that answers slowly (or trickles bytes until its deadline)
holds one worker, while the other lanes keep their turn. Lanes may belong to a group
(a tenant's namespace): a group holds at most `per_group` workers at once, so one
tenant's many slow peers never take every worker from the others.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

logger = logging.getLogger(__name__)


class Lanes:
    def __init__(self, workers: int, name: str, per_group: int | None = None) -> None:
        self._lanes: dict[str, deque[Callable[[], None]]] = {}
        self._ready: deque[str] = deque()  # lanes with work and no worker on them
        self._busy: set[str] = set()
        self._group_of: dict[str, str] = {}
        self._working: dict[str, int] = {}  # workers on each group's lanes now
        self._per_group = per_group if per_group is not None else workers
        self._lock = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, lane: str, job: Callable[[], None], group: str = "") -> None:
        with self._lock:
            queue = self._lanes.setdefault(lane, deque())
            queue.append(job)
            self._group_of[lane] = group
            if lane not in self._busy and lane not in self._ready:
                self._ready.append(lane)
                self._lock.notify()

    def pending(self) -> int:
        with self._lock:
            return sum(len(queue) for queue in self._lanes.values())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    def _next(self) -> str | None:
        """The first ready lane whose group may take one more worker (under the lock)."""
        for index, lane in enumerate(self._ready):
            if self._working.get(self._group_of[lane], 0) < self._per_group:
                del self._ready[index]
                return lane
        return None

    def _work(self) -> None:
        while True:
            with self._lock:
                lane = None
                while not self._closed and (lane := self._next()) is None:
                    self._lock.wait()
                if self._closed or lane is None:
                    return
                job = self._lanes[lane].popleft()
                self._busy.add(lane)
                group = self._group_of[lane]
                self._working[group] = self._working.get(group, 0) + 1
            try:
                job()
            except Exception:  # a job's bug must not take the worker with it
                logger.exception("a job in lane %s failed", lane)
            finally:
                with self._lock:
                    self._busy.discard(lane)
                    self._working[group] -= 1
                    if self._lanes[lane]:
                        self._ready.append(lane)  # to the back: other lanes go first
                    else:
                        del self._lanes[lane]
                        del self._group_of[lane]
                    self._lock.notify_all()  # a lane of this group may be next now
