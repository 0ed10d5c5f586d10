"""What a tenant can and cannot make the operator do (docs/security.md), on the test bed.

A tenant writes ModelDeployments; the operator runs with cluster-wide reach. These
tests try what a hostile or careless tenant would: point it at addresses it must not
reach, read another namespace's metrics, hold its threads with a slow receiver, and
run model pods under the "restricted" Pod Security Standard.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from testbed import support
from testbed.metrics import Exporter
from testbed.support import OperatorProcess, end_process, free_port
from tests.e2e.helpers import Kube, model_deployment, ready, release_and_await_revert, wait_for
from tests.e2e.serving import real_model, serve

ROOT = Path(__file__).resolve().parents[2]
GOOD, BAD = "registry.example/m:1", "registry.example/m:2-crashloop"


class Listener:
    """A TCP port on loopback that counts who connects (and answers nothing)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


class Hooks:
    """Webhook receivers on loopback: one that answers, one that trickles its answer."""

    def __init__(self, trickle_s: float = 0.0) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.open_requests = 0
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                hooks.open_requests += 1
                try:
                    body = self.rfile.read(int(self.headers["Content-Length"]))
                    hooks.payloads.append(json.loads(body))
                    self.send_response(200)
                    self.send_header("Content-Length", "100")
                    self.end_headers()
                    deadline = time.monotonic() + trickle_s
                    while time.monotonic() < deadline:  # one byte at a time, never done
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        time.sleep(0.2)
                except OSError:
                    pass  # the operator hung up at its deadline
                finally:
                    hooks.open_requests -= 1

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.prefix = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events_for(self, name: str) -> list[str]:
        return [p["event"] for p in self.payloads if p["name"] == name]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    running = Listener()
    yield running
    running.close()


# --------------------------------------------------- egress: only what is allowed


@pytest.mark.parametrize(
    "where",
    [
        pytest.param("http://127.0.0.1:{port}/", id="not-allowed"),
        pytest.param("http://127.0.0.1:{port}/#", id="fragment-drops-the-api-path"),
        pytest.param("http://prometheus.example@127.0.0.1:{port}/", id="user-information"),
    ],
)
def test_an_analysis_endpoint_the_admin_did_not_allow_is_never_contacted(
    kube: Kube, namespace: str, operator: OperatorProcess, listener: Listener, where: str
) -> None:
    name = "ssrf"
    body = model_deployment(name, {"v1": GOOD}, "v1")
    body["spec"]["analysis"] = {
        "prometheus": where.format(port=listener.port),
        "intervalSeconds": 1,
        "checks": [{"name": "peek", "query": "up", "min": 1}],
    }
    kube.create(namespace, body)
    stalled = wait_for(
        lambda: (
            (k := kube.condition(namespace, name, "Stalled")).get("reason") == "InvalidSpec"
            and kube.status(namespace, name).get("analysis")
            and k
        ),
        60,
        "Stalled=True, InvalidSpec, with the analysis begun",
    )
    assert stalled["message"].startswith("spec.analysis.prometheus:")
    # The first query would have gone out with the analysis' start; give the next ones
    # (one a second) a moment too: nothing may arrive, however long we look.
    time.sleep(3)
    assert listener.connections == 0
    assert "lastValue" not in json.dumps(kube.status(namespace, name).get("analysis", {}))


def test_a_webhook_the_admin_did_not_allow_gets_nothing(
    kube: Kube, namespace: str, operator: OperatorProcess, listener: Listener
) -> None:
    name = "leaky"
    body = model_deployment(name, {"v1": GOOD, "v2": BAD}, "v1")
    body["spec"]["notifications"] = {"webhook": {"url": f"http://127.0.0.1:{listener.port}/x"}}
    kube.create(namespace, body)
    wait_for(lambda: ready(kube, namespace, name), 60, "v1 Ready")
    release_and_await_revert(kube, namespace, name)
    hook = kube.condition(namespace, name, "WebhookReady")
    assert (hook["status"], hook["reason"]) == ("False", "WebhookRefused")
    assert "is not an allowed webhook target" in hook["message"]
    assert listener.connections == 0
    assert kube.delivered(namespace, name, "WebhookRefused") == 1


