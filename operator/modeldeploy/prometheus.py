"""Takes analysis measurements: PromQL instant queries against Prometheus' HTTP API.

Sits beside the kube layer, below the handlers. Queries run on their own small
thread pool with a timeout, never on the reconcile workers, so a slow or dead
Prometheus delays no other resource; answers wait in an inbox until the
resource's next reconcile folds them into its status.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from modeldeploy.core.analysis import Query
from modeldeploy.model.observed import Measurement
from modeldeploy.reconcile import Key

logger = logging.getLogger(__name__)


def measure(query: Query, default_url: str | None, timeout_s: float = 5.0) -> Measurement:
    """One instant query; a scalar or the first sample of a vector, else no value and why."""
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
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - http(s)
            answer = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as error:
        return Measurement(
            query.check, query.template_hash, now, error=f"Prometheus unreachable ({error})"
        )
    data = answer.get("data") or {}
    result = data.get("result")
    if data.get("resultType") == "scalar" and result:
        sample = result
    elif isinstance(result, list) and result:
        sample = result[0].get("value")
    else:
        return Measurement(query.check, query.template_hash, now)  # no data
    value = float(sample[1])
    if math.isnan(value):
        return Measurement(query.check, query.template_hash, now)
    return Measurement(query.check, query.template_hash, now, value=value)


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
        answers = [measure(query, self.default_url) for query in queries]
        with self._lock:
            self._inbox.setdefault(key, []).extend(answers)
            self._inflight.discard(key)
        self._wake(key)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
