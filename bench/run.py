#!/usr/bin/env python3
"""Benchmarks of modeldeploy on the local test bed (`make bench`, `make bench-quick`).

Measures, side by side in one run, how fast a bad model version is detected and
reverted, how fast serving recovers compared with plain Deployments, how much
serving capacity is lost on the way, and how the operator copes with many
resources. Every timestamp comes from a watch event as this process receives it
(or, for a deadline, from the server's own timestamps), never from a sleep.
Writes bench/results/latest.{json,md,png} and a dated copy of the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import timeit
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf
import kubernetes
import urllib3

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"  # full runs; quick runs write to results/quick/
sys.path.insert(0, str(ROOT))

from modeldeploy.model import ChildState, Observed, parse_resource, to_json  # noqa: E402
from modeldeploy.render import render_deployment  # noqa: E402
from modeldeploy.rollout import decide  # noqa: E402

GROUP, VERSION, PLURAL = "modeldeploy.io", "v1alpha1", "modeldeployments"
GOOD = "registry.example/bench:1"
SCENARIOS = {
    "crashloop": ("registry.example/bench:2-crashloop", {}),
    "pullfail": ("registry.example/bench:2-pullfail", {}),
    "oom": ("registry.example/bench:2-oom", {}),
    "notready": ("registry.example/bench:2-notready", {"readyTimeoutSeconds": 10}),
}
FAILING = {"CrashLoopBackOff", "ErrImagePull", "ImagePullBackOff"}


def log(message: str) -> None:
    print(f"bench: {message}", flush=True)


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    sys.exit(f"bench: timed out after {timeout:.0f}s waiting for {what}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float | int]:
    return {
        "p50": round(percentile(values, 50), 1),
        "p95": round(percentile(values, 95), 1),
        "p99": round(percentile(values, 99), 1),
        "n": len(values),
    }


def load_testbed() -> Any:
    from testbed import cluster  # noqa: PLC0415 - until the benchmarks are a package

    return cluster


# ------------------------------------------------------------------- the cluster


class Bed:
    def __init__(self) -> None:
        self.core = kubernetes.client.CoreV1Api()
        self.apps = kubernetes.client.AppsV1Api()
        self.custom = kubernetes.client.CustomObjectsApi()
        self.namespace = f"bench-{uuid.uuid4().hex[:6]}"

    def create_namespace(self) -> None:
        self.core.create_namespace({"metadata": {"name": self.namespace}})
        wait_for(
            lambda: any(
                sa.metadata.name == "default"
                for sa in self.core.list_namespaced_service_account(self.namespace).items
            ),
            30,
            "the namespace's ServiceAccount",
        )

    def model(self, name: str, bad: str, replicas: int = 2, **rollout: Any) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelDeployment",
            "metadata": {"name": name},
            "spec": {
                "activeVersion": "v1",
                "replicas": replicas,
                "rollout": rollout,
                "versions": [{"name": "v1", "image": GOOD}, {"name": "v2", "image": bad}],
            },
        }
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    def select(self, name: str, version: str) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": {"activeVersion": version}}
        )

    def models(self) -> list[dict[str, Any]]:
        listed = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)
        return list(listed["items"])

    def all_good(self, names: set[str], version: str = "v1") -> bool:
        good = {
            m["metadata"]["name"]
            for m in self.models()
            if (m.get("status") or {}).get("lastGoodVersion") == version
            and any(
                k["type"] == "Ready" and k["status"] == "True"
                for k in m["status"].get("conditions") or ()
            )
        }
        return names <= good


@dataclass
class Timeline:
    """Watch-event arrival times per ModelDeployment or Deployment name."""

    signal: dict[str, float] = field(default_factory=dict)  # first failure signal
    reverted: dict[str, float] = field(default_factory=dict)  # activeVersion back to v1
    selected: dict[str, float] = field(default_factory=dict)  # when v2 was applied
    ready: dict[str, dict[str, bool]] = field(default_factory=dict)  # owner -> pod -> Ready
    min_ready: dict[str, int] = field(default_factory=dict)
    recovered: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def pod_signal(pod: Any, timeout_s: int | None) -> float | None:
    """When a bad pod first shows failure (wall clock); for a never-Ready pod, its deadline."""
    if timeout_s is not None:
        return float(pod.metadata.creation_timestamp.timestamp() + timeout_s)
    for status in pod.status.container_statuses or ():
        waiting = status.state.waiting.reason if status.state and status.state.waiting else None
        if waiting in FAILING or (status.restart_count or 0) > 0:
            return time.time()
    return None


@contextmanager
def watching(
    bed: Bed, label: str, timeline: Timeline, ready_timeout: dict[str, int] | None = None
) -> Iterator[None]:
    """Pod and ModelDeployment watches for the test namespace, in threads."""
    pods, models = kubernetes.watch.Watch(), kubernetes.watch.Watch()

    def watch_pods() -> None:
        for event in pods.stream(
            bed.core.list_namespaced_pod, bed.namespace, label_selector=label, timeout_seconds=3600
        ):
            pod = event["object"]
            owner = (pod.metadata.labels or {}).get("modeldeploy.io/name") or (
                pod.metadata.labels or {}
            ).get("app", "")
            version = (pod.metadata.labels or {}).get("modeldeploy.io/version", "")
            alive = event["type"] != "DELETED" and pod.metadata.deletion_timestamp is None
            with timeline.lock:
                ready = alive and any(
                    c.type == "Ready" and c.status == "True" for c in pod.status.conditions or ()
                )
                timeline.ready.setdefault(owner, {})[pod.metadata.name] = ready
                if owner in timeline.selected:
                    count = sum(timeline.ready[owner].values())
                    timeline.min_ready[owner] = min(timeline.min_ready.get(owner, count), count)
                if version == "v2" and alive and owner not in timeline.signal:
                    timeout = (ready_timeout or {}).get(owner)
                    at = pod_signal(pod, timeout)
                    if at is not None:
                        timeline.signal[owner] = at

    def watch_models() -> None:
        for event in models.stream(
            bed.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            bed.namespace,
            PLURAL,
            timeout_seconds=3600,
        ):
            if not isinstance(event.get("object"), dict) or event["type"] == "ERROR":
                continue  # the stream being cut by stop(), or an expired watch
            name = event["object"]["metadata"]["name"]
            active = event["object"]["spec"]["activeVersion"]
            with timeline.lock:
                if name in timeline.selected and active == "v1" and name not in timeline.reverted:
                    timeline.reverted[name] = time.time()

    def quietly(watch: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            with contextlib.suppress(urllib3.exceptions.ProtocolError):  # cut by stop()
                watch()

        return run

    threads = [threading.Thread(target=quietly(t), daemon=True) for t in (watch_pods, watch_models)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # let both watches open before anything is measured
    try:
        yield
    finally:
        pods.stop()
        models.stop()


def end(process: subprocess.Popen[bytes] | None) -> None:
    """Stop a process this run started, if there is one."""
    if process is not None:
        process.terminate()
        process.wait(timeout=30)


class Operator:
    def __init__(self, namespace: str | None, log_path: Path) -> None:
        self.namespace, self.log_path = namespace, log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.samples: list[tuple[float, float, float]] = []  # (t, rss MB, cpu s)
        self._sampling = False

    def start(self) -> float:
        args = [sys.executable, "-m", "modeldeploy", "--liveness="]
        if self.namespace:
            args += ["--namespace", self.namespace]
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        started = time.time()
        self._sampling = True
        threading.Thread(target=self._sample, daemon=True).start()
        return started

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _sample(self) -> None:
        start = time.time()
        while self._sampling and self.process is not None:
            try:
                cpu = cpu_seconds(self.process.pid)
                rss = next(
                    int(line.split()[1])
                    for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines()
                    if line.startswith("VmRSS:")
                )
            except (FileNotFoundError, StopIteration, ProcessLookupError):
                return
            self.samples.append((time.time() - start, rss / 1024, cpu))
            time.sleep(1)

    def stop(self) -> None:
        self._sampling = False
        end(self.process)
        self.process = None


# ------------------------------------------------------------------ measurements


class Background:
    """One measurement run in a thread; result() waits for it and re-raises its error."""

    def __init__(self, measure: Callable[[], dict[str, Any]]) -> None:
        self._measure = measure
        self._value: dict[str, Any] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self._value = self._measure()
        except BaseException as error:  # handed to the caller in result()
            self._error = error

    def start(self) -> None:
        self._thread.start()

    def result(self) -> dict[str, Any]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


def detect_to_revert(bed: Bed, repetitions: int, batch: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    for scenario, (image, rollout) in SCENARIOS.items():
        samples: list[float] = []
        for first in range(0, repetitions, batch):
            names = [f"{scenario}-{i}" for i in range(first, min(repetitions, first + batch))]
            timeline = Timeline()
            timeout = dict.fromkeys(names, rollout["readyTimeoutSeconds"]) if rollout else None
            for name in names:
                bed.model(name, image, **rollout)
            wait_for(lambda n=set(names): bed.all_good(n), 120, f"{scenario} models on v1")
            with watching(bed, "modeldeploy.io/version=v2", timeline, timeout):
                for name in names:
                    timeline.selected[name] = time.time()
                    bed.select(name, "v2")
                wait_for(
                    lambda n=names, t=timeline: all(x in t.reverted for x in n),
                    120,
                    f"{scenario} reverts",
                )
                time.sleep(0.5)  # late pod events still carry the first-signal times
            for name in names:
                if name in timeline.signal:
                    samples.append(max(0.0, timeline.reverted[name] - timeline.signal[name]) * 1000)
            for name in names:
                bed.custom.delete_namespaced_custom_object(
                    GROUP, VERSION, bed.namespace, PLURAL, name
                )
        results[scenario] = samples
        log(f"detect-to-revert {scenario}: {summary(samples)} ms")
    return results


def plain_deployment(name: str, replicas: int, deadline: int | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name, "bench": "plain"}},
            "spec": {"containers": [{"name": "model", "image": GOOD}]},
        },
    }
    if deadline is not None:
        spec["progressDeadlineSeconds"] = deadline
    return {"metadata": {"name": name}, "spec": spec}


def deployment_recovered(bed: Bed, name: str, replicas: int) -> bool:
    deployment = bed.apps.read_namespaced_deployment(name, bed.namespace)
    bad_pods = [
        p
        for p in bed.core.list_namespaced_pod(bed.namespace, label_selector=f"app={name}").items
        if "crashloop" in p.spec.containers[0].image
    ]
    status = deployment.status
    return bool(
        deployment.spec.template.spec.containers[0].image == GOOD
        and not bad_pods
        and status.available_replicas == replicas
        and status.updated_replicas == replicas
        and (status.replicas or 0) == replicas
    )


def deadline_exceeded(bed: Bed, name: str) -> bool:
    conditions = bed.apps.read_namespaced_deployment(name, bed.namespace).status.conditions or ()
    return any(
        c.type == "Progressing" and c.reason == "ProgressDeadlineExceeded" for c in conditions
    )


def recover_plain(
    bed: Bed, name: str, replicas: int, deadline: int | None, undo: bool, give_up_s: float
) -> dict[str, Any]:
    """A plain Deployment: bad image applied, then (optionally) `kubectl rollout undo`."""
    bed.apps.create_namespaced_deployment(bed.namespace, plain_deployment(name, replicas, deadline))
    wait_for(lambda: deployment_recovered(bed, name, replicas), 60, f"{name} ready")
    timeline = Timeline()
    with watching(bed, f"app={name}", timeline):
        timeline.selected[name] = applied = time.time()
        bed.apps.patch_namespaced_deployment(
            name,
            bed.namespace,
            {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {"name": "model", "image": "registry.example/bench:2-crashloop"}
                            ]
                        }
                    }
                }
            },
        )
        reported: float | None = None
        recovered: float | None = None
        deadline_at = time.monotonic() + give_up_s
        while time.monotonic() < deadline_at and recovered is None:
            if reported is None and deadline_exceeded(bed, name):
                reported = time.time()
                if undo:
                    subprocess.run(
                        ["kubectl", "rollout", "undo", "-n", bed.namespace, f"deployment/{name}"],
                        check=True,
                        capture_output=True,
                    )
            if deployment_recovered(bed, name, replicas):
                recovered = time.time()
            time.sleep(0.2)
    return {
        "failure_reported_s": None if reported is None else round(reported - applied, 1),
        "recovered_s": None if recovered is None else round(recovered - applied, 1),
        "min_ready_ratio": timeline.min_ready.get(name, 0) / replicas,
    }


def recover_modeldeploy(bed: Bed, replicas: int) -> dict[str, Any]:
    name = "recover"
    bed.model(name, "registry.example/bench:2-crashloop", replicas=replicas)
    wait_for(lambda: bed.all_good({name}), 60, "the model on v1")
    timeline = Timeline()
    with watching(bed, f"modeldeploy.io/name={name}", timeline):
        timeline.selected[name] = applied = time.time()
        bed.select(name, "v2")

        def recovered() -> bool:
            deployment = bed.apps.read_namespaced_deployment(name, bed.namespace)
            version = deployment.spec.template.metadata.labels["modeldeploy.io/version"]
            bad = bed.core.list_namespaced_pod(
                bed.namespace,
                label_selector=f"modeldeploy.io/name={name},modeldeploy.io/version=v2",
            ).items
            status = deployment.status
            return bool(
                version == "v1"
                and not bad
                and name in timeline.reverted
                and status.available_replicas == replicas
                and (status.replicas or 0) == replicas
            )

        wait_for(recovered, 60, "modeldeploy to recover")
        done = time.time()
    bed.custom.delete_namespaced_custom_object(GROUP, VERSION, bed.namespace, PLURAL, name)
    return {
        "recovered_s": round(done - applied, 2),
        "min_ready_ratio": timeline.min_ready.get(name, 0) / replicas,
    }


class ArgoRollouts:
    """Argo Rollouts' controller, built from Go modules, watching one namespace."""

    def __init__(self, testbed: Any, namespace: str, log_path: Path) -> None:
        built = subprocess.run(
            [str(ROOT / "bench" / "argo-rollouts" / "build.sh")],
            check=True,
            capture_output=True,
            text=True,
        )
        self.binary, self.crds = built.stdout.split()
        self.testbed, self.namespace, self.log_path = testbed, namespace, log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        subprocess.run(
            ["kubectl", "apply", "--server-side", "--force-conflicts", "-k", self.crds],
            check=True,
            capture_output=True,
        )
        wait_for(self._served, 30, "the Rollout API served")
        metrics, healthz = self.testbed.free_port(), self.testbed.free_port()
        args = [self.binary, "--kubeconfig", os.environ["KUBECONFIG"], "--namespaced"]
        args += ["--namespace", self.namespace, "--leader-elect=false", "--loglevel", "warn"]
        args += ["--metricsport", str(metrics), "--healthzPort", str(healthz)]
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)

    def _served(self) -> bool:
        try:
            kubernetes.client.CustomObjectsApi().list_namespaced_custom_object(
                "argoproj.io", "v1alpha1", self.namespace, "rollouts"
            )
        except kubernetes.client.ApiException:
            return False
        return True

    def stop(self) -> None:
        end(self.process)
        self.process = None


