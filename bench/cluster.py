"""The benchmarks' cluster side: one namespace, watches, the processes measured.

`Bed` is a namespace and the APIs the run uses (under the bench's own user agent,
so the audit log tells its requests from the operator's); `Watcher` keeps one
list+watch open in a thread and hands each raw event, with its arrival time, to a
callback; `Usage` samples a process's memory and CPU; `ArgoRollouts` and `Flagger`
are peers' controllers, built from Go modules like the test bed.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import kubernetes
import urllib3

import testbed.cluster
from bench.apiserver import BENCH_AGENT
from modeldeploy.constants import GROUP, PLURAL, VERSION
from testbed.manifests import model_deployment
from testbed.processes import KUBECONFIG, running_pid
from testbed.support import Background, BackgroundWatch, end_process, free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
GOOD = "registry.example/bench:1"
CRASHLOOP = "registry.example/bench:2-crashloop"
JSON = dict[str, Any]


def log(message: str) -> None:
    print(f"bench: {message}", flush=True)


def load_kubeconfig() -> None:
    os.environ["KUBECONFIG"] = str(KUBECONFIG)
    kubernetes.config.load_kube_config(config_file=str(KUBECONFIG))  # type: ignore[no-untyped-call]


class Bed:
    """A namespace of the run and the APIs it uses.

    The APIs are typed Any on purpose: the client's models type every field Optional,
    and the benchmarks read what the API server filled in.
    """

    def __init__(self, prefix: str = "bench") -> None:
        self.api = kubernetes.client.ApiClient()
        self.api.user_agent = BENCH_AGENT
        self.core: Any = kubernetes.client.CoreV1Api(self.api)
        self.apps: Any = kubernetes.client.AppsV1Api(self.api)
        self.custom: Any = kubernetes.client.CustomObjectsApi(self.api)
        self.namespace = f"{prefix}-{uuid.uuid4().hex[:6]}"

    def create_namespace(self) -> None:
        testbed.cluster.create_namespace(self.namespace)

    def delete_namespace(self) -> None:
        self.core.delete_namespace(self.namespace)

    def model(
        self,
        name: str,
        versions: dict[str, str],
        replicas: int = 1,
        active: str = "v1",
        **rollout: Any,
    ) -> None:
        """A ModelDeployment serving `active`; `versions` maps version names to images."""
        self.create_model(model_body(name, versions, replicas, active, **rollout))

    def create_model(self, body: JSON) -> None:
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    def select(self, name: str, version: str) -> None:
        self.patch_model(name, {"spec": {"activeVersion": version}})

    def patch_model(self, name: str, patch: JSON) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, patch
        )

    def delete_model(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def get_model(self, name: str) -> JSON:
        body: JSON = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name
        )
        return body

    def list_models(self, **params: Any) -> Any:
        return self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, **params
        )

    def list_pods(self, **params: Any) -> Any:
        return self.core.list_namespaced_pod(self.namespace, **params)

    def list_deployments(self, **params: Any) -> Any:
        return self.apps.list_namespaced_deployment(self.namespace, **params)


def model_body(
    name: str, versions: dict[str, str], replicas: int = 1, active: str = "v1", **rollout: Any
) -> JSON:
    """A ModelDeployment as the benchmarks create it (testbed/manifests.py): no model URIs."""
    return model_deployment(name, versions, active, replicas, model_uris=False, **rollout)


def serving(model: JSON, version: str = "v1") -> bool:
    """Settled on `version`: the spec names it, it is the last good one, Ready, no rollout."""
    status = model.get("status") or {}
    return bool(
        model["spec"]["activeVersion"] == version
        and status.get("lastGoodVersion") == version
        and status.get("observedGeneration") == model["metadata"]["generation"]
        and any(
            k["type"] == "Ready" and k["status"] == "True" for k in status.get("conditions") or ()
        )
        and not any(
            k["type"] == "Reconciling" and k["status"] == "True"
            for k in status.get("conditions") or ()
        )
    )


def pod_ready(pod: JSON) -> bool:
    alive = not pod["metadata"].get("deletionTimestamp")
    conditions = (pod.get("status") or {}).get("conditions") or ()
    return alive and any(k["type"] == "Ready" and k["status"] == "True" for k in conditions)


Handler = Callable[[str, JSON, float], None]


class Watcher(BackgroundWatch[kubernetes.watch.Watch]):
    """List, then watch from there, in a thread; `handle(type, object, arrival)` per event.

    The objects stay raw JSON (decoding them into the client's models costs the
    observer CPU that the measured processes share). The list's items come as ADDED.
    `ready` is set once the list was handled: from then on nothing is missed.
    """

    def __init__(self, list_call: Callable[..., Any], handle: Handler, **params: Any) -> None:
        # Stopping cuts the connection: the stream then ends with a urllib3 or socket error.
        super().__init__(
            kubernetes.watch.Watch(),  # type: ignore[no-untyped-call]
            cut=(urllib3.exceptions.HTTPError, OSError, ValueError),
        )
        self.list_call, self.handle, self.params = list_call, handle, params
        self.ready = threading.Event()

    def __enter__(self) -> Self:
        super().__enter__()
        if not self.ready.wait(30):
            self._raise_error()
            raise TimeoutError("the watch's list did not come back in 30 s")
        return self

    def _read(self) -> None:
        listed = self.list_call(_preload_content=False, **self.params)
        body = json.loads(listed.data)
        arrival = time.time()
        for item in body["items"]:
            self.handle("ADDED", item, arrival)
        self.ready.set()
        stream = self._watch.stream(  # type: ignore[no-untyped-call]
            self.list_call,
            resource_version=body["metadata"]["resourceVersion"],
            timeout_seconds=3600,
            deserialize=False,
            **self.params,
        )
        for event in stream:
            if self._stopping.is_set():
                return
            if event["type"] in {"ADDED", "MODIFIED", "DELETED"}:
                self.handle(event["type"], event["object"], time.time())


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int, field: str = "VmRSS") -> float:
    """A /proc/PID/status memory field in MB: VmRSS now, VmHWM the peak so far."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith(f"{field}:")) / 1024


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class Usage(Background):
    """(seconds since `since`, RSS MB, CPU seconds) of process `pid`, every `every` s;
    `peak_mb` is its VmHWM when last read (the kernel's peak, not a sampled one)."""

    def __init__(self, pid: int, since: float, every: float = 1.0) -> None:
        super().__init__()
        self.pid, self.since, self.every = pid, since, every
        self.samples: list[tuple[float, float, float]] = []
        self.peak_mb = 0.0

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                sample = (time.time() - self.since, memory_mb(self.pid), cpu_seconds(self.pid))
                self.peak_mb = memory_mb(self.pid, "VmHWM")
            except (FileNotFoundError, StopIteration, ProcessLookupError):
                return  # the process ended
            self.samples.append(sample)
            self._stopping.wait(self.every)


