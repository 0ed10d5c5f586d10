"""A late revert on the real node, with and without the warm standby (docs/standby.md).

The previous version is `slowload` (the reference model server taking 20 s to load
its model); the promoted one is `badanswers` (Ready, but half of its inferences
answer 500), the kind of version someone rolls back by hand after promotion. Inference
requests go through the Service's ClusterIP one after another the whole time. A
sample starts when the manual rollback (`spec.activeVersion` back to the previous
version) is written and ends at the first answer from the previous version after
which every answer came from it; failed requests are counted from the rollback to
that moment, the bad version's 500s apart from requests that got no answer at all.
With `spec.rollout.standby`, the previous version's pods are still warm and the
Service moves to them; without it, the Deployment must start them and load the model.

It needs the test bed's real node (root, kubelet and containerd); only one may run on
a machine, so the benchmarks start it only when no other kubelet runs, and stop it
when done.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import testbed.cluster
from bench.cluster import JSON, Bed, log, serving
from bench.stats import summary
from testbed import realnode
from testbed.manifests import real_model
from testbed.modelserver.client import PROBE
from testbed.processes import TestbedError, running_pid
from testbed.support import Background, OperatorProcess, wait_for

REPLICAS = 2
PREVIOUS, PROMOTED = "v1", "v2"


def other_kubelet() -> str | None:
    """A kubelet this test bed did not start, if one runs (another real node)."""
    ours = {running_pid("kubelet")}
    found = subprocess.run(
        ["pgrep", "-x", "kubelet"], capture_output=True, text=True, check=False
    ).stdout
    others = [pid for pid in found.split() if int(pid) not in ours]
    return others[0] if others else None


def real_node_unavailable() -> str | None:
    """Why the real node cannot run for this benchmark, or None."""
    if os.geteuid() != 0:
        return "needs root"
    other = other_kubelet()
    if other is not None:
        return f"another kubelet runs (pid {other}): one real node per machine"
    try:
        realnode.preflight()
    except TestbedError as error:
        return str(error)
    return None


class Answers(Background):
    """Inference requests to `url`, one after another: (time, HTTP status, version)."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.answers: list[tuple[float, int, str | None]] = []
        self.lock = threading.Lock()

    def _run(self) -> None:
        data = json.dumps(PROBE).encode()
        while not self._stopping.is_set():
            status, version = 0, None
            try:
                request = urllib.request.Request(self.url, data=data)  # noqa: S310 - http only
                with urllib.request.urlopen(request, timeout=3) as response:  # noqa: S310
                    status = int(response.status)
                    version = json.loads(response.read()).get("model_version")
            except urllib.error.HTTPError as error:
                status = error.code
            except (urllib.error.URLError, OSError, ValueError):
                status = 0
            with self.lock:
                self.answers.append((time.time(), status, version))
            self._stopping.wait(0.02)

    def since(self, at: float) -> list[tuple[float, int, str | None]]:
        with self.lock:
            return [a for a in self.answers if a[0] >= at]


def body(name: str, standby: bool) -> JSON:
    rollout: dict[str, Any] = {"readyTimeoutSeconds": 120}
    if standby:
        rollout["standby"] = {"seconds": 3600}
    variants = {PREVIOUS: "slowload", PROMOTED: "badanswers"}
    return real_model(name, variants, PREVIOUS, REPLICAS, **rollout)


def promoted_with_standby(model: JSON, standby: bool) -> bool:
    status = model.get("status") or {}
    if not serving(model, PROMOTED):
        return False
    return not standby or bool((status.get("standby") or {}).get("endsAt"))


