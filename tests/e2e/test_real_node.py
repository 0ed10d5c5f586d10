"""The core rollout scenarios again on the real node: real processes, probes, crashes, OOM kills.

Pods run the reference model server (testbed/modelserver) under containerd
with an HTTP readiness probe, and inference goes through the Service's ClusterIP
(kube-proxy's rules). During each rollout a loop of inference requests counts what
fails: zero downtime is measured, not assumed. The times measured are reported in
the session's summary, not asserted.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
import pytest

import testbed.cluster
from modeldeploy.constants import GROUP, PLURAL, VERSION
from testbed import realnode
from testbed.modelserver.client import InferenceLoad, infer
from testbed.support import OperatorProcess
from tests.e2e.helpers import (
    Kube,
    ReadyPodSampler,
    release_and_await_revert,
    wait_for,
)
from tests.e2e.serving import REPLICAS, FirstSeen, image, real_model, serve

RecordProperty = Callable[[str, object], None]


def v2_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    if pod["metadata"]["labels"].get("modeldeploy.io/version") != "v2":
        return []
    return list(pod.get("status", {}).get("containerStatuses") or ())


def crashed(pod: dict[str, Any]) -> bool:
    """A container of a v2 pod ended: the first sign of trouble in the API."""
    return any(
        "terminated" in (c.get("state") or {}) or c.get("lastState") for c in v2_containers(pod)
    )


def backing_off(pod: dict[str, Any]) -> bool:
    """The kubelet put a v2 container in CrashLoopBackOff: the failure signal (B5)."""
    return any(
        (c.get("state") or {}).get("waiting", {}).get("reason") == "CrashLoopBackOff"
        for c in v2_containers(pod)
    )


def back_to_v1(body: dict[str, Any], seen: dict[str, bool]) -> bool:
    """spec.activeVersion is v1 again after the watch saw v2 selected."""
    seen["v2"] = seen.get("v2", False) or body["spec"]["activeVersion"] == "v2"
    return seen["v2"] and body["spec"]["activeVersion"] == "v1"


def fail_and_revert(
    kube: Kube, namespace: str, name: str, url: str, record_property: RecordProperty
) -> InferenceLoad:
    """Select v2 under load; wait for its failure and the revert; report the timings.

    The times are when this test's watches saw each change: the first ended container
    of a v2 pod, the kubelet's CrashLoopBackOff (after the restart it tries at once),
    and spec.activeVersion back on v1.
    """
    seen: dict[str, bool] = {}

    def list_pods(**kw: Any) -> Any:
        selector = f"modeldeploy.io/name={name}"
        return kube.core.list_namespaced_pod(namespace, label_selector=selector, **kw)

    with (
        ReadyPodSampler(kube, namespace, name, REPLICAS) as sampler,
        FirstSeen(list_pods, crashed) as crash,
        FirstSeen(list_pods, backing_off) as signal,
        FirstSeen(
            lambda **kw: kube.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, **kw
            ),
            lambda body: back_to_v1(body, seen),
        ) as revert,
        InferenceLoad(url) as load,
    ):
        wait_for(lambda: sampler.minimum is not None, 30, "the sampler to see the serving pods")
        wait_for(
            lambda: crash.events and signal.events and revert.events, 30, "the watches to start"
        )
        release_and_await_revert(kube, namespace, name, failed_within=120)
        # Keep the load on a moment after the revert: serving must stay whole.
        deadline = load.requests + 20
        wait_for(lambda: load.requests >= deadline, 30, "20 more requests after the revert")
    assert crash.at is not None, "no watch event showed a v2 container ending"
    assert signal.at is not None, "no watch event showed a v2 container in CrashLoopBackOff"
    assert revert.at is not None, "no watch event showed spec.activeVersion back on v1"
    record_property("figure: first crash to revert (ms)", round((revert.at - crash.at) * 1000))
    record_property(
        "figure: CrashLoopBackOff to revert (ms)", round((revert.at - signal.at) * 1000)
    )
    record_property("figure: failed requests", f"{len(load.failures)} of {load.requests}")
    assert sampler.minimum is not None and sampler.minimum >= REPLICAS
    return load


# ------------------------------------------------------------------------- tests


def test_healthy_version_serves_inference_through_the_service(
    kube: Kube, namespace: str, operator: OperatorProcess, real_node: str
) -> None:
    url = serve(kube, namespace, real_model("fraud", {"v1": "good"}, "v1"))
    status, answer = infer(url)
    assert status == 200
    assert (answer["model_name"], answer["model_version"]) == ("fraud", "v1")
    assert answer["outputs"][0]["data"][0] > 0.9  # the self-check's fraud case, scored
    pods = kube.core.list_namespaced_pod(namespace, label_selector="modeldeploy.io/name=fraud")
    assert len(pods.items) == REPLICAS
    for pod in pods.items:
        assert pod.spec.node_name == real_node
        (container,) = pod.status.container_statuses
        assert container.container_id.startswith("containerd://")  # a process, not kwok's
        assert container.image == image("good")
    node = kube.core.read_node(real_node)
    assert "kwok.x-k8s.io/node" not in (node.metadata.annotations or {})  # kwok keeps off it
    logs = kube.core.read_namespaced_pod_log(pods.items[0].metadata.name, namespace)
    assert "serving fraud v1 on :8080" in logs


@pytest.mark.parametrize(
    ("variant", "reason", "exit_status"),
    [
        pytest.param("corrupt", "CrashLoopBackOff", "exit 1 Error", id="corrupt-model"),
        pytest.param("memhog", "OOMKilled", "exit 137 OOMKilled", id="oom-killed"),
    ],
)
def test_crashing_version_is_reverted_with_its_reason_and_no_failed_request(
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    real_node: str,
    record_property: RecordProperty,
    variant: str,
    reason: str,
    exit_status: str,
) -> None:
    url = serve(kube, namespace, real_model("fraud", {"v1": "good", "v2": variant}, "v1"))
    load = fail_and_revert(kube, namespace, "fraud", url, record_property)
    failed = kube.ledger(namespace, "fraud")["v2"]
    assert failed["reason"] == reason
    assert "container model restarted" in failed["message"]
    assert exit_status in failed["message"]
    assert load.failures == []
    assert set(load.answered) == {"v1"}
    assert kube.condition(namespace, "fraud", "RolledBack")["status"] == "True"


def test_slow_loading_version_succeeds_within_its_ready_timeout(
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    real_node: str,
    record_property: RecordProperty,
) -> None:
    body = real_model("fraud", {"v1": "good", "v2": "slowload"}, "v1", readyTimeoutSeconds=90)
    url = serve(kube, namespace, body)
    with InferenceLoad(url) as load:
        wait_for(lambda: load.requests > 0, 60, "the first request")
        selected = time.monotonic()
        kube.select(namespace, "fraud", "v2")
        wait_for(
            lambda: kube.status(namespace, "fraud").get("lastGoodVersion") == "v2",
            150,
            "v2 to succeed after its slow model load",
        )
        record_property(
            "figure: slow load selected to serving (s)", round(time.monotonic() - selected, 1)
        )
        wait_for(lambda: load.answered.get("v2", 0) >= 20, 30, "v2 to answer through the Service")
    body = kube.get(namespace, "fraud")
    assert body["spec"]["activeVersion"] == "v2"
    assert body["status"]["history"][0]["outcome"] == "Succeeded"
    assert "RolledBack" not in kube.event_reasons(namespace, "fraud")
    record_property("figure: failed requests", f"{len(load.failures)} of {load.requests}")
    assert load.failures == []  # old pods drain while the Service moves to v2
    assert set(load.answered) == {"v1", "v2"}


def test_real_node_stops_leaving_nothing_behind_and_starts_again(
    kube: Kube, namespace: str, operator: OperatorProcess, real_node: str
) -> None:
    serve(kube, namespace, real_model("fraud", {"v1": "good"}, "v1"))  # pods to clean up
    assert any("KUBE-SERVICES" in realnode.iptables_save(tool) for tool in realnode.IPTABLES)
    pod_links = [name for name, bridge in links().items() if bridge == realnode.BRIDGE]
    assert len(pod_links) >= REPLICAS  # pods of earlier tests may still be draining
    assert kube.core.read_namespaced_endpoints("kubernetes", "default").subsets  # pods' API
    # The machine as the node found it: chains someone else left are theirs to remove.
    before = json.loads((realnode.DIR / "host.json").read_text())["chains"]
    assert realnode.down() == ["api-forward", "kube-proxy", "kubelet", "containerd"]
    try:
        assert not realnode.RUN.exists() and not realnode.DIR.exists()
        assert not any(folder.exists() for folder in realnode.cgroup_folders())
        mounts = Path("/proc/mounts").read_text()
        assert str(realnode.RUN) not in mounts and str(realnode.DIR) not in mounts
        assert set(links()).isdisjoint([realnode.BRIDGE, *pod_links])
        for tool in realnode.IPTABLES:
            assert realnode.kube_chains(realnode.iptables_save(tool)) <= set(before[tool])
        socket = str(realnode.SOCKET).encode()
        assert [p for p in Path("/proc").glob("[0-9]*/cmdline") if socket in read(p)] == []
        lookups: list[Callable[[], object]] = [
            lambda: kube.core.read_node(real_node),
            lambda: kube.core.read_namespaced_endpoints("kubernetes", "default"),
            lambda: kube.discovery.read_namespaced_endpoint_slice("kubernetes", "default"),
        ]
        for lookup in lookups:
            with pytest.raises(kubernetes.client.ApiException) as missing:
                lookup()
            assert missing.value.status == 404
    finally:
        testbed.cluster.up(real_node=True)
    assert realnode.is_up()


def links() -> dict[str, str | None]:
    """The machine's network links, each with the bridge it is attached to."""
    listed = subprocess.run(["ip", "-j", "link"], check=True, capture_output=True, text=True).stdout
    return {link["ifname"]: link.get("master") for link in json.loads(listed)}


def read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended while we looked
        return b""