def analysis_from(kube: Kube, namespace: str, name: str, source: str) -> dict[str, Any]:
    """A resource whose analysis names `source`; its Stalled condition once InvalidSpec."""
    body = model_deployment(name, {"v1": GOOD}, "v1")
    body["spec"]["analysis"] = {
        "prometheus": source,
        "intervalSeconds": 1,
        "checks": [{"name": "peek", "query": "up", "min": 1}],
    }
    kube.create(namespace, body)
    stalled: dict[str, Any] = wait_for(
        lambda: (
            (k := kube.condition(namespace, name, "Stalled")).get("reason") == "InvalidSpec"
            and kube.status(namespace, name).get("analysis")
            and k
        ),
        60,
        "Stalled=True, InvalidSpec, with the analysis begun",
    )
    return stalled


def test_an_allowed_source_with_a_query_string_is_refused_and_never_contacted(
    kube: Kube, namespace: str, stopped_operator: OperatorProcess, listener: Listener
) -> None:
    # The tenancy proxy's own parameter smuggled in: prom-label-proxy would OR it with
    # the one the operator adds, and the tenant would read team-b's series.
    stopped_operator.start(
        f"--allowed-analysis-source=http://127.0.0.1:{listener.port}/",
        "--prometheus-namespace-param=namespace",
    )
    smuggled = f"http://127.0.0.1:{listener.port}/api/v1/query?namespace=team-b&query=up&x="
    stalled = analysis_from(kube, namespace, "smuggler", smuggled)
    assert "query string" in stalled["message"]
    time.sleep(3)  # the first query would have gone out with the analysis' start
    assert listener.connections == 0


def test_another_namespaces_prometheus_and_a_webhook_to_a_prometheus_are_refused(
    kube: Kube, namespace: str, stopped_operator: OperatorProcess, listener: Listener
) -> None:
    theirs = f"http://127.0.0.1:{listener.port}/"
    stopped_operator.start(f"--prometheus-for=team-b={theirs}", f"--prometheus={theirs}admin/")
    stalled = analysis_from(kube, namespace, "borrower", theirs)
    assert f"not an allowed analysis source for namespace {namespace}" in stalled["message"]
    body = model_deployment("quitter", {"v1": GOOD}, "v1")
    body["spec"]["notifications"] = {"webhook": {"url": f"{theirs}admin/-/quit"}}
    kube.create(namespace, body)
    wait_for(
        lambda: (
            kube.condition(namespace, "quitter", "WebhookReady").get("reason") == "WebhookRefused"
        ),
        60,
        "WebhookReady=False, WebhookRefused",
    )
    time.sleep(3)
    assert listener.connections == 0


def test_a_webhook_url_kept_in_a_secret_is_delivered_and_never_logged(
    kube: Kube, namespace: str, stopped_operator: OperatorProcess
) -> None:
    hooks = Hooks()
    try:
        stopped_operator.start(f"--allowed-webhook={hooks.prefix}")
        secret_url = f"{hooks.prefix}services/T0/B0/a-credential"
        kube.core.create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": "slack"},
                "data": {"url": base64.b64encode(secret_url.encode()).decode()},
            },
        )
        name = "slack-notified"
        body = model_deployment(name, {"v1": GOOD, "v2": BAD}, "v1")
        body["spec"]["notifications"] = {
            "webhook": {"urlFrom": {"secretKeyRef": {"name": "slack", "key": "url"}}}
        }
        kube.create(namespace, body)
        wait_for(lambda: ready(kube, namespace, name), 60, "v1 Ready")
        release_and_await_revert(kube, namespace, name)
        wait_for(
            lambda: {"RolloutFailed", "RolledBack"} <= set(hooks.events_for(name)),
            30,
            "both webhooks from the Secret's URL",
        )
        assert kube.condition(namespace, name, "WebhookReady")["status"] == "True"
        assert "a-credential" not in stopped_operator.log()
    finally:
        hooks.close()


# --------------------------------------- isolation: one slow receiver, one lane


def test_a_trickling_receiver_cannot_delay_another_tenants_notifications(
    kube: Kube, namespace: str, stopped_operator: OperatorProcess
) -> None:
    slow, fast = Hooks(trickle_s=600), Hooks()
    try:
        # A long deadline: a hostile receiver holds each request for two minutes, so
        # sharing workers with it would hold the victim's notification that long.
        stopped_operator.start(
            f"--allowed-webhook={slow.prefix}",
            f"--allowed-webhook={fast.prefix}",
            "--webhook-deadline=120",
        )
        hostile = [f"hostile-{i}" for i in range(4)]  # as many as there are workers
        for name, hooks in [*((n, slow) for n in hostile), ("victim", fast)]:
            body = model_deployment(name, {"v1": GOOD, "v2": BAD}, "v1", replicas=1)
            body["spec"]["notifications"] = {"webhook": {"url": f"{hooks.prefix}hook"}}
            kube.create(namespace, body)
        wait_for(
            lambda: all(ready(kube, namespace, n) for n in [*hostile, "victim"]), 90, "all Ready"
        )
        wait_for(lambda: slow.open_requests > 0, 60, "the slow receiver to hold a request")
        kube.select(namespace, "victim", "v2")
        wait_for(
            lambda: "RolloutFailed" in fast.events_for("victim"), 90, "the victim's notification"
        )
        assert slow.open_requests > 0  # while the hostile receiver still holds its worker
        assert "gave up" not in stopped_operator.log()
    finally:
        slow.close()
        fast.close()