def argo_rollout(name: str, replicas: int, deadline: int) -> dict[str, Any]:
    """The plain Deployment's twin as a Rollout that aborts when its deadline passes."""
    spec = plain_deployment(name, replicas, deadline)["spec"]
    spec["progressDeadlineAbort"] = True
    spec["strategy"] = {"canary": {}}  # no steps: a rolling update, maxUnavailable 25%
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": spec,
    }


def recover_argo(bed: Bed, argo: ArgoRollouts, replicas: int, deadline: int) -> dict[str, Any]:
    """The same bad image on an Argo Rollout: its own abort takes it back to stable."""
    name = "argo"
    rollout = ("argoproj.io", "v1alpha1", bed.namespace, "rollouts")
    bed.custom.create_namespaced_custom_object(*rollout, argo_rollout(name, replicas, deadline))

    def pods() -> list[Any]:
        return list(bed.core.list_namespaced_pod(bed.namespace, label_selector=f"app={name}").items)

    def serving(image: str) -> bool:
        current = [p for p in pods() if p.metadata.deletion_timestamp is None]
        return len(current) == replicas and all(
            p.spec.containers[0].image == image
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or ())
            for p in current
        )

    wait_for(lambda: serving(GOOD), 60, f"{name} ready")
    timeline = Timeline()
    bad_image = "registry.example/bench:2-crashloop"
    with watching(bed, f"app={name}", timeline):
        timeline.selected[name] = applied = time.time()
        bed.custom.patch_namespaced_custom_object(
            *rollout,
            name,
            {
                "spec": {
                    "template": {"spec": {"containers": [{"name": "model", "image": bad_image}]}}
                }
            },
        )
        reported: float | None = None
        recovered: float | None = None
        give_up = time.monotonic() + deadline + 90
        while time.monotonic() < give_up and recovered is None:
            status = bed.custom.get_namespaced_custom_object(*rollout, name).get("status") or {}
            if reported is None and status.get("abort"):
                reported = time.time()
            if reported is not None and serving(GOOD):
                recovered = time.time()
            time.sleep(0.2)
    phase = status.get("phase")
    bed.custom.delete_namespaced_custom_object(*rollout, name)
    return {
        "failure_reported_s": None if reported is None else round(reported - applied, 1),
        "recovered_s": None if recovered is None else round(recovered - applied, 1),
        "min_ready_ratio": timeline.min_ready.get(name, 0) / replicas,
        "phase_after": phase,
        "note": "aborted back to the stable pods; the Rollout's spec still names the bad image",
    }


