"""Operating modeldeploy: metrics, webhooks and the kubectl plugin, on the real test bed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from modeldeploy.constants import ANNOTATION_RETRY, GROUP, PLURAL, VERSION
from modeldeploy.kube import KubeCluster
from modeldeploy.model.times import parse_time
from testbed.support import OperatorProcess, free_port
from tests.e2e.conftest import on_its_service_account
from tests.e2e.helpers import (
    Kube,
    PolicyDenyingMovesTo,
    Receiver,
    metric,
    model_deployment,
    plugin,
    revert_scenario,
    scrape,
    wait_for,
)

GOOD, BAD = "registry.example/m:1", "registry.example/m:2-crashloop"
GOOD_V2 = "registry.example/m:2"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    running.thread.start()
    yield running
    running.server.shutdown()
    running.server.server_close()


@pytest.fixture
def dead_receiver() -> Iterator[Receiver]:
    running = Receiver(hang=True)
    running.thread.start()
    yield running
    running.release.set()
    running.server.shutdown()
    running.server.server_close()


def durations_from_history(status: dict[str, Any]) -> tuple[float, float]:
    """(failed rollout's start to its failure, its start to the revert's success) in seconds,
    from status.history's millisecond times."""
    by_outcome = {h["outcome"]: h for h in status["history"] if h["revision"] >= 2}
    failed, revert = by_outcome["Failed"], by_outcome["Succeeded"]

    def since_start(end: str) -> float:
        start, finish = parse_time(failed["startedAt"]), parse_time(end)
        assert start and finish
        return (finish - start).total_seconds()

    return since_start(failed["finishedAt"]), since_start(revert["finishedAt"])


def test_metrics_count_the_failed_rollout_and_the_revert(
    kube: Kube, namespace: str, stopped_operator: OperatorProcess
) -> None:
    port = free_port()
    stopped_operator.start(f"--metrics-port={port}")
    revert_scenario(kube, namespace, "metered")
    text = wait_for(
        lambda: (
            (t := scrape(port))
            and 'modeldeploy_rollouts_total{outcome="Succeeded",trigger="Automatic"}' in t
            and t
        ),
        60,
        "the revert's metrics",
    )
    assert metric(text, 'modeldeploy_rollouts_total{outcome="Failed",trigger="Manual"}') == 1
    assert metric(text, 'modeldeploy_rollouts_total{outcome="Succeeded",trigger="Automatic"}') == 1
    assert (
        metric(text, 'modeldeploy_rollbacks_total{kind="automatic",reason="CrashLoopBackOff"}') == 1
    )
    assert metric(text, "modeldeploy_time_to_detect_seconds_count") == 1
    assert metric(text, "modeldeploy_time_to_recover_seconds_count") == 1
    # sub-second: the histograms agree with status.history to its millisecond, and a
    # detect time is not a whole number of seconds (odds of one by chance: 1 in 10^6)
    failed, revert = durations_from_history(kube.status(namespace, "metered"))
    detected = metric(text, "modeldeploy_time_to_detect_seconds_sum")
    assert detected != round(detected)
    assert detected == pytest.approx(failed, abs=2e-3)
    assert metric(text, "modeldeploy_time_to_recover_seconds_sum") == pytest.approx(
        revert, abs=2e-3
    )
    assert (
        metric(
            text,
            f'modeldeploy_resource_info{{last_good="v1",name="metered",'
            f'namespace="{namespace}",phase="Degraded",serving="v1"}}',  # reverted: Stalled
        )
        == 1
    )


def allowing(operator: OperatorProcess, receiver: Receiver) -> None:
    """Start the operator with the receiver on its egress allow-list (docs/security.md)."""
    operator.start(f"--allowed-webhook={receiver.url.rsplit('/', 1)[0]}/")


def test_webhook_receives_failed_revert_and_success(
    kube: Kube, namespace: str, stopped_operator: OperatorProcess, receiver: Receiver
) -> None:
    allowing(stopped_operator, receiver)
    revert_scenario(kube, namespace, "hooked", notifications={"webhook": {"url": receiver.url}})
    wait_for(
        lambda: (
            {"RolloutFailed", "RolledBack"} <= set(receiver.events())
            and receiver.events().count("RolloutSucceeded") >= 2
        ),
        60,
        "the notifications",
    )
    failed = next(p for p in receiver.payloads if p["event"] == "RolloutFailed")
    assert failed["name"] == "hooked"
    assert failed["namespace"] == namespace
    assert "v2" in failed["text"]
    assert "CrashLoopBackOff" in failed["text"]


