"""Every shape of a Prometheus answer has a defined outcome (docs/analysis.md)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from modeldeploy.core import analysis
from modeldeploy.core.answer import read_answer
from modeldeploy.model.spec import Check
from modeldeploy.model.status import CheckRecord, to_json
from tests.unit.builders import at


def answer(data: Any, status: str = "success", **extra: Any) -> bytes:
    return json.dumps({"status": status, "data": data, **extra}).encode()


def vector(*values: str) -> dict[str, Any]:
    return {
        "resultType": "vector",
        "result": [{"metric": {"pod": f"p{i}"}, "value": [1.0, v]} for i, v in enumerate(values)],
    }


CHECK = Check(name="error-rate", query="q", max=0.05)


@pytest.mark.parametrize(
    ("status", "body", "outcome", "said"),
    [
        (200, answer(vector("0.01")), "Passed", "= 0.01, within bounds"),
        (200, answer({"resultType": "scalar", "result": [1.0, "0.2"]}), "Failed", "above max"),
        (200, answer(vector("+Inf")), "Failed", "= +Inf, above max 0.05"),
        (200, answer(vector("-Inf")), "Passed", "= -Inf"),
        (200, answer(vector("NaN")), "Inconclusive", "NaN"),
        (200, answer(vector()), "Inconclusive", "no data"),
        (200, answer(vector("0.01", "0.02")), "Invalid", "returned 2 series"),
        (200, answer({"resultType": "matrix", "result": []}), "Invalid", "returned a matrix"),
        (200, answer({"resultType": "string", "result": [1.0, "x"]}), "Invalid", "a string"),
        (
            400,
            answer(None, "error", errorType="bad_data", error='parse error: unclosed "("'),
            "Invalid",
            'Prometheus refused the query: parse error: unclosed "("',
        ),
        (503, answer(None, "error", error="overloaded"), "Inconclusive", "HTTP 503: overloaded"),
        (200, b"<html>a proxy page</html>", "Inconclusive", "with no JSON"),
        (
            200,
            answer({"resultType": "vector", "result": [{"value": ["x"]}]}),
            "Inconclusive",
            "did not describe",
        ),
    ],
)
def test_each_answer_has_one_outcome(status: int, body: bytes, outcome: str, said: str) -> None:
    measured = read_answer("error-rate", "h", at(0), status, body)
    got, message = analysis.classify(CHECK, measured)
    assert got == outcome
    assert said in message
    assert "q" not in message.split("check error-rate")[0]  # names the check, not the query


def test_a_non_finite_value_is_written_as_text_so_status_stays_valid_json() -> None:
    measured = read_answer("error-rate", "h", at(0), 200, answer(vector("+Inf")))
    assert measured.value == math.inf
    record = CheckRecord(name="error-rate", last_value=measured.text)
    json.dumps(to_json(record), allow_nan=False)  # raises on Infinity or NaN


def test_a_long_error_from_prometheus_is_cut_to_a_fixed_size() -> None:
    error = "x" * 10_000
    body = answer(None, "error", errorType="bad_data", error=error)
    measured = read_answer("c", "h", at(0), 400, body)
    assert measured.error is not None
    assert len(measured.error) < 300