def settled_decide(versions: int) -> Callable[[], object]:
    """parse + decide of one settled resource with `versions` versions, ready to time."""
    body = {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {
            "activeVersion": "v0",
            "replicas": 3,
            "versions": [{"name": f"v{i}", "image": f"r/m:{i}"} for i in range(versions)],
        },
    }
    resource = parse_resource(body)
    spec = resource.spec
    assert not isinstance(spec, Exception)
    manifest = render_deployment(resource, spec, spec.active)
    child = ChildState(
        name="m",
        controller_uid="u",
        spec=manifest["spec"],
        template_hash=manifest["metadata"]["annotations"]["modeldeploy.io/template-hash"],
        generation=1,
        observed_generation=1,
        replicas=3,
        updated_replicas=3,
        ready_replicas=3,
        available_replicas=3,
    )
    observed = Observed(deployment=child)
    now = datetime.now(UTC)
    settled = decide(resource, observed, now).status
    body["status"] = to_json(settled)
    return lambda: decide(parse_resource(body), observed, now)


def reconcile_ratio(large: int = 1000, small: int = 10, rounds: int = 7) -> float:
    """Cost of a reconcile with `large` versions over one with `small`.

    Both are warmed up, then timed in alternating rounds (median of 200 calls
    each) so a GC pause or a noisy neighbour lands on both sides alike.
    """
    timers = [timeit.Timer(settled_decide(n)) for n in (large, small)]
    for timer in timers:
        timer.repeat(repeat=50, number=1)
    ratios = []
    for _ in range(rounds):
        big, little = (statistics.median(t.repeat(repeat=200, number=1)) for t in timers)
        ratios.append(big / little)
    return round(statistics.median(ratios), 2)


