"""Two operators, one leader, on the real test bed: kills, terminations and a frozen leader.

Each test runs two operator processes with --leader-elect and a Lease in its own
namespace; short durations (4s/3s/1s) keep them fast, and one test runs the
defaults (15s/10s/2s). Takeover times go to the "measured" summary, not into
assertions: a loaded machine may be slower, never the other way round.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from testbed.support import OperatorProcess
from tests.e2e.conftest import namespaced_operator
from tests.e2e.helpers import (
    Kube,
    model_deployment,
    rendered,
    revert_scenario,
    reverted_to,
    wait_for,
)

GOOD, CRASHING = "registry.example/m:1", "registry.example/m:2-crashloop"
LEASE = "modeldeploy-operator"
FAST = (
    "--leader-elect-lease-duration=4s",
    "--leader-elect-renew-deadline=3s",
    "--leader-elect-retry-period=1s",
)


def elect(namespace: str, *timing: str) -> tuple[str, ...]:
    return ("--leader-elect", f"--leader-elect-namespace={namespace}", *timing)


def lease(kube: Kube, namespace: str) -> dict[str, Any]:
    """The Lease's spec, {} while there is none."""
    api = kubernetes.client.CoordinationV1Api(kube.api)
    try:
        found = api.read_namespaced_lease(LEASE, namespace)
    except ApiException as error:
        if error.status == 404:
            return {}
        raise
    spec: dict[str, Any] = kube.api.sanitize_for_serialization(found.spec)  # type: ignore[no-untyped-call]
    return spec


def holder(kube: Kube, namespace: str) -> str:
    return str(lease(kube, namespace).get("holderIdentity") or "")


def identity(operator: OperatorProcess) -> str:
    """The holderIdentity an operator took part with (it logs it when it leads)."""
    for line in operator.log().splitlines():
        if "leader election: " in line and line.endswith(" leads"):
            return line.rsplit("leader election: ", 1)[1].removesuffix(" leads")
    return ""


def leader_and_follower(
    operators: list[OperatorProcess], holding: str
) -> tuple[OperatorProcess, OperatorProcess]:
    wait_for(lambda: holding in map(identity, operators), 10, f"{holding} to log that it leads")
    first, second = operators
    return (first, second) if identity(first) == holding else (second, first)


def new_holder(kube: Kube, namespace: str, old: str) -> str:
    current = holder(kube, namespace)
    return current if current and current != old else ""


def takeover_seconds(kube: Kube, namespace: str, since: datetime) -> float:
    """From the signal to the new holder's acquireTime (the Lease's own record of it)."""
    acquired = datetime.fromisoformat(str(lease(kube, namespace)["acquireTime"]))
    return round((acquired - since).total_seconds(), 2)


def assert_one_revert(kube: Kube, namespace: str, name: str) -> None:
    """B10: exactly one revert, recorded once, with the history whole and in order."""
    status = kube.status(namespace, name)
    automatic = [h for h in status["history"] if h["trigger"] == "Automatic"]
    assert len(automatic) == 1, status["history"]
    assert len(status["reverts"]) == 1
    failed = [h for h in status["history"] if h["outcome"] == "Failed"]
    assert [(h["version"], h["trigger"]) for h in failed] == [("v2", "Manual")]
    revisions = [h["revision"] for h in status["history"]]
    assert revisions == list(range(len(revisions), 0, -1))
    assert kube.delivered(namespace, name, "RolledBack") == 1
    assert kube.delivered(namespace, name, "RolloutFailed") == 1


