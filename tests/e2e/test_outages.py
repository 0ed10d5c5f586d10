"""The operator through outages on the real test bed: the API server killed and restarted,
watches that come back to 410 Gone, and a connection that hangs.

The API server outages restart the test bed's kube-apiserver with its own arguments
and then wait until its controllers work again. Operators that must be cut off on
their own reach the API server through a loopback proxy (tests/e2e/proxy.py).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from testbed import processes as bed
from testbed.support import OperatorProcess, free_port
from tests.e2e.conftest import namespaced_operator
from tests.e2e.helpers import Kube, model_deployment, ready, rendered, reverted_to, wait_for
from tests.e2e.outage import (
    answering,
    compact_etcd,
    kill_api_server,
    start_api_server,
    wait_recovered,
)
from tests.e2e.proxy import Proxy

GOOD, NOT_READY = "registry.example/m:1", "registry.example/m:2-notready"
OUTAGE_S = 5


def resource_path(namespace: str, name: str) -> str:
    return f"/apis/modeldeploy.io/v1alpha1/namespaces/{namespace}/modeldeployments/{name}"


def active_version(namespace: str, name: str) -> str | None:
    """spec.activeVersion over a fresh connection; None while the API server is away."""
    try:
        body = bed.api("GET", resource_path(namespace, name))
    except (OSError, ValueError):
        return None
    assert isinstance(body, dict)
    return str(body["spec"]["activeVersion"])


def v2_pod_created(kube: Kube, namespace: str) -> datetime | None:
    pods = kube.core.list_namespaced_pod(namespace, label_selector="modeldeploy.io/version=v2")
    return min((p.metadata.creation_timestamp for p in pods.items), default=None)


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    server = json.loads((bed.STATE / "endpoint.json").read_text())["server"]
    with Proxy(("127.0.0.1", int(server.rsplit(":", 1)[1]))) as running:
        yield running


def through(operator: OperatorProcess, proxy: Proxy, tmp_path: Path) -> None:
    """The operator reaches the API server only through `proxy`."""
    kubeconfig = proxy.kubeconfig(bed.KUBECONFIG, tmp_path / "proxied.kubeconfig")
    operator.env["KUBECONFIG"] = str(kubeconfig)


def test_revert_due_during_an_api_server_outage_lands_once_it_answers(
    kube: Kube, namespace: str, stopped_operator: OperatorProcess, record_property: Any
) -> None:
    name = "outage"
    stopped_operator.start("--leader-elect", f"--leader-elect-namespace={namespace}")
    kube.create(
        namespace,
        model_deployment(name, {"v1": GOOD, "v2": NOT_READY}, "v1"),
    )
    kube.wait_good(namespace, name, "v1")
    kube.select(namespace, name, "v2", readyTimeoutSeconds=5)
    created = wait_for(lambda: v2_pod_created(kube, namespace), 30, "a v2 pod")
    # The pod will not be Ready within 5 s: the revert falls due while the API server is away.
    argv = kill_api_server(bed)
    outage_began = datetime.now(UTC)
    try:
        time.sleep(OUTAGE_S)
        start_api_server(bed, argv)
        wait_for(lambda: answering(bed, resource_path(namespace, name)), 120, "the API server")
        answered = datetime.now(UTC)
        wait_for(lambda: active_version(namespace, name) == "v1", 120, "the revert", 0.05)
        reverted = datetime.now(UTC)
        due = max(answered, created + timedelta(seconds=5))
        record_property(
            "figure: revert after the API server answered again (s)",
            round((reverted - due).total_seconds(), 2),
        )
        # What the operator writes; v1 serving again is up to the test bed's controllers,
        # which take their time after an API server restart (wait_recovered).
        wait_for(lambda: rendered(kube, namespace, name, "v1"), 60, "the v1 Deployment")
        status = kube.status(namespace, name)
        failed = kube.ledger(namespace, name)["v2"]
        assert (failed["state"], failed["reason"]) == ("Failed", "ReadyTimeout")
        assert len(status["reverts"]) == 1
        # Recorded after the outage began: this test saw a revert wait out the outage.
        assert datetime.fromisoformat(failed["failedAt"]) >= outage_began - timedelta(seconds=1)
    finally:
        if bed.running_pid("kube-apiserver") is None:
            start_api_server(bed, argv)
        wait_recovered(kube)


def test_resource_deleted_and_recreated_while_unwatched_is_served(
    kube: Kube, namespace: str, stopped_operator: OperatorProcess, proxy: Proxy, tmp_path: Path
) -> None:
    """kopf's indexes forget an object only on its DELETED event. A watch that comes back to
    410 Gone lists again and never hears of what was deleted meanwhile: the operator must
    forget it itself. (Compacting etcd alone gives no 410: the API server's watch cache
    replays the deletion. A restarted API server has no cache, and etcd no history.)"""
    name = "reborn"
    through(stopped_operator, proxy, tmp_path)
    stopped_operator.start()
    kube.create(namespace, model_deployment(name, {"v1": GOOD}, "v1"))
    wait_for(lambda: ready(kube, namespace, name), 60, "the first one to be Ready")
    proxy.down()  # the operator's watches break; nothing reaches it from here on
    kube.custom.delete_namespaced_custom_object(
        "modeldeploy.io", "v1alpha1", namespace, "modeldeployments", name
    )
    wait_for(lambda: kube.deployment_or_none(namespace, name) is None, 60, "garbage collection")
    uid = kube.create(namespace, model_deployment(name, {"v1": GOOD}, "v1"))["metadata"]["uid"]
    compact_etcd(bed)
    argv = kill_api_server(bed)
    try:
        start_api_server(bed, argv)
        wait_for(lambda: answering(bed, resource_path(namespace, name)), 120, "the API server")
        proxy.forward()

        def served() -> bool:
            """Reconciled: its status written and a Deployment of its own applied. (Ready is
            up to the test bed's controllers, slow to resume after an API server restart.)"""
            body = kube.get(namespace, name)
            deployment = kube.deployment_or_none(namespace, name)
            return bool(
                body.get("status", {}).get("observedGeneration") == body["metadata"]["generation"]
                and deployment
                and deployment.metadata.owner_references[0].uid == uid
            )

        wait_for(served, 120, "the new one to be reconciled, with a Deployment of its own")
        assert kube.condition(namespace, name, "Ready").get("reason") != "NameConflict"
        log = stopped_operator.log()
        assert "Restarting the watch-stream" in log  # kopf's 410 Gone path was taken
        assert f"forgot resources {namespace}/{name}: gone while unwatched" in log
        assert f"forgot deployments {namespace}/{name}: gone while unwatched" in log
    finally:
        if bed.running_pid("kube-apiserver") is None:
            start_api_server(bed, argv)
        wait_recovered(kube)


def test_leader_on_a_hung_connection_is_fenced_and_the_follower_reverts(
    kube: Kube, namespace: str, proxy: Proxy, tmp_path: Path, record_property: Any
) -> None:
    fast = (
        "--leader-elect",
        f"--leader-elect-namespace={namespace}",
        "--leader-elect-lease-duration=4s",
        "--leader-elect-renew-deadline=3s",
        "--leader-elect-retry-period=1s",
    )
    leader = namespaced_operator(namespace, tmp_path / "leader.log")
    follower = namespaced_operator(namespace, tmp_path / "follower.log")
    through(leader, proxy, tmp_path)
    try:
        leader.start(*fast)
        wait_for(lambda: "leads" in leader.log(), 30, "the proxied operator to lead")
        follower.start(*fast)
        name = "hung"
        kube.create(
            namespace,
            model_deployment(name, {"v1": GOOD, "v2": NOT_READY}, "v1"),
        )
        kube.wait_good(namespace, name, "v1")
        proxy.stall()  # every byte to and from the leader vanishes; nothing fails, all hangs
        stalled = time.monotonic()
        kube.select(namespace, name, "v2", readyTimeoutSeconds=3)
        wait_for(lambda: "leads" in follower.log(), 60, "the follower to take over")
        record_property(
            "figure: takeover from a leader on a hung connection, lease 4s/3s/1s (s)",
            round(time.monotonic() - stalled, 2),
        )
        # Its Lease calls time out instead of hanging: it knows it lost, not just the fence.
        wait_for(lambda: "lost the lease; following" in leader.log(), 30, "the leader to follow")
        wait_for(lambda: reverted_to(kube, namespace, name, "v1"), 90, "the follower's revert")
        assert len(kube.status(namespace, name)["reverts"]) == 1
    finally:
        proxy.down()
        for operator in (leader, follower):
            operator.stop()


def healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_liveness_fails_while_a_reconcile_hangs_on_a_stalled_connection(
    kube: Kube, namespace: str, stopped_operator: OperatorProcess, proxy: Proxy, tmp_path: Path
) -> None:
    port = free_port()
    through(stopped_operator, proxy, tmp_path)
    stopped_operator.start(f"--liveness=http://127.0.0.1:{port}/healthz", "--stall-timeout=3s")
    name = "stuck"
    kube.create(
        namespace,
        model_deployment(name, {"v1": GOOD, "v2": NOT_READY}, "v1"),
    )
    kube.wait_good(namespace, name, "v1")
    assert healthz(port) == 200
    kube.select(namespace, name, "v2", readyTimeoutSeconds=3)
    wait_for(lambda: v2_pod_created(kube, namespace), 30, "a v2 pod")
    proxy.stall()  # the failure falls due; recording it hangs on the dead connection
    wait_for(lambda: healthz(port) == 500, 60, "the liveness endpoint to fail")
    assert "work is queued and no reconcile has finished" in stopped_operator.log()


def test_a_reconcile_on_a_dead_connection_is_retried_on_a_new_one(
    kube: Kube, namespace: str, stopped_operator: OperatorProcess, proxy: Proxy, tmp_path: Path
) -> None:
    through(stopped_operator, proxy, tmp_path)
    stopped_operator.start("--workers=1")
    name = "unstuck"
    kube.create(
        namespace,
        model_deployment(name, {"v1": GOOD, "v2": NOT_READY}, "v1"),
    )
    kube.wait_good(namespace, name, "v1")
    kube.select(namespace, name, "v2", readyTimeoutSeconds=3)
    wait_for(lambda: v2_pod_created(kube, namespace), 30, "a v2 pod")
    proxy.stall()  # the connections the operator holds die silently, for good
    proxy.forward()  # new ones work: a reconcile must give up on the dead one and retry
    wait_for(lambda: kube.get(namespace, name)["spec"]["activeVersion"] == "v1", 120, "the revert")