def add_nodes(bed: Bed, testbed: Any, pods: int) -> list[str]:
    """Fake nodes beside the test bed's three until `pods` more pods fit; returns their names."""
    nodes = bed.core.list_node().items
    room = sum(int(n.status.allocatable.get("pods", 0)) for n in nodes) - 20  # others' pods
    added: list[str] = []
    index = len(nodes)
    while room < pods:
        node = testbed.fake_node(index)
        bed.core.create_node(node)
        added.append(node["metadata"]["name"])
        room += int(node["status"]["allocatable"]["pods"])
        index += 1
    wait_for(
        lambda: testbed.nodes_ready(len(nodes) + len(added)), 60, f"{len(added)} added nodes Ready"
    )
    return added


def all_reconciled(bed: Bed, names: set[str]) -> bool:
    """The operator has acted on every one: status written for this generation, child made."""
    done = {
        m["metadata"]["name"]
        for m in bed.models()
        if (m.get("status") or {}).get("observedGeneration") == m["metadata"]["generation"]
    }
    deployments = {
        d.metadata.name for d in bed.apps.list_namespaced_deployment(bed.namespace).items
    }
    return names <= done & deployments


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def control_plane_cpu(testbed: Any) -> dict[str, float]:
    """CPU seconds each test-bed component has used so far."""
    used = {}
    for name in testbed.COMPONENTS:
        pid = testbed.running_pid(name)
        if pid is not None:
            used[name] = cpu_seconds(pid)
    return used


