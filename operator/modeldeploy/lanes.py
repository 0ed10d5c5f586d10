"""Work in lanes: one queue per peer (a Prometheus, a webhook receiver: host and port),
served by a few workers.

Beside the kube layer, below the handlers. A lane is served by at most one worker
at a time, so a peer that answers slowly (or trickles bytes until its deadline)
holds one worker, while the other lanes keep their turn: one tenant's slow receiver
cannot delay another tenant's notifications or analysis.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

logger = logging.getLogger(__name__)


class Lanes:
    def __init__(self, workers: int, name: str) -> None:
        self._lanes: dict[str, deque[Callable[[], None]]] = {}
        self._ready: deque[str] = deque()  # lanes with work and no worker on them
        self._busy: set[str] = set()
        self._lock = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, lane: str, job: Callable[[], None]) -> None:
        with self._lock:
            queue = self._lanes.setdefault(lane, deque())
            queue.append(job)
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

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._ready and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                lane = self._ready.popleft()
                job = self._lanes[lane].popleft()
                self._busy.add(lane)
            try:
                job()
            except Exception:  # a job's bug must not take the worker with it
                logger.exception("a job in lane %s failed", lane)
            finally:
                with self._lock:
                    self._busy.discard(lane)
                    if self._lanes[lane]:
                        self._ready.append(lane)  # to the back: other lanes go first
                        self._lock.notify()
                    else:
                        del self._lanes[lane]
