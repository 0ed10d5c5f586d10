"""Crash safety with a fault at every write: the operator dies right after it, restarts,
and converges with exactly one revert, no lost history, every Event and webhook at least
once (docs/behaviour.md, crash safety; the switch is modeldeploy/faults.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from modeldeploy.faults import ENV, EXIT_CODE
from testbed.support import OperatorProcess
from tests.e2e.helpers import Kube, Receiver, model_deployment, ready, reverted_to, wait_for

GOOD, BAD = "registry.example/m:1", "registry.example/m:2-crashloop"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    running.thread.start()
    yield running
    running.server.shutdown()
    running.server.server_close()


@pytest.mark.parametrize(
    "point",
    [
        "status:RolloutFailed",  # the status write that records the failure
        "revert",  # the spec revert
        "apply:Deployment@2",  # the revert's Deployment (v2's rollout was the first)
        "event:RolloutFailed",
        "event:RolledBack",
        "webhook:RolloutFailed",
        "webhook:RolledBack",
    ],
)
def test_killed_right_after_a_write_the_operator_converges_with_one_revert(
    kube: Kube, namespace: str, stopped_operator: OperatorProcess, receiver: Receiver, point: str
) -> None:
    name = "faulty"
    stopped_operator.start(f"--webhook={receiver.url}")
    kube.create(namespace, model_deployment(name, {"v1": GOOD, "v2": BAD}, "v1"))
    wait_for(lambda: ready(kube, namespace, name), 60, "v1 Ready")
    stopped_operator.stop()
    stopped_operator.env[ENV] = point
    stopped_operator.start()
    kube.select(namespace, name, "v2")
    process = stopped_operator.process
    assert process is not None
    wait_for(lambda: process.poll() is not None, 60, f"the operator to die at {point}")
    assert process.returncode == EXIT_CODE, stopped_operator.log()[-2000:]
    del stopped_operator.env[ENV]
    stopped_operator.start()
    wait_for(lambda: reverted_to(kube, namespace, name, "v1"), 90, "the revert after restart")
    status = kube.status(namespace, name)
    assert len(status["reverts"]) == 1
    assert [h["trigger"] for h in status["history"]].count("Automatic") == 1
    revisions = [h["revision"] for h in status["history"]]
    assert revisions == list(range(len(revisions), 0, -1))
    assert kube.condition(namespace, name, "RolledBack")["status"] == "True"
    reasons = wait_for(
        lambda: (r := kube.event_reasons(namespace, name)) and "RolledBack" in r and r,
        30,
        "the RolledBack Event",
    )
    assert reasons.count("RolloutFailed") == 1  # named by identity: re-posting finds it
    assert reasons.count("RolledBack") == 1
    delivered = wait_for(
        lambda: {"RolloutFailed", "RolledBack"} <= set(receiver.events()) and receiver.events(),
        30,
        "both webhooks",
    )
    ids: dict[str, set[Any]] = {}
    for payload in receiver.payloads:
        ids.setdefault(payload["event"], set()).add(payload["id"])
    assert len(ids["RolloutFailed"]) == len(ids["RolledBack"]) == 1  # duplicates share an id
    assert delivered.count("RolledBack") >= 1
    wait_for(lambda: kube.status(namespace, name).get("outbox") == [], 30, "an empty outbox")
