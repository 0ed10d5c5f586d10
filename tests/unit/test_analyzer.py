"""The analyzer's robustness: a failure measuring one resource costs one measurement."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from modeldeploy import prometheus
from modeldeploy.core.analysis import Query
from modeldeploy.model.observed import Measurement

Key = tuple[str, str]


def test_an_error_while_measuring_one_resource_never_stops_its_analysis_or_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def measure(query: Query, sources: prometheus.Sources, deadline_s: float = 5.0) -> Measurement:
        if query.check == "broken":
            raise RuntimeError("a bug in the operator")
        return Measurement(query.check, query.template_hash, datetime.now(UTC), value=1.0)

    monkeypatch.setattr(prometheus, "measure", measure)
    answered: dict[Key, threading.Event] = {}

    def wake(key: Key) -> None:
        answered[key].set()

    analyzer = prometheus.Analyzer(prometheus.Sources(), wake)
    a, b = ("ns", "a"), ("ns", "b")
    try:
        for key, check in ((a, "broken"), (b, "fine")):
            answered[key] = threading.Event()
            analyzer.request(key, (Query(check, "q", None, "h"),))
        assert answered[a].wait(10)
        assert answered[b].wait(10)
        (failed,) = analyzer.take(a)
        assert failed.value is None
        assert failed.error == "the operator failed to measure (RuntimeError)"
        answered[a] = threading.Event()
        analyzer.request(a, (Query("fine", "q", None, "h"),))  # a is measured again
        assert answered[a].wait(10)
        assert [m.value for m in analyzer.take(a)] == [1.0]
        assert [m.value for m in analyzer.take(b)] == [1.0]
    finally:
        analyzer.close()
