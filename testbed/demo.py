"""`make demo`: watch modeldeploy catch a bad model version and put the good one back.

Starts the local test bed (built once and cached), installs the CRD, runs the
operator, deploys a healthy v1.0, then releases a crash-looping v2.0 and narrates
what the operator does, as it happens, from the resource's status and Events.
With --real-node (`make demo REAL_NODE=1`) the pods are real model servers on the
test bed's real node, and inference requests through the Service count what fails.
Run as `python -m testbed.demo [--real-node]` from the repository root, in the venv.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes

from modeldeploy.constants import GROUP, PLURAL, VERSION
from testbed import cluster
from testbed.modelserver.client import InferenceLoad, infer
from testbed.processes import KUBECONFIG, STATE, TestbedError
from testbed.support import OperatorProcess, WaitTimeout, wait_for

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "modeldeploy-demo"
NAME = "fraud-detector"
START = time.monotonic()


@dataclass(frozen=True)
class Setting:
    example: Path
    where: str  # what runs the pods
    bad: str  # what is wrong with v2.0
    real: bool


SIMULATED = Setting(
    ROOT / "deploy" / "examples" / "fraud-detector.yaml",
    "a real kube-apiserver, controller-manager and scheduler; pods simulated by kwok",
    "whose model server crashes on start",
    real=False,
)
REAL_NODE = Setting(
    ROOT / "deploy" / "examples" / "fraud-detector-real-node.yaml",
    "a real control plane, plus a real node: kubelet, containerd and kube-proxy running"
    " the reference model server",
    "whose image carries a corrupt model file (the server exits 1 loading it)",
    real=True,
)


def say(message: str) -> None:
    print(f"[{time.monotonic() - START:6.1f}s] {message}", flush=True)


def run(*command: str, show: bool = False) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"demo: `{' '.join(command)}` failed:\n{result.stderr}")
    if show:
        print("$ " + " ".join(command).replace(str(ROOT) + "/", ""))
        print(result.stdout.rstrip() + "\n", flush=True)
    return result.stdout


class Watcher:
    """Narrates changes of the ModelDeployment's status and of its pods."""

    def __init__(self, kube: Any) -> None:
        self.kube = kube
        self.seen: set[str] = set()
        self.min_ready: int | None = None

    def body(self) -> dict[str, Any]:
        result: dict[str, Any] = self.kube.get_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, NAME
        )
        return result

    def once(self, key: str, message: str) -> None:
        if key not in self.seen:
            self.seen.add(key)
            say(message)

    def step(self) -> dict[str, Any]:
        body = self.body()
        status = body.get("status") or {}
        for entry in reversed(status.get("history") or ()):
            revision, outcome = entry["revision"], entry["outcome"]
            self.once(
                f"start-{revision}",
                f"rollout #{revision}: {entry.get('from') or '(none)'}"
                f" -> {entry['version']} started (trigger {entry['trigger']})",
            )
            if outcome == "Failed":
                self.once(
                    f"end-{revision}",
                    f"rollout #{revision} FAILED: {entry['reason']}\n          {entry['message']}",
                )
            elif outcome == "Succeeded":
                self.once(
                    f"end-{revision}",
                    f"rollout #{revision} succeeded: {entry['version']} "
                    "is serving on every replica",
                )
        for revert in status.get("reverts") or ():
            self.once(
                f"revert-{revert['at']}",
                f"the operator recorded the failure in status, "
                f"then set spec.activeVersion {revert['from']} -> {revert['to']} "
                "(the last good version)",
            )
        ready = status.get("readyReplicas")
        if ready is not None and status.get("lastGoodVersion"):
            self.min_ready = ready if self.min_ready is None else min(self.min_ready, ready)
        return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--real-node", action="store_true", help="run real model servers")
    setting = REAL_NODE if parser.parse_args().real_node else SIMULATED
    # kubectl finds its plugin kubectl-modeldeploy on PATH, installed in the venv.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    try:
        start_cluster(setting)
        log_path = STATE / "logs" / "demo-operator.log"
        log_path.unlink(missing_ok=True)
        say(f"starting the operator (log: {log_path.relative_to(ROOT)})")
        operator = OperatorProcess(log_path, "--namespace", NAMESPACE)
        operator.start()
        try:
            demo(setting)
        finally:
            operator.stop()
    except TestbedError as error:
        sys.exit(f"demo: the test bed did not start: {error}")
    except WaitTimeout as error:
        sys.exit(f"demo: {error}")
    print(
        "The test bed is still running: `export KUBECONFIG=.cluster/kubeconfig` to look "
        "around, `make cluster-down` to stop it."
    )