def test_a_notice_is_delivered_once_its_receiver_is_back_even_after_a_restart(
    kube: Kube, namespace: str, stopped_operator: OperatorProcess, receiver: Receiver
) -> None:
    receiver.answer = 503  # down for the whole release, the revert and a restart
    allowing(stopped_operator, receiver)
    name = "patient"
    revert_scenario(kube, namespace, name, notifications={"webhook": {"url": receiver.url}})
    hook = wait_for(
        lambda: (
            (k := kube.condition(namespace, name, "WebhookReady")).get("reason")
            == "WebhookUndelivered"
            and k
        ),
        60,
        "WebhookReady=False, WebhookUndelivered",
    )
    assert "HTTP 503" in hook["message"] and "/hook" not in hook["message"]
    tried = receiver.requests
    wait_for(lambda: receiver.requests >= tried + 2, 60, "attempts again, backing off")
    owed = [n["reason"] for n in kube.status(namespace, name).get("outbox", [])]
    assert {"RolloutFailed", "RolledBack"} <= set(owed)
    stopped_operator.stop()
    stopped_operator.start(f"--allowed-webhook={receiver.url.rsplit('/', 1)[0]}/")
    receiver.answer = 204
    wait_for(
        lambda: {"RolloutFailed", "RolledBack"} <= set(receiver.events()),
        120,
        "the owed notifications, once the receiver answers",
    )
    wait_for(
        lambda: (
            not kube.status(namespace, name).get("outbox")
            and kube.condition(namespace, name, "WebhookReady").get("status") == "True"
        ),
        60,
        "the outbox empty and WebhookReady=True",
    )


def test_dead_webhook_does_not_delay_the_revert(
    kube: Kube, namespace: str, stopped_operator: OperatorProcess, dead_receiver: Receiver
) -> None:
    allowing(stopped_operator, dead_receiver)
    # The receiver never answers while the scenario runs; the revert must not wait for it.
    revert_scenario(kube, namespace, "deaf", notifications={"webhook": {"url": dead_receiver.url}})
    assert dead_receiver.payloads == []
    assert dead_receiver.requests > 0  # it was called, and held: the revert did not wait