def settle(operator: Operator, limit_s: float) -> float:
    """Wait until the operator is idle (under 5% of a core over 5 s); seconds waited."""
    started = time.time()
    while time.time() - started < limit_s:
        before = cpu_seconds(operator.pid)
        time.sleep(5)
        if cpu_seconds(operator.pid) - before < 0.25:
            break
    return round(time.time() - started, 1)


def remove_scale_run(bed: Bed, names: set[str], nodes: list[str]) -> None:
    """The models and their pods gone before the fake nodes that run them.

    The scale run's models are the only ones left in the namespace by then.
    """
    for name in names:
        with contextlib.suppress(kubernetes.client.ApiException):
            bed.custom.delete_namespaced_custom_object(GROUP, VERSION, bed.namespace, PLURAL, name)
    wait_for(
        lambda: (
            not bed.core.list_namespaced_pod(
                bed.namespace, label_selector="modeldeploy.io/name", limit=1
            ).items
        ),
        600,
        "the scale run's pods deleted",
    )
    for node in nodes:
        bed.core.delete_node(node)


def scale(bed: Bed, testbed: Any, count: int, bad: int, log_dir: Path) -> dict[str, Any]:
    """`count` models created while the operator is stopped; then start it and measure."""
    added = add_nodes(bed, testbed, count * 3)
    log(f"scale: {len(added)} fake nodes added for {count * 3} pods")
    operator = Operator(None, log_dir / "operator-scale.log")
    names = {f"scale-{i}" for i in range(count)}
    try:
        for name in sorted(names):
            bed.model(name, "registry.example/bench:2-crashloop", replicas=3)
        log(f"scale: {count} ModelDeployments created; starting the operator")
        cpu_before = control_plane_cpu(testbed)
        started = operator.start()
        wait_for(lambda: all_reconciled(bed, names), 60 + count, f"{count} models reconciled")
        reconciled = time.time() - started
        cpu_during = {
            name: round(used - cpu_before.get(name, 0.0), 1)
            for name, used in control_plane_cpu(testbed).items()
        }
        cpu_during["modeldeploy"] = round(cpu_seconds(operator.pid), 1)
        log(f"scale: CPU seconds while reconciling: {cpu_during}")
        log(f"scale: all {count} reconciled {reconciled:.1f}s after the operator started")
        wait_for(lambda: bed.all_good(names), 60 + count * 1.5, f"{count} models Available")
        all_available = time.time() - started
        log(f"scale: all {count} Available {all_available:.1f}s after the operator started")
        # "Under management" is the steady state, not the start-up storm of 3,000 pods.
        settled = settle(operator, 300)
        log(f"scale: operator idle {settled}s after all were Available")
        chosen = sorted(names)[:bad]
        timeline = Timeline()
        with watching(bed, "modeldeploy.io/version=v2", timeline):
            for name in chosen:
                timeline.selected[name] = time.time()
                bed.select(name, "v2")
            wait_for(lambda: all(n in timeline.reverted for n in chosen), 180, "reverts under load")
            time.sleep(0.5)
        samples = [
            (timeline.reverted[n] - timeline.signal[n]) * 1000
            for n in chosen
            if n in timeline.signal
        ]
        operator.stop()
        rss = max((s[1] for s in operator.samples), default=0.0)
    finally:
        operator.stop()
        remove_scale_run(bed, names, added)
    return {
        "crs": count,
        "pods": count * 3,
        "operator_rss_mb": round(rss, 1),
        "all_reconciled_s": round(reconciled, 1),
        "cpu_seconds_while_reconciling": cpu_during,
        "settle_s": settled,
        "all_available_s": round(all_available, 1),
        "nodes_added": len(added),
        "bad_rollouts": bad,
        "detect_to_revert_p50_ms_under_load": round(percentile(samples, 50), 1),
        "detect_to_revert_p99_ms_under_load": round(percentile(samples, 99), 1),
        "cpu_seconds": round(operator.samples[-1][2], 1) if operator.samples else None,
        "samples": [[round(t, 1), round(m, 1), round(c, 2)] for t, m, c in operator.samples],
    }


