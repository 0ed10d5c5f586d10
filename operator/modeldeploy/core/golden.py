"""What a pod's answer to a golden request means: as expected, or what differed (pure).

Part of the pure core, at the bottom beside `analysis`: the validator edge hands over
the HTTP status and body of each answer, and gets back None or a sentence naming the
request, the pod, what was expected and a short excerpt of what came back. Nothing
here raises, whatever the body holds.
"""

from __future__ import annotations

import json
import math
from typing import Any

from modeldeploy.model.spec import Expectation, GoldenRequest, JsonPath
from modeldeploy.model.text import shorten

EXCERPT_LIMIT = 80  # characters of an answer quoted in a failure message
VALUE_LIMIT = 40
MISSING = object()


def request_path(request: GoldenRequest, name: str, namespace: str, version: str) -> str:
    """The request's path with {{name}}, {{namespace}} and {{version}} filled in."""
    return (
        request.path.replace("{{name}}", name)
        .replace("{{namespace}}", namespace)
        .replace("{{version}}", version)
    )


def lookup(document: Any, steps: JsonPath) -> Any:
    """The value at `steps` in `document`, or MISSING."""
    for step in steps:
        listed = isinstance(step, int) and isinstance(document, list) and step < len(document)
        keyed = isinstance(step, str) and isinstance(document, dict) and step in document
        if not (listed or keyed):
            return MISSING
        document = document[step]
    return document


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def matches(expectation: Expectation, value: Any) -> bool:
    if expectation.number is not None:
        return (
            _is_number(value)
            and not math.isnan(value)
            and abs(float(value) - expectation.number) <= expectation.tolerance
        )
    return isinstance(value, str) and value == expectation.equals


def _shown(value: Any) -> str:
    if value is MISSING:
        return "nothing there"
    return shorten(json.dumps(value), VALUE_LIMIT)


def _wanted(expectation: Expectation) -> str:
    if expectation.number is None:
        return f"{expectation.path} = {json.dumps(expectation.equals)}"
    within = f" ± {expectation.tolerance:g}" if expectation.tolerance else ""
    return f"{expectation.path} = {expectation.number:g}{within}"


def excerpt(body: bytes) -> str:
    """The start of an answer, on one line, for a message."""
    text = " ".join(body.decode("utf-8", errors="replace").split())
    return shorten(text, EXCERPT_LIMIT) if text else "(empty)"


def difference(request: GoldenRequest, status: int, body: bytes) -> str | None:
    """None when the answer is what `request` expects; else what was expected and got."""
    if status != request.expect.status:
        return f"expected status {request.expect.status}, got {status}"
    if not request.expect.values:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return "expected a JSON answer"
    for expectation in request.expect.values:
        value = lookup(document, expectation.steps)
        if not matches(expectation, value):
            return f"expected {_wanted(expectation)}, got {_shown(value)}"
    return None


def failed(request: GoldenRequest, pod: str, status: int, body: bytes) -> str | None:
    """The failure message for `pod`'s answer to `request`, or None when it passed."""
    why = difference(request, status, body)
    if why is None:
        return None
    return f"request {request.name} to pod {pod}: {why}; answer: {excerpt(body)}"


def unanswered(request: GoldenRequest, pod: str, address: str, why: str) -> str:
    """The failure message for a request that got no answer at all."""
    return (
        f"request {request.name} to pod {pod} ({address}) got no answer: {why} "
        "(validation needs pods that answer)"
    )