def test_plugin_shows_status_history_versions_and_refuses_quarantined_rollback(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    revert_scenario(kube, namespace, "cli")
    status = plugin("-n", namespace, "status", "cli")
    assert status.returncode == 0, status.stderr
    assert "Serving:       v1" in status.stdout
    history = json.loads(plugin("-n", namespace, "-o", "json", "history", "cli").stdout)
    assert [(h["version"], h["outcome"]) for h in history[:2]] == [
        ("v1", "Succeeded"),
        ("v2", "Failed"),
    ]
    versions = {
        v["name"]: v
        for v in json.loads(plugin("-n", namespace, "-o", "json", "versions", "cli").stdout)
    }
    assert versions["v2"]["quarantined"] is True
    refused = plugin("-n", namespace, "rollback", "cli", "--to", "v2")
    assert refused.returncode == 1
    assert "kubectl modeldeploy retry cli v2" in refused.stderr
    missing = plugin("-n", namespace, "status", "nothing-here")
    assert missing.returncode == 2
    assert 'modeldeployment "nothing-here" not found' in missing.stderr


def test_plugin_rollback_goes_to_the_previous_good_version_and_wait_reports_ready(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    kube.create(
        namespace, model_deployment("back", {"v1": GOOD, "v2": "registry.example/m:2"}, "v1")
    )
    kube.wait_good(namespace, "back", "v1")
    kube.select(namespace, "back", "v2")
    waited = plugin("-n", namespace, "wait", "back", "--for=ready", "--timeout=60s")
    assert waited.returncode == 0, waited.stderr
    assert kube.status(namespace, "back")["lastGoodVersion"] == "v2"
    rolled = plugin("-n", namespace, "rollback", "back")
    assert rolled.returncode == 0, rolled.stderr
    assert "v2 -> v1" in rolled.stdout
    assert plugin("-n", namespace, "wait", "back", "--timeout=60s").returncode == 0
    latest = kube.status(namespace, "back")["history"][0]
    assert (latest["version"], latest["trigger"], latest["outcome"]) == (
        "v1",
        "Manual",
        "Succeeded",
    )


def test_plugin_writes_are_guarded_a_change_meanwhile_is_told_from_a_refusal(
    kube: Kube, namespace: str
) -> None:
    """No operator runs: the writes alone, against the real API server, which answers a
    failed JSON-patch `test` and an admission refusal both with a bare 422."""
    kube.create(namespace, model_deployment("guarded", {"v1": GOOD, "v2": GOOD_V2}, "v1"))
    cluster = KubeCluster()
    read = cluster.get(namespace, "guarded")
    kube.custom.patch_namespaced_custom_object(  # someone annotates meanwhile
        GROUP, VERSION, namespace, PLURAL, "guarded", {"metadata": {"annotations": {"team": "a"}}}
    )
    assert cluster.annotate(read, ANNOTATION_RETRY, "v1") is False  # moved on: not wiped
    assert kube.get(namespace, "guarded")["metadata"]["annotations"] == {"team": "a"}
    retried = plugin("-n", namespace, "retry", "guarded", "v1")
    assert retried.returncode == 0, retried.stderr
    annotations = kube.get(namespace, "guarded")["metadata"]["annotations"]
    assert annotations == {"team": "a", ANNOTATION_RETRY: "v1"}
    read = cluster.get(namespace, "guarded")
    kube.select(namespace, "guarded", "v2")  # the spec changes meanwhile
    assert cluster.select_version(read, "v2") is False
    with PolicyDenyingMovesTo(namespace, "v1"):
        denied = plugin("-n", namespace, "rollback", "guarded", "--to", "v1")
    assert denied.returncode == 1
    assert "refused" in denied.stderr and "frozen in this namespace" in denied.stderr
    assert "changed meanwhile" not in denied.stderr
    assert kube.get(namespace, "guarded")["spec"]["activeVersion"] == "v2"


def test_plugin_wait_fails_fast_when_the_first_version_fails(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    kube.create(namespace, model_deployment("doomed", {"v1": BAD}, "v1"))
    waited = plugin("-n", namespace, "wait", "doomed", "--timeout=90s")
    assert waited.returncode == 1
    assert "FirstVersionFailed" in waited.stderr


def test_operator_runs_on_its_service_account_rbac_alone(
    kube: Kube, namespace: str, stopped_operator: OperatorProcess, tmp_path: Path
) -> None:
    on_its_service_account(kube, stopped_operator, tmp_path)
    lease = f"modeldeploy-operator-{namespace}"  # its own Lease, as the installed replicas use
    stopped_operator.start(
        "--leader-elect",
        "--leader-elect-namespace=modeldeploy-system",
        f"--leader-elect-lease-name={lease}",
    )
    try:
        revert_scenario(kube, namespace, "least-privilege")
        log = stopped_operator.log()
        assert "leads" in log
        assert "Forbidden" not in log
        assert " 403 " not in log
    finally:
        stopped_operator.stop()
        kubernetes.client.CoordinationV1Api(kube.api).delete_namespaced_lease(
            lease, "modeldeploy-system"
        )


def test_plugin_wait_fails_for_a_release_that_was_reverted(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    kube.create(namespace, model_deployment("reverted", {"v1": GOOD, "v2": BAD}, "v1"))
    kube.wait_good(namespace, "reverted", "v1")
    kube.select(namespace, "reverted", "v2")  # what a pipeline does, then it waits
    waited = plugin("-n", namespace, "wait", "reverted", "--timeout=90s")
    assert waited.returncode == 1, waited.stdout
    assert "the release of v2 failed" in waited.stderr
    assert "CrashLoopBackOff" in waited.stderr
    # Called again once v1 serves, it still judges the release the spec stands for.
    wait_for(lambda: kube.status(namespace, "reverted").get("servingVersion") == "v1", 60, "v1")
    again = plugin("-n", namespace, "wait", "reverted", "--timeout=30s")
    assert again.returncode == 1
    assert "reverted to v1" in again.stderr


def test_plugin_retry_refused_by_rbac_is_one_sentence_with_its_own_exit_code(
    kube: Kube, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    kube.create(namespace, model_deployment("locked", {"v1": GOOD}, "v1"))
    kube.core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    kube.rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "read-models"},
            "rules": [
                {
                    "apiGroups": ["modeldeploy.io"],
                    "resources": ["modeldeployments"],
                    "verbs": ["get", "list"],
                }
            ],
        },
    )
    kube.rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "read-models",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )
    token = kube.core.create_namespaced_service_account_token(
        "reader", namespace, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    admin = yaml.safe_load(Path(os.environ["KUBECONFIG"]).read_text())
    admin["users"] = [{"name": "reader", "user": {"token": token}}]
    admin["contexts"][0]["context"]["user"] = "reader"
    config = tmp_path / "reader.kubeconfig"
    config.write_text(yaml.safe_dump(admin))
    result = subprocess.run(
        [sys.executable, "-m", "modeldeploy.cli", "-n", namespace, "retry", "locked", "v1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "KUBECONFIG": str(config)},
    )
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith("Error: the API server refused it (HTTP 403)")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