# ------------------------------------------------------------------- reporting


TARGETS = [
    (
        "detect-to-revert p50 (ms)",
        "< 200",
        lambda r: max(v["p50"] for v in r["detect_to_revert_ms"].values()),
        lambda v: v < 200,
    ),
    (
        "detect-to-revert p99 (ms)",
        "< 1000",
        lambda r: max(v["p99"] for v in r["detect_to_revert_ms"].values()),
        lambda v: v < 1000,
    ),
    (
        "recovery vs plain Deployment, default deadline (x faster)",
        ">= 100",
        lambda r: r["ratios"]["default_deadline_over_modeldeploy"],
        lambda v: v >= 100,
    ),
    (
        "min ready ratio during a failed rollout",
        ">= 1.0",
        lambda r: r["min_ready_ratio"]["modeldeploy"],
        lambda v: v >= 1.0,
    ),
    (
        "operator RSS (MB) with the scale run",
        "< 250",
        lambda r: r["scale"]["operator_rss_mb"],
        lambda v: v < 250,
    ),
    (
        "all reconciled after operator start (s)",
        "< 20",
        lambda r: r["scale"]["all_reconciled_s"],
        lambda v: v < 20,
    ),
    (
        "detect-to-revert p99 under load (ms)",
        "< 1000",
        lambda r: r["scale"]["detect_to_revert_p99_ms_under_load"],
        lambda v: v < 1000,
    ),
    (
        "reconcile cost, 1000 vs 10 versions",
        "< 1.2",
        lambda r: r["scale"]["reconcile_ratio_1000_vs_10_versions"],
        lambda v: v < 1.2,
    ),
]


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Benchmark results ({result['mode']} run, {result['finished_at']})",
        "",
        f"{result['machine']['nproc']} cores, {result['machine']['memory_gb']} GiB, "
        f"Python {result['machine']['python']}; Kubernetes {result['versions']['kubernetes']}"
        f", kwok {result['versions']['kwok']}, kopf {result['versions']['kopf']}; scale run:"
        f" {result['scale']['crs']} ModelDeployments, {result['scale']['pods']} pods.",
        "",
        "| figure | target (DESIGN.md 6) | measured | |",
        "|---|---|---|---|",
    ]
    for name, target, get, ok in TARGETS:
        try:
            value = get(result)
        except (KeyError, TypeError, ValueError):
            lines.append(f"| {name} | {target} | not measured | |")
            continue
        if value is None:
            lines.append(f"| {name} | {target} | not measured | |")
        else:
            lines.append(f"| {name} | {target} | {value} | {'met' if ok(value) else 'MISSED'} |")
    lines += [
        "",
        "Detect-to-revert, first failure signal to `spec.activeVersion` reverted (ms):",
        "",
        "| scenario | p50 | p95 | p99 | n |",
        "|---|---|---|---|---|",
    ]
    for scenario, s in result["detect_to_revert_ms"].items():
        lines.append(f"| {scenario} | {s['p50']} | {s['p95']} | {s['p99']} | {s['n']} |")
    recover = result["recover_s"]
    lines += [
        "",
        "Bad version applied -> last good version fully serving, no bad pods (s):",
        "",
        "| | failure reported after | recovered after | min ready / replicas |",
        "|---|---|---|---|",
        f"| modeldeploy | {recover['modeldeploy']['recovered_s']} (reverted) | "
        f"{recover['modeldeploy']['recovered_s']} | "
        f"{result['min_ready_ratio']['modeldeploy']} |",
    ]
    for key, label in (
        ("deployment_default", "plain Deployment, default 600 s deadline"),
        ("deployment_undo_script", "plain Deployment, 30 s deadline + `kubectl rollout undo`"),
        ("argo_rollouts_abort", "Argo Rollouts, 30 s deadline + `progressDeadlineAbort`"),
    ):
        entry = recover[key]
        lines.append(
            f"| {label} | {entry.get('failure_reported_s', 'not measured')} | "
            f"{entry.get('recovered_s') or entry.get('note', 'never')} | "
            f"{entry.get('min_ready_ratio', '')} |"
        )
    scaled = result["scale"]
    lines += [
        "",
        f"Scale: {scaled['crs']} ModelDeployments created while the operator was stopped; "
        f"it had reconciled all of them {scaled['all_reconciled_s']} s after it started, and "
        f"all {scaled['pods']} pods were Ready and every resource Available after "
        f"{scaled['all_available_s']} s (the control plane and kwok making the pods). CPU "
        f"seconds while it reconciled: {scaled['cpu_seconds_while_reconciling']}. Operator "
        f"peak RSS {scaled['operator_rss_mb']} MB, {scaled['cpu_seconds']} CPU seconds in all. "
        f"Once it was idle again ({scaled['settle_s']} s later), "
        f"{scaled['bad_rollouts']} bad rollouts at once: detect-to-revert p50 "
        f"{scaled['detect_to_revert_p50_ms_under_load']} ms, p99 "
        f"{scaled['detect_to_revert_p99_ms_under_load']} ms.",
    ]
    ratios = result["ratios"]
    lines += [
        "",
        f"modeldeploy recovered {ratios['undo_script_over_modeldeploy']}x faster than the undo "
        f"script, {ratios['argo_abort_over_modeldeploy']}x faster than Argo Rollouts' abort, "
        f"and {ratios['default_deadline_over_modeldeploy']}x faster than a plain Deployment "
        "even reports the failure (it never recovers by itself). After Argo Rollouts aborts, "
        "the Rollout stays Degraded and its spec still names the bad image; modeldeploy puts "
        "`spec.activeVersion` back, so the spec and what serves agree.",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any], raw: dict[str, list[float]], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only `make bench` needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, (left, right, load) = plt.subplots(1, 3, figsize=(16, 4.5))
    left.boxplot(list(raw.values()), tick_labels=list(raw))
    left.set_ylabel("ms")
    left.set_title("Detect-to-revert (first failure signal -> spec reverted)")
    recover = result["recover_s"]
    bars = {
        "modeldeploy": recover["modeldeploy"]["recovered_s"],
        "Deployment\n+ undo script\n(30 s deadline)": recover["deployment_undo_script"].get(
            "recovered_s"
        ),
        "Argo Rollouts\nabort\n(30 s deadline)": recover["argo_rollouts_abort"].get("recovered_s"),
        "Deployment\n(600 s deadline,\nreports only)": recover["deployment_default"].get(
            "failure_reported_s"
        )
        or 600.0,
    }
    right.bar(
        list(bars),
        [v or 0 for v in bars.values()],
        color=["tab:green", "tab:orange", "tab:purple", "tab:red"],
    )
    right.set_yscale("log")
    right.set_ylabel("seconds (log)")
    right.set_title("Bad version applied -> good version serving")
    samples = result["scale"]["samples"]
    seconds = [t for t, _, _ in samples]
    load.plot(seconds, [rss for _, rss, _ in samples], color="tab:blue")
    load.set_xlabel("seconds after the operator started")
    load.set_ylabel("RSS (MB)", color="tab:blue")
    cpu = load.twinx()
    cpu.plot(seconds, [c for _, _, c in samples], color="tab:gray")
    cpu.set_ylabel("CPU seconds used", color="tab:gray")
    load.set_title(f"Operator with {result['scale']['crs']} ModelDeployments")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


