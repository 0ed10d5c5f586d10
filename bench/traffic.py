"""Wrong answers after a verdict, on the real node (B19, B22; docs/validation-and-config.md).

The failing version is `wronganswers` (the reference model server with its weights
negated: Ready, 200, every prediction reversed), so every answer it gives through the
Service is a wrong one. Inference requests go through the Service's ClusterIP one after
another the whole time, each noted with the version that answered. Per scenario, per
sample: the wrong answers in all, those after the verdict (the ledger first showing the
version Failed, polled every 50 ms), and the time from the verdict to the last one.

- `gate`, `gate_slowload`: v2 caught by golden requests (its pods carry the readiness
  gate), v1 loading fast or in 20 s;
- `bake_standby`, `bake_stop`, `bake_keep`: v2 fails its bake's analysis after it took
  every old pod's place; with a warm standby, without one (failedTraffic Stop, the
  default: the Service leaves v2 out at the first Ready v1 pod), and with failedTraffic
  Keep (v2 answers until its pods are gone).

It needs the real node; like the standby section it starts it only when no other
kubelet runs, and stops what it started.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import testbed.cluster
from bench.cluster import JSON, Bed, log, serving
from bench.standby import Answers, real_node_unavailable
from bench.stats import summary
from testbed import realnode
from testbed.manifests import real_model
from testbed.metrics import Exporter, Prometheus
from testbed.support import Background, OperatorProcess, free_port, wait_for

REPLICAS = 2
GOOD_SCORE = 0.9995  # what the trained model scores the probe (the fraud case); v2: 0.0005
SCENARIOS = ("gate", "gate_slowload", "bake_standby", "bake_stop", "bake_keep")
ERRORS = 'max(model_error_ratio{namespace="{{namespace}}",model="{{name}}",version="{{version}}"})'


class Verdict(Background):
    """When the ledger first showed v2 Failed (time.time(), polled every 50 ms)."""

    def __init__(self, get: Callable[[], JSON]) -> None:
        super().__init__()
        self.get = get
        self.at: float | None = None

    def _run(self) -> None:
        while not self._stopping.is_set() and self.at is None:
            try:
                ledger = {
                    v["name"]: v for v in (self.get().get("status") or {}).get("versions") or ()
                }
            except Exception:
                ledger = {}
            if ledger.get("v2", {}).get("state") == "Failed":
                self.at = time.time()
            self._stopping.wait(0.05)


def body(name: str, scenario: str, prometheus: str) -> JSON:
    previous = "slowload" if scenario == "gate_slowload" else "good"
    rollout: dict[str, Any] = {"readyTimeoutSeconds": 120}
    if scenario == "bake_standby":
        rollout["standby"] = {"seconds": 3600}
    if scenario == "bake_keep":
        rollout["failedTraffic"] = "Keep"
    model = real_model(name, {"v1": previous, "v2": "wronganswers"}, "v1", REPLICAS, **rollout)
    if scenario.startswith("gate"):
        model["spec"]["validation"] = {
            "requests": [
                {
                    "name": "known-fraud",
                    "body": {
                        "inputs": [
                            {
                                "name": "features",
                                "datatype": "FP64",
                                "shape": [1, 3],
                                "data": [3, 1, 2.5],
                            }
                        ]
                    },
                    "timeoutSeconds": 2,
                    "expect": {
                        "values": [
                            {"path": "outputs[0].data[0]", "number": GOOD_SCORE, "tolerance": 0.01}
                        ]
                    },
                }
            ]
        }
    else:
        model["spec"]["analysis"] = {
            "prometheus": prometheus,
            "bakeSeconds": 60,
            "intervalSeconds": 1,
            "checks": [{"name": "error-rate", "query": ERRORS, "max": 0.05}],
        }
    return model


def back_on_v1(model: JSON) -> bool:
    history = (model.get("status") or {}).get("history") or [{}]
    return bool(
        model["spec"]["activeVersion"] == "v1"
        and serving(model, "v1")
        and (history[0].get("version"), history[0].get("outcome")) == ("v1", "Succeeded")
    )


def one_sample(bed: Bed, name: str, scenario: str, prometheus: str) -> dict[str, Any]:
    bed.create_model(body(name, scenario, prometheus))
    wait_for(lambda: serving(bed.get_model(name), "v1"), 240, f"{name}: v1 serving")
    service = bed.core.read_namespaced_service(name, bed.namespace)
    url = f"http://{service.spec.cluster_ip}:{service.spec.ports[0].port}/v2/models/{name}/infer"
    with Answers(url) as load, Verdict(lambda: bed.get_model(name)) as verdict:
        wait_for(lambda: load.since(0), 30, "the first answer")
        bed.select(name, "v2")
        wait_for(lambda: verdict.at is not None, 240, f"{name}: v2 failed")
        wait_for(lambda: back_on_v1(bed.get_model(name)), 240, f"{name}: back on v1")
        settled = time.time() + 2
        wait_for(lambda: time.time() > settled, 5, "two more seconds of answers")
        answers = load.since(0)
    bed.delete_model(name)
    assert verdict.at is not None
    wrong = [at for at, status, version in answers if status == 200 and version == "v2"]
    after = [at for at in wrong if at > verdict.at]
    return {
        "wrong_answers": len(wrong),
        "wrong_after_verdict": len(after),
        "verdict_to_last_wrong_ms": round((max(after) - verdict.at) * 1000) if after else 0,
        "failed_requests": sum(1 for _, status, _ in answers if status != 200),
        "requests": len(answers),
    }


def traffic(samples: int, log_dir: Path) -> dict[str, Any]:
    """`samples` of each scenario, summarized per scenario."""
    reason = real_node_unavailable()
    if reason is not None:
        log(f"traffic: skipped ({reason})")
        return {"skipped": reason}
    started_node = not realnode.is_up()
    if started_node:
        realnode.up(testbed.cluster.ensure_binaries())
    exporter = Exporter()
    prometheus = Prometheus(log_dir / "prometheus-traffic", exporter.address, free_port())
    prometheus.start()
    bed = Bed("traffic")
    bed.create_namespace()
    operator = OperatorProcess(
        log_dir / "operator-traffic.log",
        "--namespace",
        bed.namespace,
        f"--allowed-analysis-source={prometheus.url}/",
    )
    found: dict[str, list[dict[str, Any]]] = {scenario: [] for scenario in SCENARIOS}
    lock = threading.Lock()
    try:
        operator.start()
        for i in range(samples):
            for scenario in SCENARIOS:
                name = f"{scenario.replace('_', '-')}-{i}"
                exporter.serve(bed.namespace, name, "v1", errors=0.0, accuracy=1)
                exporter.serve(bed.namespace, name, "v2", errors=0.5, accuracy=0.1)
                sample = one_sample(bed, name, scenario, prometheus.url)
                log(f"traffic: {scenario} {sample}")
                with lock:
                    found[scenario].append(sample)
    finally:
        operator.stop()
        prometheus.stop()
        exporter.server.shutdown()
        bed.delete_namespace()
        if started_node:
            realnode.down()
    return {scenario: aggregate(samples_of) for scenario, samples_of in found.items()} | {
        "config": f"{REPLICAS} replicas on the real node, readiness probe every 1 s; v2 "
        "wronganswers; gate: one golden request; bake: analysis of a 60 s bake, interval 1 s; "
        "standby: seconds 3600; kube-proxy iptables mode, its default minSyncPeriod (1 s)"
    }


def aggregate(found: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "wrong_answers": [f["wrong_answers"] for f in found],
        "wrong_after_verdict": [f["wrong_after_verdict"] for f in found],
        "verdict_to_last_wrong_ms": summary([f["verdict_to_last_wrong_ms"] for f in found], 0),
        "failed_requests": [f["failed_requests"] for f in found],
        "requests": [f["requests"] for f in found],
    }
