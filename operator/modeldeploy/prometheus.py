"""Takes analysis measurements: PromQL instant queries against Prometheus' HTTP API.

Sits beside the kube layer, below the handlers. Queries run on their own small
thread pool with a timeout, never on the reconcile workers, so a slow or dead
Prometheus delays no other resource; answers wait in an inbox until the
resource's next reconcile folds them into its status.
"""

from __future__ import annotations

import logging
import threading
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from modeldeploy import outbound
from modeldeploy.core.analysis import Query
from modeldeploy.core.answer import read_answer
from modeldeploy.model.observed import Measurement
from modeldeploy.reconcile import Key

logger = logging.getLogger(__name__)


def measure(query: Query, default_url: str | None, deadline_s: float = 5.0) -> Measurement:
    """One instant query, answered within `deadline_s`; what its answer means is the core's."""
    now = datetime.now(UTC)
    base = query.prometheus or default_url
    if not base:
        return Measurement(
            query.check,
            query.template_hash,
            now,
            error="no Prometheus address (spec.analysis.prometheus or --prometheus)",
        )
    url = f"{base.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': query.promql})}"
    try:
        answer = outbound.request("GET", url, deadline_s)
    except outbound.OutboundError as error:
        return Measurement(
            query.check, query.template_hash, now, error=f"Prometheus unreachable ({error})"
        )
    return read_answer(query.check, query.template_hash, now, answer.status, answer.body)


class Analyzer:
    """Runs due queries per resource off the reconcile path and hands back the answers."""

    def __init__(self, default_url: str | None, wake: Callable[[Key], object]) -> None:
        self.default_url = default_url
        self._wake = wake  # thread-safe: schedules a reconcile of the key
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="analysis")
        self._lock = threading.Lock()
        self._inflight: set[Key] = set()
        self._inbox: dict[Key, list[Measurement]] = {}

    def request(self, key: Key, queries: tuple[Query, ...]) -> None:
        with self._lock:
            if not queries or key in self._inflight:
                return
            self._inflight.add(key)
        self._pool.submit(self._run, key, queries)

    def take(self, key: Key) -> tuple[Measurement, ...]:
        with self._lock:
            return tuple(self._inbox.pop(key, ()))

    def _run(self, key: Key, queries: tuple[Query, ...]) -> None:
        answers = []
        try:
            answers = [self._measure(query) for query in queries]
        finally:  # whatever happened, this resource's analysis goes on
            with self._lock:
                self._inbox.setdefault(key, []).extend(answers)
                self._inflight.discard(key)
            self._wake(key)

    def _measure(self, query: Query) -> Measurement:
        try:
            return measure(query, self.default_url)
        except Exception as error:  # a bug here must cost one measurement, not the analysis
            logger.exception("measuring %s failed", query.check)
            return Measurement(
                query.check,
                query.template_hash,
                datetime.now(UTC),
                error=f"the operator failed to measure ({type(error).__name__})",
            )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
