"""Sends spec.validation's golden requests to pods and hands back how each pod answered.

Sits beside the kube layer, below the handlers, like the analysis queries: requests
run in lanes, one per pod (its IP and port), served by a few workers, never on the
reconcile workers; a namespace's pods hold at most all workers but one, so one tenant's
slow pods never hold up another tenant's validation (or its revert target's check);
each request has its own whole-request deadline (outbound.to_pod), and a pod's
requests stop at its first failure. What the core decides from the
answers is core/validation.py; answers wait in an inbox until the resource's next
reconcile folds them into its status.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from modeldeploy import metrics, outbound
from modeldeploy.core import golden
from modeldeploy.core.plan import ValidationRequest
from modeldeploy.lanes import Lanes
from modeldeploy.model.observed import ValidationResult
from modeldeploy.model.spec import GoldenRequest
from modeldeploy.ports import Key

logger = logging.getLogger(__name__)
WORKERS = 4  # golden requests in flight at once, over all resources
Send = Callable[..., outbound.Answer]
PASSED, FAILED, UNANSWERED = "Passed", "Failed", "Unanswered"


def validate(request: ValidationRequest, send: Send = outbound.to_pod) -> ValidationResult:
    """Every golden request to one pod, in order, up to the first that fails."""
    started = time.monotonic()
    for golden_request in request.requests:
        outcome, failure = _one(request, golden_request, send)
        metrics.VALIDATION_REQUESTS.labels(outcome).inc()
        if failure is not None:
            return _result(request, started, failure)
    return _result(request, started, None)


def _one(
    request: ValidationRequest, golden_request: GoldenRequest, send: Send
) -> tuple[str, str | None]:
    body = json.dumps(golden_request.body).encode() if golden_request.body is not None else None
    began = time.monotonic()
    try:
        answer = send(
            golden_request.method,
            request.ip,
            request.port,
            golden_request.path,
            golden_request.timeout_s,
            body=body,
            headers={"Content-Type": "application/json"} if body is not None else None,
        )
    except outbound.OutboundError as error:
        metrics.VALIDATION_SECONDS.observe(time.monotonic() - began)
        address = f"{request.ip}:{request.port}"
        return UNANSWERED, golden.unanswered(golden_request, request.pod, address, str(error))
    metrics.VALIDATION_SECONDS.observe(time.monotonic() - began)
    failure = golden.failed(golden_request, request.pod, answer.status, answer.body)
    return (FAILED if failure else PASSED), failure


def _result(request: ValidationRequest, started: float, failure: str | None) -> ValidationResult:
    return ValidationResult(
        pod=request.pod,
        template_hash=request.template_hash,
        passed=failure is None,
        at=datetime.now(UTC),
        message=failure or "",
        seconds=time.monotonic() - started,
    )


class Validator:
    """Runs due golden requests off the reconcile path, one lane per pod; a pod's
    requests are sent once until its answer is taken, however often it is asked for."""

    def __init__(
        self, wake: Callable[[Key], object], send: Send = outbound.to_pod, workers: int = WORKERS
    ) -> None:
        self._wake = wake  # thread-safe: schedules a reconcile of the key
        self._send = send
        # One worker is always left to the other namespaces.
        self._lanes = Lanes(workers=workers, name="validation", per_group=max(1, workers - 1))
        self._lock = threading.Lock()
        self._pending: set[tuple[Key, str, str]] = set()  # sent or answered, not yet taken
        self._inbox: dict[Key, list[ValidationResult]] = {}

    def request(self, key: Key, requests: tuple[ValidationRequest, ...]) -> None:
        for request in requests:
            ident = (key, request.pod, request.template_hash)
            with self._lock:
                if ident in self._pending:
                    continue
                self._pending.add(ident)
            lane = f"{request.ip}:{request.port}"
            namespace = key[0]
            self._lanes.submit(lane, functools.partial(self._run, key, request), group=namespace)

    def take(self, key: Key) -> tuple[ValidationResult, ...]:
        with self._lock:
            results = tuple(self._inbox.pop(key, ()))
            self._pending -= {(key, r.pod, r.template_hash) for r in results}
            return results

    def _run(self, key: Key, request: ValidationRequest) -> None:
        result = None
        try:
            result = validate(request, self._send)
        except Exception as error:  # a bug here must cost one validation, not the rollout
            logger.exception("validating pod %s failed", request.pod)
            result = ValidationResult(
                pod=request.pod,
                template_hash=request.template_hash,
                passed=False,
                at=datetime.now(UTC),
                message=f"the operator failed to validate pod {request.pod} "
                f"({type(error).__name__})",
            )
        finally:
            with self._lock:
                if result is not None:
                    self._inbox.setdefault(key, []).append(result)
                else:
                    self._pending.discard((key, request.pod, request.template_hash))
            self._wake(key)

    def close(self) -> None:
        self._lanes.close()
