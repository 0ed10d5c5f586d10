"""Someone else's model server beside ours, on the real node (docs/runtimes/mlserver.md).

Per runtime (the reference model server, MLServer 1.7) and per failing release (a model
that crash-loops, one that answers wrong and is caught by golden requests): the time
from selecting v2 to v1 serving again in full after the revert, and the inference
requests that failed meanwhile (one after another through the Service's ClusterIP the
whole time). And the drain (MLServer's slowinfer image, 10 s an inference, one started
every 0.5 s so about 20 are in flight at any moment): a healthy rollout and a revert from
a crash-looping release, the requests cut (must be 0) and how long each took.

It needs the real node; like the traffic section it starts it only when no other
kubelet runs, and stops what it started.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import testbed.cluster
from bench.cluster import JSON, Bed, log, serving
from bench.standby import real_node_unavailable
from bench.stats import summary
from testbed import manifests, mlserver_image, realnode
from testbed.modelserver.client import InferenceLoad, LongRequests, infer
from testbed.support import OperatorProcess, wait_for

REPLICAS = 2
RUNTIMES = ("reference", "mlserver")
FAILURES = ("crashloop", "wronganswers")
START_S = 240  # MLServer imports for seconds before it listens, more on a loaded machine
ROW = {"name": "features", "datatype": "FP64", "shape": [1, 3], "data": [3, 1, 2.5]}
# One golden request per runtime, which the good model passes and wronganswers fails.
GOLDEN = {
    "reference": {
        "name": "known-fraud",
        "body": {"inputs": [ROW]},
        "expect": {"values": [{"path": "outputs[0].data[0]", "number": 0.9995, "tolerance": 0.01}]},
    },
    "mlserver": {
        "name": "known-fraud-class",
        "body": {"inputs": [ROW]},
        "expect": {"values": [{"path": "outputs[0].data[0]", "number": 1}]},
    },
}
BAD_VARIANT = {"crashloop": "corrupt", "wronganswers": "wronganswers"}


def model(runtime: str, name: str, variants: dict[str, str]) -> JSON:
    build = manifests.mlserver_model if runtime == "mlserver" else manifests.real_model
    return build(name, variants, "v1", REPLICAS, readyTimeoutSeconds=START_S)


def url_of(bed: Bed, name: str, answer_within: float = 3) -> str:
    """The Service's inference URL, once a request through it is answered: the status can
    say Ready before kube-proxy has programmed the Service's endpoints (up to its 1 s
    sync), and a request sent in between is refused at once, by no fault of a version."""
    service = bed.core.read_namespaced_service(name, bed.namespace)
    url = f"http://{service.spec.cluster_ip}:{service.spec.ports[0].port}/v2/models/{name}/infer"
    wait_for(lambda: infer(url, answer_within)[0] == 200, 30 + answer_within, f"{name}: routed")
    return url


def back_on_v1(body: JSON) -> bool:
    history = (body.get("status") or {}).get("history") or [{}]
    return bool(
        serving(body, "v1")
        and (history[0].get("version"), history[0].get("outcome")) == ("v1", "Succeeded")
    )


def timed(check: Callable[[], bool], within: float, what: str) -> float:
    began = time.monotonic()
    wait_for(check, within, what)
    return time.monotonic() - began


def one_failure(bed: Bed, runtime: str, failure: str, i: int) -> dict[str, Any]:
    name = f"{runtime}-{failure}-{i}"
    body = model(runtime, name, {"v1": "good", "v2": BAD_VARIANT[failure]})
    if failure == "wronganswers":
        body["spec"]["validation"] = {"requests": [GOLDEN[runtime]]}
    bed.create_model(body)
    wait_for(lambda: serving(bed.get_model(name), "v1"), START_S, f"{name}: v1 serving")
    with InferenceLoad(url_of(bed, name)) as load:
        wait_for(lambda: sum(load.answered.values()) > 0, 30, "the first answer")
        bed.select(name, "v2")
        reverted_s = timed(lambda: back_on_v1(bed.get_model(name)), 2 * START_S, "back on v1")
        more = load.requests + 20
        wait_for(lambda: load.requests >= more, 30, "20 more requests")
    bed.delete_model(name)
    return {
        "release_to_last_good_s": round(reverted_s, 2),
        "failed_requests": len(load.failures),
        "failures": load.failures[:5],  # when after its start each failed, and how
        "requests": load.requests,
        "v2_answers": load.answered.get("v2", 0),
    }


def one_drain(bed: Bed, i: int) -> dict[str, Any]:
    """A healthy rollout v1 -> v2 and then a revert from a crash-looping v3, with long
    inferences in flight the whole time."""
    name = f"drain-{i}"
    variants = {"v1": "slowinfer", "v2": "slowinfer", "v3": "corrupt"}
    bed.create_model(model("mlserver", name, variants))
    wait_for(lambda: serving(bed.get_model(name), "v1"), START_S, f"{name}: v1 serving")
    found: dict[str, Any] = {}
    steps: dict[str, tuple[str, Callable[[JSON], bool]]] = {
        "rollout": ("v2", lambda body: serving(body, "v2")),
        "revert": (
            "v3",
            lambda body: serving(body, "v2") and body["spec"]["activeVersion"] == "v2",
        ),
    }
    for step, (version, done) in steps.items():
        found.update(_drained(bed, name, step, version, done))
    bed.delete_model(name)
    return found


def _drained(
    bed: Bed, name: str, step: str, version: str, done: Callable[[JSON], bool]
) -> dict[str, Any]:
    """Select `version` with long inferences in flight; how long until `done`, and the
    requests cut on the way."""
    with LongRequests(url_of(bed, name, answer_within=15)) as long:
        wait_for(lambda: long.in_flight >= 10, 30, "ten long requests in flight")
        bed.select(name, version)
        took = timed(lambda: done(bed.get_model(name)), 2 * START_S, step)
        long.finish()
    return {
        f"{step}_s": round(took, 2),
        f"{step}_cut": len(long.failures),
        f"{step}_requests": long.requests,
        f"{step}_longest_s": round(long.longest, 1),
    }


def runtimes(samples: int, log_dir: Path) -> dict[str, Any]:
    """`samples` of each case, summarized per case."""
    reason = real_node_unavailable()
    if reason is not None and not realnode.is_up():
        log(f"runtimes: skipped ({reason})")
        return {"skipped": reason}
    started_node = not realnode.is_up()
    if started_node:
        realnode.up(testbed.cluster.ensure_binaries())
    realnode.import_archive(mlserver_image.archive())
    bed = Bed("runtimes")
    bed.create_namespace()
    operator = OperatorProcess(log_dir / "operator-runtimes.log", "--namespace", bed.namespace)
    found: dict[str, list[dict[str, Any]]] = {}
    try:
        operator.start()
        for i in range(samples):
            for runtime in RUNTIMES:
                for failure in FAILURES:
                    sample = one_failure(bed, runtime, failure, i)
                    log(f"runtimes: {runtime} {failure} {sample}")
                    found.setdefault(f"{runtime}_{failure}", []).append(sample)
            sample = one_drain(bed, i)
            log(f"runtimes: drain {sample}")
            found.setdefault("mlserver_drain", []).append(sample)
    finally:
        operator.stop()
        bed.delete_namespace()
        if started_node:
            realnode.down()
    return {case: aggregate(runs) for case, runs in found.items()} | {
        "config": f"{REPLICAS} replicas on the real node, modeldeploy's defaults (readiness "
        "/v2/models/NAME/ready, drain 5 s, grace 35 s); crashloop: the corrupt model; "
        "wronganswers: caught by one golden request; drain: slowinfer (10 s inferences, one "
        "started every 0.5 s), a rollout v1 -> v2 and a revert from a crash-looping v3"
    }


def aggregate(found: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure: the median over the samples, or the most for counts of failures."""
    keys = found[0].keys()
    return {
        key: (
            max(f[key] for f in found)
            if key.endswith(("failed_requests", "_cut", "v2_answers"))
            else [x for f in found for x in f[key]]
            if key == "failures"
            else summary([f[key] for f in found], 2)["p50"]
        )
        for key in keys
    }


def active(body: JSON) -> str:
    return str(body["spec"]["activeVersion"])