# ------------------------------------------------- tenancy for metric analysis


@pytest.fixture
def label_proxy(prometheus: str) -> Iterator[str]:
    """prom-label-proxy (built from its Go module) in front of the test's Prometheus: every
    query is forced to the namespace the operator sends; a query naming another
    namespace is refused."""
    built = subprocess.run(
        [str(ROOT / "testbed" / "build-tool.sh"), "prom-label-proxy"],
        capture_output=True,
        text=True,
        check=True,
    )
    port = free_port()
    process = subprocess.Popen(
        [
            built.stdout.strip().splitlines()[-1],
            "--label=namespace",
            f"--upstream={prometheus}",
            f"--insecure-listen-address=127.0.0.1:{port}",
            "--error-on-replace",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        support.wait_for(
            lambda: _answers(f"{url}/api/v1/query?query=1&namespace=x"),
            30,
            "the proxy",
            tolerate=(OSError,),
        )
        yield url
    finally:
        end_process(process)


def _answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


def test_a_tenant_reads_only_its_own_namespaces_series(
    kube: Kube,
    namespace: str,
    stopped_operator: OperatorProcess,
    exporter: Exporter,
    label_proxy: str,
) -> None:
    stopped_operator.start(f"--prometheus={label_proxy}", "--prometheus-namespace-param=namespace")
    other = "someone-elses-namespace"
    exporter.serve(other, "secret-model", "v1", errors=0.0, accuracy=0.99)
    exporter.serve(namespace, "mine", "v1", errors=0.0, accuracy=0.97)
    body = model_deployment("mine", {"v1": GOOD}, "v1")
    body["spec"]["analysis"] = {
        "bakeSeconds": 3,
        "intervalSeconds": 1,
        "checks": [
            {"name": "own", "query": 'min(model_accuracy{model="{{name}}"})', "min": 0.9},
            {"name": "peek", "query": 'max(model_accuracy{model="secret-model"})', "min": 0.5},
            {"name": "ask", "query": f'max(model_accuracy{{namespace="{other}"}})', "min": 0.5},
        ],
    }
    kube.create(namespace, body)

    def measured() -> dict[str, Any] | None:
        analysis = kube.status(namespace, "mine").get("analysis", {})
        checks = {k["name"]: k for k in analysis.get("checks", [])}
        # Its own series reached through the proxy: the data is there (scraped), so what
        # the other checks see is what the proxy lets through, not a scrape not done yet.
        own = checks.get("own", {}).get("lastOutcome") == "Passed"
        peeked = checks.get("peek", {}).get("inconclusive", 0) >= 2
        return checks if own and peeked and checks["ask"].get("lastOutcome") else None

    checks = wait_for(measured, 60, "each check measured through the proxy")
    assert checks["own"]["lastValue"] == "0.97"
    assert checks["peek"]["lastOutcome"] == "Inconclusive"  # another namespace: nothing
    assert "no data" in checks["peek"]["message"]
    assert checks["ask"]["lastOutcome"] == "Invalid"  # naming it: refused by the proxy
    assert "Prometheus refused the query" in checks["ask"]["message"]


# -------------------------------------------------- restricted pods, for real


def test_a_namespace_enforcing_the_restricted_standard_runs_a_rollout_and_a_revert(
    kube: Kube, namespace: str, operator: OperatorProcess, real_node: str
) -> None:
    kube.core.patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    url = serve(kube, namespace, real_model("fraud", {"v1": "good", "v2": "corrupt"}, "v1"))
    release_and_await_revert(kube, namespace, "fraud", failed_within=120)
    assert kube.ledger(namespace, "fraud")["v2"]["reason"] == "CrashLoopBackOff"
    pods = kube.core.list_namespaced_pod(namespace, label_selector="modeldeploy.io/name=fraud")
    for pod in pods.items:
        assert pod.spec.security_context.run_as_non_root is True
        assert pod.spec.automount_service_account_token is False
        assert pod.spec.containers[0].security_context.allow_privilege_escalation is False
    assert url
