"""What a Prometheus answer to an instant query means for one check (docs/analysis.md).

Pure: the prometheus adapter hands over the HTTP status and body, and every shape
gets a defined outcome: a scalar or a single series is a value (±Inf included,
compared against the bound); NaN, an empty vector or an HTTP error other than a
refusal is no data; a refused query (400/422), a range vector, a string or several
series is an invalid query the user must fix. Nothing here raises.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from modeldeploy.model.observed import Measurement
from modeldeploy.model.text import shorten

ERROR_LIMIT = 200  # characters of Prometheus' own error text kept in status
REFUSED = (400, 422)  # Prometheus' answer to a query it cannot parse or run


def read_answer(
    check: str, digest: str, at: datetime, http_status: int, body: bytes
) -> Measurement:
    """The measurement an HTTP answer from /api/v1/query stands for."""

    def measured(**fields: Any) -> Measurement:
        return Measurement(check, digest, at, **fields)

    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        return measured(error=f"Prometheus answered HTTP {http_status} with no JSON")
    if http_status in REFUSED or answer.get("errorType") == "bad_data":
        text = shorten(str(answer.get("error") or "no reason given"), ERROR_LIMIT)
        return measured(invalid=True, error=f"Prometheus refused the query: {text}")
    if http_status != 200 or answer.get("status") != "success":
        text = shorten(str(answer.get("error") or ""), ERROR_LIMIT)
        return measured(error=f"Prometheus answered HTTP {http_status}: {text}".rstrip(": "))
    return _read_data(answer.get("data"), measured)


def _read_data(data: Any, measured: Callable[..., Measurement]) -> Measurement:
    result_type = data.get("resultType") if isinstance(data, dict) else None
    result = data.get("result") if isinstance(data, dict) else None
    if result_type == "scalar":
        return _sample(result, measured)
    if result_type == "vector" and isinstance(result, list):
        if not result:
            return measured(error="the query returned no data")
        if len(result) > 1:
            return measured(
                invalid=True,
                error=f"the query returned {len(result)} series; a check needs one value "
                "(aggregate it, e.g. with sum, max or avg)",
            )
        series = result[0]
        return _sample(series.get("value") if isinstance(series, dict) else None, measured)
    if result_type in ("matrix", "string"):
        return measured(
            invalid=True,
            error=f"the query returned a {result_type}; a check needs an instant vector "
            "or a scalar",
        )
    return measured(error="Prometheus answered with a result it did not describe")


def _sample(sample: Any, measured: Callable[..., Measurement]) -> Measurement:
    """A [timestamp, "value"] pair; Prometheus writes NaN and ±Inf as text."""
    try:
        text = str(sample[1])
        value = float(text)
    except (TypeError, IndexError, ValueError, KeyError):
        return measured(error="Prometheus answered with a sample it did not describe")
    if math.isnan(value):
        return measured(text=text, error="the query returned NaN (e.g. 0/0: no traffic yet)")
    return measured(value=value, text=text)