def start_cluster(setting: Setting) -> None:
    """The test bed up with the CRD installed, and the demo's namespace made afresh."""
    say(f"starting the local test bed ({setting.where})")
    cluster.up(real_node=setting.real)
    os.environ["KUBECONFIG"] = str(KUBECONFIG)
    kubernetes.config.load_kube_config(config_file=str(KUBECONFIG))  # type: ignore[no-untyped-call]
    cluster.install_crd()
    if cluster.namespace_exists(NAMESPACE):
        say(f"deleting namespace {NAMESPACE} left by an earlier demo (its pods drain first)")
        run("kubectl", "delete", "namespace", NAMESPACE, "--wait=true", "--timeout=60s")
    cluster.create_namespace(NAMESPACE)


def demo(setting: Setting) -> None:
    say(f"deploying {NAME} with the healthy version v1.0 (3 replicas)")
    run("kubectl", "apply", "-n", NAMESPACE, "-f", str(setting.example))
    watcher = Watcher(kubernetes.client.CustomObjectsApi())
    wait_for(
        lambda: watcher.step().get("status", {}).get("lastGoodVersion") == "v1.0",
        120,
        "v1.0 to become ready",
    )
    run("kubectl", "get", "mdep", "-n", NAMESPACE, show=True)
    if setting.real:
        service = kubernetes.client.CoreV1Api().read_namespaced_service(NAME, NAMESPACE).spec
        assert service is not None  # the operator rendered it
        url = f"http://{service.cluster_ip}/v2/models/{NAME}/infer"
        # kube-proxy programs the Service a moment after the pods turn Ready; count from
        # the first answer so the figure below is about the release, not about start-up.
        wait_for(lambda: infer(url)[0] == 200, 30, "the Service to answer")
        say(f"sending inference requests through the Service ({service.cluster_ip}) meanwhile")
        with InferenceLoad(url) as load:
            release(watcher, setting)
        say(
            f"{load.requests} inference requests through the Service meanwhile, "
            f"{len(load.failures)} failed"
        )
    else:
        release(watcher, setting)
    say(
        "v2.0 is now quarantined: selecting it again is refused until someone retries it "
        "(kubectl modeldeploy retry fraud-detector v2.0)\n"
    )
    run("kubectl", "get", "mdep", "-n", NAMESPACE, show=True)
    plugin = ["kubectl", "modeldeploy", "-n", NAMESPACE]  # the plugin, from the venv
    run(*plugin, "history", NAME, show=True)
    run(*plugin, "versions", NAME, show=True)
    wait_for(
        lambda: "RolledBack" in run("kubectl", "get", "events", "-n", NAMESPACE),
        10,
        "the RolledBack Event",
    )
    run(
        "kubectl",
        "get",
        "events",
        "-n",
        NAMESPACE,
        "--field-selector",
        f"involvedObject.kind=ModelDeployment,involvedObject.name={NAME}",
        "--sort-by=.lastTimestamp",
        "-o",
        "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message",
        show=True,
    )


def release(watcher: Watcher, setting: Setting) -> None:
    """Select v2.0 and narrate until the operator has put v1.0 back."""
    say(
        f"releasing v2.0, {setting.bad}: "
        "kubectl patch mdep fraud-detector --type merge -p "
        '\'{"spec":{"activeVersion":"v2.0"}}\''
    )
    released = time.monotonic()
    run(
        "kubectl",
        "patch",
        "mdep",
        NAME,
        "-n",
        NAMESPACE,
        "--type",
        "merge",
        "-p",
        '{"spec":{"activeVersion":"v2.0"}}',
    )

    def back_on_v1() -> bool:
        body = watcher.step()
        status = body.get("status") or {}
        return bool(
            body["spec"]["activeVersion"] == "v1.0"
            and (status.get("history") or [{}])[0].get("outcome") == "Succeeded"
            and status.get("servingVersion") == "v1.0"
        )

    wait_for(back_on_v1, 120, "the automatic revert")
    say(
        f"v1.0 is serving again, {time.monotonic() - released:.1f}s after v2.0 was released; "
        f"ready replicas never fell below {watcher.min_ready} of 3 "
        "(old pods stay until new ones are Ready)"
    )


if __name__ == "__main__":
    main()