# ----------------------------------------------------------------------- main


def assemble(
    quick: bool,
    started: float,
    raw: dict[str, list[float]],
    recover: dict[str, dict[str, Any]],
    scaled: dict[str, Any],
) -> dict[str, Any]:
    """The figures of one run as latest.json holds them."""
    modeldeploy, undo = recover["modeldeploy"], recover["deployment_undo_script"]
    rollouts, default = recover["argo_rollouts_abort"], recover["deployment_default"]
    return {
        "mode": "quick" if quick else "full",
        "finished_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(time.time() - started, 1),
        "detect_to_revert_ms": {k: summary(v) for k, v in raw.items()},
        "recover_s": recover,
        "ratios": {
            "undo_script_over_modeldeploy": round(
                undo["recovered_s"] / modeldeploy["recovered_s"], 1
            )
            if undo["recovered_s"]
            else None,
            "argo_abort_over_modeldeploy": round(
                rollouts["recovered_s"] / modeldeploy["recovered_s"], 1
            )
            if rollouts["recovered_s"]
            else None,
            "default_deadline_over_modeldeploy": round(
                (default["failure_reported_s"] or 600) / modeldeploy["recovered_s"], 1
            ),
            "default_deadline_note": "the plain Deployment never recovers by itself; this is "
            "the time until Kubernetes even reports the failure",
        },
        "min_ready_ratio": {
            "modeldeploy": modeldeploy["min_ready_ratio"],
            "deployment": undo["min_ready_ratio"],
            "argo_rollouts": rollouts["min_ready_ratio"],
        },
        "scale": scaled,
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        },
        "versions": {
            "kubernetes": "v1.33.13",
            "kwok": "v0.7.0",
            "argo_rollouts": "v1.8.3",
            "etcd": "3.5.24",
            "kopf": kopf.__version__ if hasattr(kopf, "__version__") else "1.45.2",
            "modeldeploy": "0.1.0",
        },
    }


