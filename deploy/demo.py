#!/usr/bin/env python3
"""`make demo`: watch modeldeploy catch a bad model version and put the good one back.

Starts the local test bed (built once and cached), installs the CRD, runs the
operator, deploys a healthy v1.0, then releases a crash-looping v2.0 and narrates
what the operator does, as it happens, from the resource's status and Events.
With --real-node (`make demo REAL_NODE=1`) the pods are real model servers on the
test bed's real node, and inference requests through the Service count what fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "modeldeploy-demo"
NAME = "fraud-detector"
START = time.monotonic()
PROBE = {"inputs": [{"name": "features", "datatype": "FP64", "shape": [1, 3], "data": [3, 1, 2.5]}]}


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


def load_testbed() -> Any:
    spec = importlib.util.spec_from_file_location(
        "testbed", ROOT / "deploy" / "local-cluster" / "testbed.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def poll(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    sys.exit(f"demo: timed out after {timeout:.0f}s waiting for {what}")


class Watcher:
    """Narrates changes of the ModelDeployment's status and of its pods."""

    def __init__(self, kube: Any) -> None:
        self.kube = kube
        self.seen: set[str] = set()
        self.min_ready: int | None = None

    def body(self) -> dict[str, Any]:
        result: dict[str, Any] = self.kube.get_namespaced_custom_object(
            "modeldeploy.io", "v1alpha1", NAMESPACE, "modeldeployments", NAME
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


class InferenceLoad:
    """Inference requests through the Service, one after another, counting failures."""

    def __init__(self, url: str) -> None:
        self.url, self.ok, self.failed = url, 0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def answers(self) -> bool:
        """Whether one inference request through the Service succeeds."""
        request = urllib.request.Request(self.url, data=json.dumps(PROBE).encode())
        try:
            with urllib.request.urlopen(request, timeout=3) as response:
                response.read()
        except (urllib.error.URLError, OSError):
            return False
        return True

    def run(self) -> None:
        while not self.stop.is_set():
            if self.answers():
                self.ok += 1
            else:
                self.failed += 1
            self.stop.wait(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--real-node", action="store_true", help="run real model servers")
    setting = REAL_NODE if parser.parse_args().real_node else SIMULATED
    testbed = load_testbed()
    # kubectl finds its plugin kubectl-modeldeploy on PATH, installed in the venv.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    say(f"starting the local test bed ({setting.where})")
    try:
        testbed.up(real_node=setting.real)
    except testbed.TestbedError as error:
        sys.exit(f"demo: the test bed did not start: {error}")
    os.environ["KUBECONFIG"] = str(testbed.KUBECONFIG)
    kubernetes.config.load_kube_config(config_file=str(testbed.KUBECONFIG))
    custom = kubernetes.client.CustomObjectsApi()
    core = kubernetes.client.CoreV1Api()
    run(
        "kubectl",
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        str(ROOT / "crds" / "modeldeployment.yaml"),
    )
    run(
        "kubectl",
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/modeldeployments.modeldeploy.io",
    )
    if any(ns.metadata.name == NAMESPACE for ns in core.list_namespace().items):
        say(f"deleting namespace {NAMESPACE} left by an earlier demo (its pods drain first)")
    subprocess.run(
        [
            "kubectl",
            "delete",
            "namespace",
            NAMESPACE,
            "--ignore-not-found",
            "--wait=true",
            "--timeout=60s",
        ],
        capture_output=True,
        check=False,
    )
    run("kubectl", "create", "namespace", NAMESPACE)
    poll(
        lambda: any(
            sa.metadata.name == "default"
            for sa in core.list_namespaced_service_account(NAMESPACE).items
        ),
        30,
        "namespace",
    )

    log_path = testbed.STATE / "logs" / "demo-operator.log"
    say(f"starting the operator (log: {log_path.relative_to(ROOT)})")
    with log_path.open("wb") as log:
        operator = subprocess.Popen(
            [sys.executable, "-m", "modeldeploy", "--namespace", NAMESPACE, "--liveness="],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        demo(custom, core, setting)
    finally:
        operator.terminate()
        operator.wait(timeout=20)
    print(
        "The test bed is still running: `export KUBECONFIG=.cluster/kubeconfig` to look "
        "around, `make cluster-down` to stop it."
    )


def demo(custom: Any, core: Any, setting: Setting) -> None:
    say(f"deploying {NAME} with the healthy version v1.0 (3 replicas)")
    run("kubectl", "apply", "-n", NAMESPACE, "-f", str(setting.example))
    watcher = Watcher(custom)
    poll(
        lambda: watcher.step().get("status", {}).get("lastGoodVersion") == "v1.0",
        120,
        "v1.0 to become ready",
    )
    run("kubectl", "get", "mdep", "-n", NAMESPACE, show=True)
    load = None
    if setting.real:
        service = core.read_namespaced_service(NAME, NAMESPACE).spec
        load = InferenceLoad(f"http://{service.cluster_ip}/v2/models/{NAME}/infer")
        # kube-proxy programs the Service a moment after the pods turn Ready; count from
        # the first answer so the figure below is about the release, not about start-up.
        poll(load.answers, 30, "the Service to answer")
        load.thread.start()
        say(f"sending inference requests through the Service ({service.cluster_ip}) meanwhile")

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

    poll(back_on_v1, 120, "the automatic revert")
    say(
        f"v1.0 is serving again, {time.monotonic() - released:.1f}s after v2.0 was released; "
        f"ready replicas never fell below {watcher.min_ready} of 3 "
        "(old pods stay until new ones are Ready)"
    )
    if load is not None:
        load.stop.set()
        load.thread.join(timeout=10)
        say(
            f"{load.ok + load.failed} inference requests through the Service meanwhile, "
            f"{load.failed} failed"
        )
    say(
        "v2.0 is now quarantined: selecting it again is refused until someone retries it "
        "(kubectl modeldeploy retry fraud-detector v2.0)\n"
    )
    run("kubectl", "get", "mdep", "-n", NAMESPACE, show=True)
    plugin = ["kubectl", "modeldeploy", "-n", NAMESPACE]  # the plugin, from the venv
    run(*plugin, "history", NAME, show=True)
    run(*plugin, "versions", NAME, show=True)
    poll(
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


if __name__ == "__main__":
    main()
