"""Room for new pods on a full GPU pool (B23), on the real scheduler of the test bed.

Each test makes its own pool: kwok nodes with one `nvidia.com/gpu` each, tainted and
labelled for the test's namespace so only its pods land there, and a model asking one
GPU a pod with as many replicas as the pool has GPUs: a full pool.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from modeldeploy import constants as c
from testbed.manifests import GPU, gpu_node, pool_placement
from testbed.support import OperatorProcess
from tests.e2e.helpers import (
    Kube,
    ReadyPodSampler,
    model_deployment,
    plugin,
    reverted_to,
    wait_for,
)

pytestmark = pytest.mark.capacity

GOOD, GOOD_V2 = "registry.example/fraud:1.0", "registry.example/fraud:2.0"
CRASH = "registry.example/fraud:2-crashloop"
POOL = 2  # GPUs, one per node


class Pool:
    """kwok nodes with one GPU each, only for `namespace`'s pods."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube, self.namespace = kube, namespace
        self.nodes: list[str] = []

    def add(self) -> str:
        name = f"gpu-{self.namespace}-{len(self.nodes)}"
        self.kube.core.create_node(gpu_node(name, self.namespace))
        self.nodes.append(name)
        wait_for(lambda: self._ready(name), 60, f"node {name} Ready")
        return name

    def _ready(self, name: str) -> bool:
        node = self.kube.core.read_node(name)
        return any(k.type == "Ready" and k.status == "True" for k in node.status.conditions or ())

    def remove(self) -> None:
        for name in self.nodes:
            try:
                self.kube.core.delete_node(name)
            except ApiException as error:
                if error.status != 404:
                    raise

    def model(self, name: str, versions: dict[str, str], gpus: int = 1, **rollout: Any) -> Any:
        body = model_deployment(
            name,
            versions,
            "v1",
            POOL,
            resources={v: {"limits": {GPU: gpus if v != "v1" else 1}} for v in versions},
            **rollout,
        )
        body["spec"]["template"] = pool_placement(self.namespace)
        return body


@pytest.fixture
def pool(kube: Kube, namespace: str) -> Iterator[Pool]:
    made = Pool(kube, namespace)
    try:
        for _ in range(POOL):
            made.add()
        yield made
    finally:
        made.remove()


def serving_v1(kube: Kube, namespace: str, pool: Pool, name: str, **kw: Any) -> None:
    kube.create(namespace, pool.model(name, **kw))
    kube.wait_good(namespace, name, "v1")


def rollout(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return dict(kube.status(namespace, name).get("rollout") or {})


def test_surge_on_a_full_pool_waits_for_room_and_never_fails_the_version(
    kube: Kube, namespace: str, operator: OperatorProcess, pool: Pool
) -> None:
    name = "surge"
    serving_v1(kube, namespace, pool, name, versions={"v1": GOOD, "v2": GOOD_V2})
    with ReadyPodSampler(kube, namespace, name, POOL) as sampler:
        kube.select(namespace, name, "v2", unschedulableGraceSeconds=2)
        wait_for(
            lambda: (
                kube.condition(namespace, name, "Reconciling").get("reason")
                == c.REASON_INSUFFICIENT_CAPACITY
            ),
            60,
            "the wait for room to be stated",
        )
        # Many times the unschedulable grace later, v2 is still waiting, never judged.
        waited = kube.condition(namespace, name, "Reconciling")
        assert "Insufficient nvidia.com/gpu" in waited["message"]
        kube_wait = wait_for(
            lambda: (r := rollout(kube, namespace, name)).get("capacityWait") and r,
            30,
            "status.rollout.capacityWait",
        )
        assert kube_wait["strategy"] == "Surge"
        shown = plugin("-n", namespace, "status", name)
        assert "Waiting:       for room (not a failure): pod " in shown.stdout, shown.stderr
        assert "[Surge]" in shown.stdout
        for _ in range(10):  # 10 s, five times the grace: polled, never a verdict
            assert kube.ledger(namespace, name)["v2"]["state"] != "Failed"
            assert kube.get(namespace, name)["spec"]["activeVersion"] == "v2"
            time.sleep(1)
        pool.add()  # a GPU frees up (a node joins): the rollout goes on by itself
        kube.wait_good(namespace, name, "v2")
        assert sampler.minimum is not None and sampler.minimum >= POOL


def test_auto_on_a_full_pool_goes_on_as_replace_and_completes(
    kube: Kube, namespace: str, operator: OperatorProcess, pool: Pool
) -> None:
    name = "auto"
    serving_v1(kube, namespace, pool, name, versions={"v1": GOOD, "v2": GOOD_V2}, strategy="Auto")
    with ReadyPodSampler(kube, namespace, name, POOL) as sampler:
        kube.select(namespace, name, "v2")
        kube.wait_good(namespace, name, "v2")
    kube.delivered(namespace, name, c.EVENT_STRATEGY_SWITCHED)
    switched = [
        message
        for _, reason, message in kube.events(namespace, name)
        if reason == c.EVENT_STRATEGY_SWITCHED
    ]
    assert len(switched) == 1, switched  # once, and only for the release (v1 replaced nothing)
    assert "no room for a new pod of v2" in switched[0]
    assert rollout(kube, namespace, name)["strategy"] == "Replace"
    # Replace's stated cost: at most maxUnavailable (1) of the 2 down at any moment.
    assert sampler.minimum is not None and sampler.minimum >= POOL - 1


def test_replace_with_a_crash_looping_version_reverts_losing_at_most_max_unavailable(
    kube: Kube, namespace: str, operator: OperatorProcess, pool: Pool
) -> None:
    name = "replace"
    serving_v1(kube, namespace, pool, name, versions={"v1": GOOD, "v2": CRASH}, strategy="Replace")
    with ReadyPodSampler(kube, namespace, name, POOL) as sampler:
        kube.select(namespace, name, "v2")
        wait_for(
            lambda: kube.ledger(namespace, name).get("v2", {}).get("state") == "Failed",
            90,
            "v2 Failed",
        )
        wait_for(lambda: reverted_to(kube, namespace, name, "v1"), 120, "v1 back in full")
    assert kube.ledger(namespace, name)["v2"]["reason"] == "CrashLoopBackOff"
    assert sampler.minimum is not None and sampler.minimum >= POOL - 1


def test_a_version_larger_than_every_node_fails_without_waiting_out_the_grace(
    kube: Kube, namespace: str, operator: OperatorProcess, pool: Pool
) -> None:
    name = "huge"
    serving_v1(kube, namespace, pool, name, versions={"v1": GOOD, "v2": GOOD_V2}, gpus=8)
    # A grace of an hour: only "no node can ever hold it" can fail v2 within the wait.
    kube.select(namespace, name, "v2", unschedulableGraceSeconds=3600)
    wait_for(lambda: reverted_to(kube, namespace, name, "v1"), 90, "the revert to v1")
    failed = kube.ledger(namespace, name)["v2"]
    assert failed["reason"] == "Unschedulable"
    assert "asks for 8 nvidia.com/gpu and the largest node has 1" in failed["message"]