def control_plane_cpu() -> dict[str, float]:
    """CPU seconds each test-bed component has used so far."""
    used = {}
    for name in testbed.cluster.COMPONENTS:
        pid = running_pid(name)
        if pid is not None:
            used[name] = cpu_seconds(pid)
    return used


def cpu_since(before: dict[str, float]) -> dict[str, float]:
    return {k: round(v - before.get(k, 0.0), 1) for k, v in control_plane_cpu().items()}


def add_nodes(bed: Bed, pods: int) -> list[str]:
    """Fake nodes beside the test bed's until `pods` more pods fit; returns their names."""
    nodes = bed.core.list_node().items
    room = sum(int(n.status.allocatable.get("pods", 0)) for n in nodes) - 40  # others' pods
    room -= len(bed.core.list_pod_for_all_namespaces(limit=5000).items)
    added: list[str] = []
    index = max(int(n.metadata.name.rsplit("-", 1)[-1]) for n in nodes if "kwok" in n.metadata.name)
    while room < pods:
        index += 1
        node = testbed.cluster.fake_node(index)
        bed.core.create_node(node)
        added.append(node["metadata"]["name"])
        room += int(node["status"]["allocatable"]["pods"])
    wait_for(
        lambda: testbed.cluster.nodes_ready(len(nodes) + len(added)),
        120,
        f"{len(added)} added nodes Ready",
    )
    return added


