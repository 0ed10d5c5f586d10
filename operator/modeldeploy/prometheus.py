"""Takes analysis measurements: PromQL instant queries against Prometheus' HTTP API.

Sits beside the kube layer, below the handlers. Queries run in lanes of their own,
one per Prometheus, each within a whole-request deadline, never on the reconcile
workers, so a slow or dead Prometheus delays no other resource; answers wait in an
inbox until the resource's next reconcile folds them into its status.
"""

from __future__ import annotations

import functools
import logging
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from modeldeploy import outbound
from modeldeploy.core.analysis import Query
from modeldeploy.core.answer import read_answer
from modeldeploy.lanes import Lanes
from modeldeploy.model.egress import EgressPolicy, Purpose, source_endpoint
from modeldeploy.model.observed import Measurement
from modeldeploy.ports import Key

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sources:
    """Where a namespace's queries go, as the admin configured it (docs/security.md):
    the operator-wide --prometheus, a Prometheus per namespace (--prometheus-for), and,
    behind a tenancy proxy such as prom-label-proxy, the query parameter that carries
    the resource's namespace (--prometheus-namespace-param)."""

    default_url: str | None = None
    per_namespace: Mapping[str, str] = field(default_factory=dict)
    namespace_param: str | None = None
    policy: EgressPolicy = field(default_factory=EgressPolicy)

    def base_for(self, query: Query) -> str | None:
        return query.prometheus or self.per_namespace.get(query.namespace) or self.default_url

    def url_for(self, query: Query, base: str) -> str | None:
        """The query's URL, built from the parts of its source (scheme, host, port, path
        prefix: a source with anything else is refused) and parameters we encode; None
        when the source is not one."""
        source = source_endpoint(base)
        if isinstance(source, str):
            return None
        params = {"query": query.promql}
        if self.namespace_param:
            params[self.namespace_param] = query.namespace
        return source.url(source.joined("/api/v1/query"), urllib.parse.urlencode(params))


def measure(query: Query, sources: Sources, deadline_s: float = 5.0) -> Measurement:
    """One instant query, answered within `deadline_s`; what its answer means is the core's."""
    now = datetime.now(UTC)
    base = sources.base_for(query)
    if not base:
        return Measurement(
            query.check,
            query.template_hash,
            now,
            error="no Prometheus address (spec.analysis.prometheus or --prometheus)",
        )
    url = sources.url_for(query, base)
    scope = sources.policy.scope(Purpose.ANALYSIS, query.namespace)
    why = scope.why_not(base) if url is not None else "not a Prometheus base URL"
    if url is None or why is not None:
        return Measurement(query.check, query.template_hash, now, error=f"refused: {why}")
    try:
        answer = outbound.request("GET", url, deadline_s, scope)
    except outbound.OutboundError as error:
        return Measurement(
            query.check, query.template_hash, now, error=f"Prometheus unreachable ({error})"
        )
    return read_answer(query.check, query.template_hash, now, answer.status, answer.body)


class Analyzer:
    """Runs due queries per resource off the reconcile path and hands back the answers.

    One lane per Prometheus (host:port): a slow one holds a single worker, never others.
    """

    def __init__(self, sources: Sources, wake: Callable[[Key], object]) -> None:
        self.sources = sources
        self._wake = wake  # thread-safe: schedules a reconcile of the key
        self._lanes = Lanes(workers=4, name="analysis")
        self._lock = threading.Lock()
        self._inflight: set[Key] = set()
        self._inbox: dict[Key, list[Measurement]] = {}

    def request(self, key: Key, queries: tuple[Query, ...]) -> None:
        with self._lock:
            if not queries or key in self._inflight:
                return
            self._inflight.add(key)
        peer = urllib.parse.urlsplit(self.sources.base_for(queries[0]) or "").netloc
        self._lanes.submit(peer, functools.partial(self._run, key, queries))

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
            return measure(query, self.sources)
        except Exception as error:  # a bug here must cost one measurement, not the analysis
            logger.exception("measuring %s failed", query.check)
            return Measurement(
                query.check,
                query.template_hash,
                datetime.now(UTC),
                error=f"the operator failed to measure ({type(error).__name__})",
            )

    def close(self) -> None:
        self._lanes.close()