@pytest.fixture
def pair(
    namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[list[OperatorProcess]]:
    """Two operator processes for the test's namespace, not yet started."""
    operators = [namespaced_operator(namespace, tmp_path / f"operator-{n}.log") for n in "ab"]
    request.node.operator_log = lambda: "\n".join(
        f"[{n}] {line}"
        for n, op in zip("ab", operators, strict=True)
        for line in op.log().splitlines()
    )
    yield operators
    for operator in operators:
        if operator.process is not None:
            operator.process.send_signal(signal.SIGCONT)  # a frozen one cannot stop
            operator.stop()


def start_failing_rollout(kube: Kube, namespace: str, name: str) -> None:
    """v1 serves; v2 (crash-looping) is selected and the leader has rolled it out."""
    kube.create(namespace, model_deployment(name, {"v1": GOOD, "v2": CRASHING}, "v1"))
    kube.wait_good(namespace, name, "v1")
    kube.select(namespace, name, "v2")
    wait_for(lambda: rendered(kube, namespace, name, "v2"), 30, "the leader to roll v2 out")


def test_killed_leader_mid_rollout_hands_over_with_exactly_one_revert(
    kube: Kube, namespace: str, pair: list[OperatorProcess], record_property: Any
) -> None:
    for operator in pair:
        operator.start(*elect(namespace, *FAST))
    first = wait_for(lambda: holder(kube, namespace), 30, "a leader")
    leader, follower = leader_and_follower(pair, first)
    start_failing_rollout(kube, namespace, "handover")
    killed_at = datetime.now(UTC)
    leader.stop(kill=True)
    second = wait_for(lambda: new_holder(kube, namespace, first), 60, "the follower to take over")
    wait_for(lambda: identity(follower) == second, 10, "the follower to log that it leads")
    record_property(
        "figure: takeover after SIGKILL, lease 4s/3s/1s (s)",
        takeover_seconds(kube, namespace, killed_at),
    )
    wait_for(lambda: reverted_to(kube, namespace, "handover", "v1"), 60, "the revert")
    assert_one_revert(kube, namespace, "handover")


def test_terminated_leader_releases_the_lease_and_the_follower_leads_at_once(
    kube: Kube, namespace: str, pair: list[OperatorProcess], record_property: Any
) -> None:
    for operator in pair:
        operator.start(*elect(namespace, *FAST))
    first = wait_for(lambda: holder(kube, namespace), 30, "a leader")
    leader, follower = leader_and_follower(pair, first)
    terminated_at = datetime.now(UTC)
    leader.stop()  # SIGTERM
    assert "released the lease" in leader.log()
    second = wait_for(lambda: new_holder(kube, namespace, first), 30, "the follower to take over")
    wait_for(lambda: identity(follower) == second, 10, "the follower to log that it leads")
    record_property(
        "figure: takeover after SIGTERM, lease 4s/3s/1s (s)",
        takeover_seconds(kube, namespace, terminated_at),
    )
    assert lease(kube, namespace)["leaseTransitions"] == 1
    revert_scenario(kube, namespace, "after-handover")  # the new leader does the work
    assert_one_revert(kube, namespace, "after-handover")


def test_frozen_leader_writes_nothing_once_it_thaws(
    kube: Kube, namespace: str, pair: list[OperatorProcess]
) -> None:
    for operator in pair:
        operator.start(*elect(namespace, *FAST))
    first = wait_for(lambda: holder(kube, namespace), 30, "a leader")
    leader, _ = leader_and_follower(pair, first)
    assert leader.process is not None
    name = "frozen"
    start_failing_rollout(kube, namespace, name)
    leader.process.send_signal(signal.SIGSTOP)  # frozen mid-rollout, past its lease
    wait_for(lambda: new_holder(kube, namespace, first), 60, "the follower to take over")
    wait_for(lambda: reverted_to(kube, namespace, name, "v1"), 60, "the revert by the new leader")

    settled = wait_for(lambda: settled_state(kube, namespace, name), 60, "the new leader to settle")
    old = identity(leader)
    events_before = {e.metadata.name for e in kube.core.list_namespaced_event(namespace).items}
    indexed = leader.log().count("Handler 'on_resource' succeeded")
    leader.process.send_signal(signal.SIGCONT)
    wait_for(lambda: "lost the lease; following" in leader.log(), 30, "the old leader to follow")
    wait_for(
        lambda: leader.log().count("Handler 'on_resource' succeeded") > indexed,
        30,
        "the old leader to see what happened while it was frozen",
    )
    # Not one write landed (a request it had in flight when frozen landed long before).
    assert settled_state(kube, namespace, name) == settled
    events = kube.core.list_namespaced_event(namespace).items
    assert [
        e.reason
        for e in events
        if e.reporting_instance == old and e.metadata.name not in events_before
    ] == []
    assert holder(kube, namespace) != old
    assert_one_revert(kube, namespace, name)


def settled_state(kube: Kube, namespace: str, name: str) -> tuple[str, ...] | None:
    """Resource versions once v1 fully serves again, no v2 pod is left and nothing is owed
    (docs/status.md, outbox); None before."""
    body = kube.get(namespace, name)
    deployment = kube.apps.read_namespaced_deployment(name, namespace)
    status = deployment.status
    pods = kube.core.list_namespaced_pod(namespace, label_selector="modeldeploy.io/version=v2")
    done = (
        reverted_to(kube, namespace, name, "v1")
        and deployment.metadata.generation == status.observed_generation
        and status.replicas == status.updated_replicas == status.available_replicas == 2
        and not pods.items
        and body.get("status", {}).get("replicas") == 2
        and body["status"].get("observedGeneration") == body["metadata"]["generation"]
        and not body["status"].get("outbox")  # every Event owed is posted and struck off
    )
    if not done:
        return None
    service = kube.core.read_namespaced_service(name, namespace)
    return (
        body["metadata"]["resourceVersion"],
        deployment.metadata.resource_version,
        service.metadata.resource_version,
    )


def test_default_durations_hand_over_after_sigterm_and_sigkill(
    kube: Kube, namespace: str, pair: list[OperatorProcess], record_property: Any
) -> None:
    for operator in pair:
        operator.start(*elect(namespace))
    first = wait_for(lambda: holder(kube, namespace), 30, "a leader")
    assert lease(kube, namespace)["leaseDurationSeconds"] == 15
    leader, follower = leader_and_follower(pair, first)
    terminated_at = datetime.now(UTC)
    leader.stop()
    second = wait_for(lambda: new_holder(kube, namespace, first), 30, "a takeover after SIGTERM")
    record_property(
        "figure: takeover after SIGTERM, default lease 15s/10s/2s (s)",
        takeover_seconds(kube, namespace, terminated_at),
    )
    leader.start()  # back, as the follower now
    wait_for(lambda: "Activity 'configure' succeeded" in leader.log(), 30, "the restart")
    killed_at = datetime.now(UTC)
    follower.stop(kill=True)
    third = wait_for(lambda: new_holder(kube, namespace, second), 60, "a takeover after SIGKILL")
    assert third != first  # the restarted process, under an identity of its own
    record_property(
        "figure: takeover after SIGKILL, default lease 15s/10s/2s (s)",
        takeover_seconds(kube, namespace, killed_at),
    )
    revert_scenario(kube, namespace, "defaults")
    assert_one_revert(kube, namespace, "defaults")