def remove_nodes(bed: Bed, names: list[str]) -> None:
    for name in names:
        bed.core.delete_node(name)


def wait_pods_gone(bed: Bed, namespace: str, timeout: float) -> None:
    wait_for(
        lambda: not bed.core.list_namespaced_pod(namespace, limit=1).items,
        timeout,
        f"the pods of {namespace} deleted",
    )


def wait_namespace_gone(bed: Bed, namespace: str, timeout: float) -> None:
    def gone() -> bool:
        try:
            bed.core.read_namespace(namespace)
        except kubernetes.client.ApiException as error:
            return bool(error.status == 404)
        return False

    wait_for(gone, timeout, f"namespace {namespace} deleted")


class PeerController:
    """A peer's controller, built from Go modules like the test bed, watching one
    namespace: its build script prints the binary and the CRDs it ships."""

    build = ""  # the build script, under bench/
    crd_apply: tuple[str, ...] = ()  # how kubectl takes the CRDs (-k DIR or -f FILE)
    api: tuple[str, str, str] = ("", "", "")  # group, version, plural: served once ready

    def __init__(self, namespace: str, log_path: Path) -> None:
        built = subprocess.run(
            [str(ROOT / "bench" / self.build)], check=True, capture_output=True, text=True
        )
        self.binary, self.crds = built.stdout.split()
        self.namespace, self.log_path = namespace, log_path
        self.process: subprocess.Popen[bytes] | None = None

    def arguments(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        subprocess.run(
            ["kubectl", "apply", "--server-side", "--force-conflicts", *self.crd_apply, self.crds],
            check=True,
            capture_output=True,
        )
        wait_for(self._served, 30, f"the {self.api[2]} API served")
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(self.arguments(), stdout=out, stderr=subprocess.STDOUT)

    def _served(self) -> bool:
        group, version, plural = self.api
        try:
            kubernetes.client.CustomObjectsApi().list_namespaced_custom_object(
                group, version, self.namespace, plural
            )
        except kubernetes.client.ApiException:
            return False
        return True

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None:
            end_process(self.process)
        self.process = None


class ArgoRollouts(PeerController):
    """Argo Rollouts' controller."""

    build = "argo-rollouts/build.sh"
    crd_apply = ("-k",)
    api = ("argoproj.io", "v1alpha1", "rollouts")

    def arguments(self) -> list[str]:
        args = [self.binary, "--kubeconfig", str(KUBECONFIG), "--namespaced"]
        args += ["--namespace", self.namespace, "--leader-elect=false", "--loglevel", "warn"]
        return [*args, "--metricsport", str(free_port()), "--healthzPort", str(free_port())]


class Flagger(PeerController):
    """Flagger's controller with the Kubernetes provider (Blue/Green on plain Services).
    There is no Prometheus for it here: the Canaries it runs use no metrics, and a
    metrics address is required, so it is one that refuses (Flagger logs it and goes on)."""

    build = "flagger/build.sh"
    crd_apply = ("-f",)
    api = ("flagger.app", "v1beta1", "canaries")

    def arguments(self) -> list[str]:
        args = [self.binary, f"-kubeconfig={KUBECONFIG}", "-mesh-provider=kubernetes"]
        args += [f"-namespace={self.namespace}", "-enable-leader-election=false"]
        args += [f"-metrics-server=http://127.0.0.1:{free_port()}", f"-port={free_port()}"]
        return [*args, "-log-level=info", "-zap-encoding=console", "-control-loop-interval=2s"]