def start_testbed() -> tuple[Any, bool]:
    """The test bed up (reused if running), our CRD applied; returns it and whether it was up."""
    testbed = load_testbed()
    was_up = testbed.is_up()
    testbed.up()
    os.environ["KUBECONFIG"] = str(testbed.KUBECONFIG)
    kubernetes.config.load_kube_config(config_file=str(testbed.KUBECONFIG))
    crd = str(ROOT / "crds" / "modeldeployment.yaml")
    subprocess.run(
        ["kubectl", "apply", "--server-side", "--force-conflicts", "-f", crd],
        check=True,
        capture_output=True,
    )
    return testbed, was_up


def write(result: dict[str, Any], raw: dict[str, list[float]], results: Path) -> None:
    """latest.json, its dated copy, latest.md and latest.png; the table on stdout too."""
    text = json.dumps(result, indent=2)
    (results / "latest.json").write_text(text)
    (results / f"{result['finished_at'].replace(':', '')}.json").write_text(text)
    (results / "latest.md").write_text(markdown(result))
    plot(result, raw, results / "latest.png")
    print(markdown(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small N, same code path (< 3 min)")
    quick = parser.parse_args().quick
    testbed, was_up = start_testbed()
    bed = Bed()
    bed.create_namespace()
    results = RESULTS / "quick" if quick else RESULTS
    results.mkdir(parents=True, exist_ok=True)
    log_dir = testbed.STATE / "logs"
    started = time.time()
    argo = ArgoRollouts(testbed, bed.namespace, log_dir / "argo-rollouts-bench.log")  # builds once
    operator = Operator(bed.namespace, log_dir / "operator-bench.log")
    try:
        operator.start()
        time.sleep(2)  # the operator lists and indexes before it acts
        # The default-deadline Deployment needs over ten minutes of waiting and
        # nothing of ours, so it runs beside the other measurements.
        default_run = Background(
            lambda: recover_plain(bed, "plain-default", 4, None, undo=False, give_up_s=660)
        )
        if not quick:
            default_run.start()
        raw = detect_to_revert(bed, 3 if quick else 20, 3 if quick else 5)
        modeldeploy = recover_modeldeploy(bed, 4)
        log(f"recover modeldeploy: {modeldeploy}")
        undo = recover_plain(bed, "plain-undo", 4, 30, undo=True, give_up_s=120)
        log(f"recover plain Deployment + undo script: {undo}")
        argo.start()
        rollouts = recover_argo(bed, argo, 4, 30)
        argo.stop()
        log(f"recover Argo Rollouts, 30 s deadline + progressDeadlineAbort: {rollouts}")
        if quick:
            default: dict[str, Any] = {
                "failure_reported_s": None,
                "recovered_s": None,
                "note": "not measured in the quick run (600 s)",
            }
        else:
            default = default_run.result()
            default["recovered_by_itself"] = default["recovered_s"] is not None
        log(f"recover plain Deployment, default deadline: {default}")
        operator.stop()
        scaled = scale(bed, testbed, 30 if quick else 1000, 5 if quick else 50, log_dir)
    finally:
        operator.stop()
        argo.stop()
        bed.core.delete_namespace(bed.namespace)
        if not was_up:
            testbed.down()
    scaled["reconcile_ratio_1000_vs_10_versions"] = reconcile_ratio()
    recover = {
        "modeldeploy": modeldeploy,
        "deployment_default": default,
        "deployment_undo_script": undo,
        "argo_rollouts_abort": rollouts,
    }
    result = assemble(quick, started, raw, recover, scaled)
    write(result, raw, results)


if __name__ == "__main__":
    main()