def one_revert(bed: Bed, name: str, standby: bool) -> dict[str, Any]:
    """Serve v1, promote v2, then roll back by hand under inference load."""
    bed.create_model(body(name, standby))
    wait_for(lambda: serving(bed.get_model(name), PREVIOUS), 240, f"{name}: v1 serving")
    service = bed.core.read_namespaced_service(name, bed.namespace)
    url = f"http://{service.spec.cluster_ip}:{service.spec.ports[0].port}/v2/models/{name}/infer"
    bed.select(name, PROMOTED)
    wait_for(
        lambda: promoted_with_standby(bed.get_model(name), standby),
        240,
        f"{name}: v2 promoted" + (" with v1 warm beside it" if standby else ""),
    )
    if standby:
        wait_for(lambda: standby_ready(bed, name), 120, f"{name}: the standby's pods Ready")
    with Answers(url) as load:
        wait_for(lambda: any(v == PROMOTED for _, _, v in load.since(0)), 60, "v2 answering")
        rolled_back = time.time()
        bed.select(name, PREVIOUS)
        wait_for(lambda: all_previous_for(load, rolled_back, 30), 180, f"{name}: v1 serving all")
        answers = load.since(rolled_back)
    bed.delete_model(name)
    return outcome(answers, rolled_back)


def standby_ready(bed: Bed, name: str) -> bool:
    deployment = bed.apps.read_namespaced_deployment(f"{name}-standby", bed.namespace)
    return bool((deployment.status.ready_replicas or 0) >= REPLICAS)


def all_previous_for(load: Answers, since: float, count: int) -> bool:
    """The last `count` answers after `since` all came from the previous version."""
    answers = load.since(since)
    return len(answers) >= count and all(v == PREVIOUS for _, _, v in answers[-count:])


def outcome(answers: list[tuple[float, int, str | None]], rolled_back: float) -> dict[str, Any]:
    last_other = max((i for i, a in enumerate(answers) if a[2] != PREVIOUS), default=-1)
    served_at = answers[last_other + 1][0] if last_other + 1 < len(answers) else None
    during = answers[: last_other + 1]
    return {
        "to_previous_serving_all_s": None
        if served_at is None
        else round(served_at - rolled_back, 2),
        "requests_during": len(during),
        "failed_requests": sum(1 for _, status, _ in during if status != 200),
        "bad_version_500s": sum(1 for _, status, _ in during if status == 500),
        "no_answer": sum(1 for _, status, _ in during if status not in (200, 500)),
    }


def standby_revert(samples: int, log_dir: Path) -> dict[str, Any]:
    """`samples` late reverts with the standby and as many without; both summarized."""
    reason = real_node_unavailable()
    if reason is not None:
        log(f"standby: skipped ({reason})")
        return {"skipped": reason}
    started_node = not realnode.is_up()
    if started_node:
        realnode.up(testbed.cluster.ensure_binaries())
    bed = Bed("standby")
    bed.create_namespace()
    operator = OperatorProcess(log_dir / "operator-standby.log", "--namespace", bed.namespace)
    results: dict[str, list[dict[str, Any]]] = {"with_standby": [], "without_standby": []}
    try:
        operator.start()
        for i in range(samples):
            for key, standby in (("with_standby", True), ("without_standby", False)):
                found = one_revert(bed, f"{key.replace('_', '-')}-{i}", standby)
                log(f"standby: {key} {found}")
                results[key].append(found)
    finally:
        operator.stop()
        bed.delete_namespace()
        if started_node:
            realnode.down()
    return {key: aggregate(found) for key, found in results.items()} | {
        "config": "previous version slowload (20 s model load), promoted version badanswers "
        f"(half its answers 500), {REPLICAS} replicas on the real node, readiness probe every "
        "1 s; standby: seconds 3600, replicas = spec.replicas"
    }


def aggregate(found: list[dict[str, Any]]) -> dict[str, Any]:
    times = [f["to_previous_serving_all_s"] for f in found if f["to_previous_serving_all_s"]]
    return {
        "to_previous_serving_all_s": summary(times, 2),
        "failed_requests": [f["failed_requests"] for f in found],
        "bad_version_500s": [f["bad_version_500s"] for f in found],
        "no_answer": [f["no_answer"] for f in found],
        "requests_during": [f["requests_during"] for f in found],
    }
