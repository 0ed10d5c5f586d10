"""The benchmarks' cluster side: the test bed, one namespace, watches, processes measured.

`start_testbed` brings the test bed up (reusing a running one) with the CRD; `Bed`
is the namespace the run works in; `watching` records, in threads, when watch events
arrive (the only clock the figures use); `Usage` samples a process's memory and CPU;
`ArgoRollouts` is the third column's controller.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import urllib3

import testbed.cluster
from modeldeploy.constants import GROUP, PLURAL, VERSION
from testbed.processes import KUBECONFIG, running_pid
from testbed.support import Background, BackgroundWatch, end_process, free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
GOOD = "registry.example/bench:1"
CRASHLOOP = "registry.example/bench:2-crashloop"
FAILING = {"CrashLoopBackOff", "ErrImagePull", "ImagePullBackOff"}


def log(message: str) -> None:
    print(f"bench: {message}", flush=True)


def start_testbed() -> bool:
    """The test bed up (reused if running) with our CRD; whether it was up already."""
    was_up = testbed.cluster.is_up()
    testbed.cluster.up()
    os.environ["KUBECONFIG"] = str(KUBECONFIG)
    kubernetes.config.load_kube_config(config_file=str(KUBECONFIG))  # type: ignore[no-untyped-call]
    testbed.cluster.install_crd()
    return was_up


class Bed:
    """The run's namespace and the APIs it uses.

    The APIs are typed Any on purpose: the client's models type every field Optional,
    and the benchmarks read what the API server filled in.
    """

    def __init__(self) -> None:
        self.core: Any = kubernetes.client.CoreV1Api()
        self.apps: Any = kubernetes.client.AppsV1Api()
        self.custom: Any = kubernetes.client.CustomObjectsApi()
        self.namespace = f"bench-{uuid.uuid4().hex[:6]}"

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

    def delete_model(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

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


class Watch(BackgroundWatch[kubernetes.watch.Watch]):
    """One watch of the run's namespace, recording into `timeline` in a thread."""

    def __init__(self, bed: Bed, timeline: Timeline) -> None:
        # Stopping the watch cuts its connection: the stream ends with a ProtocolError.
        super().__init__(kubernetes.watch.Watch(), cut=(urllib3.exceptions.ProtocolError,))  # type: ignore[no-untyped-call]
        self.bed, self.timeline = bed, timeline


class PodWatch(Watch):
    """Ready pods per owner (and the fewest once v2 was selected), and v2's first failure."""

    def __init__(
        self, bed: Bed, timeline: Timeline, label: str, ready_timeout: dict[str, int] | None
    ) -> None:
        super().__init__(bed, timeline)
        self.label, self.ready_timeout = label, ready_timeout or {}

    def _read(self) -> None:
        core, namespace = self.bed.core, self.bed.namespace
        stream = self._watch.stream(  # type: ignore[no-untyped-call]
            core.list_namespaced_pod, namespace, label_selector=self.label, timeout_seconds=3600
        )
        for event in stream:
            self.record(event["object"], alive=event["type"] != "DELETED")

    def record(self, pod: Any, alive: bool) -> None:
        labels = pod.metadata.labels or {}
        owner = labels.get("modeldeploy.io/name") or labels.get("app", "")
        alive = alive and pod.metadata.deletion_timestamp is None
        timeline = self.timeline
        with timeline.lock:
            ready = alive and any(
                c.type == "Ready" and c.status == "True" for c in pod.status.conditions or ()
            )
            timeline.ready.setdefault(owner, {})[pod.metadata.name] = ready
            if owner in timeline.selected:
                count = sum(timeline.ready[owner].values())
                timeline.min_ready[owner] = min(timeline.min_ready.get(owner, count), count)
            bad = labels.get("modeldeploy.io/version") == "v2"
            if bad and alive and owner not in timeline.signal:
                at = pod_signal(pod, self.ready_timeout.get(owner))
                if at is not None:
                    timeline.signal[owner] = at


class ModelWatch(Watch):
    """When each selected ModelDeployment's spec.activeVersion came back to v1."""

    def _read(self) -> None:
        bed, timeline = self.bed, self.timeline
        stream = self._watch.stream(  # type: ignore[no-untyped-call]
            bed.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            bed.namespace,
            PLURAL,
            timeout_seconds=3600,
        )
        for event in stream:
            if not isinstance(event.get("object"), dict) or event["type"] == "ERROR":
                continue  # an expired watch
            name = event["object"]["metadata"]["name"]
            active = event["object"]["spec"]["activeVersion"]
            with timeline.lock:
                if name in timeline.selected and active == "v1" and name not in timeline.reverted:
                    timeline.reverted[name] = time.time()


@contextmanager
def watching(
    bed: Bed, label: str, timeline: Timeline, ready_timeout: dict[str, int] | None = None
) -> Iterator[None]:
    """Pod and ModelDeployment watches of the run's namespace, for the `with` block."""
    with PodWatch(bed, timeline, label, ready_timeout), ModelWatch(bed, timeline):
        time.sleep(0.5)  # let both watches open before anything is measured
        yield


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def rss_megabytes(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


class Usage(Background):
    """(seconds since `since`, RSS MB, CPU seconds) of process `pid`, every second."""

    def __init__(self, pid: int, since: float) -> None:
        super().__init__()
        self.pid, self.since = pid, since
        self.samples: list[tuple[float, float, float]] = []

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                sample = (time.time() - self.since, rss_megabytes(self.pid), cpu_seconds(self.pid))
            except (FileNotFoundError, StopIteration, ProcessLookupError):
                return  # the process ended
            self.samples.append(sample)
            self._stopping.wait(1)


def control_plane_cpu() -> dict[str, float]:
    """CPU seconds each test-bed component has used so far."""
    used = {}
    for name in testbed.cluster.COMPONENTS:
        pid = running_pid(name)
        if pid is not None:
            used[name] = cpu_seconds(pid)
    return used


def add_nodes(bed: Bed, pods: int) -> list[str]:
    """Fake nodes beside the test bed's three until `pods` more pods fit; returns their names."""
    nodes = bed.core.list_node().items
    room = sum(int(n.status.allocatable.get("pods", 0)) for n in nodes) - 20  # others' pods
    added: list[str] = []
    index = len(nodes)
    while room < pods:
        node = testbed.cluster.fake_node(index)
        bed.core.create_node(node)
        added.append(node["metadata"]["name"])
        room += int(node["status"]["allocatable"]["pods"])
        index += 1
    wait_for(
        lambda: testbed.cluster.nodes_ready(len(nodes) + len(added)),
        60,
        f"{len(added)} added nodes Ready",
    )
    return added


class ArgoRollouts:
    """Argo Rollouts' controller, built from Go modules, watching one namespace."""

    def __init__(self, namespace: str, log_path: Path) -> None:
        built = subprocess.run(
            [str(ROOT / "bench" / "argo-rollouts" / "build.sh")],
            check=True,
            capture_output=True,
            text=True,
        )
        self.binary, self.crds = built.stdout.split()
        self.namespace, self.log_path = namespace, log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        subprocess.run(
            ["kubectl", "apply", "--server-side", "--force-conflicts", "-k", self.crds],
            check=True,
            capture_output=True,
        )
        wait_for(self._served, 30, "the Rollout API served")
        args = [self.binary, "--kubeconfig", str(KUBECONFIG), "--namespaced"]
        args += ["--namespace", self.namespace, "--leader-elect=false", "--loglevel", "warn"]
        args += ["--metricsport", str(free_port()), "--healthzPort", str(free_port())]
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
        if self.process is not None:
            end_process(self.process)
        self.process = None
