#!/usr/bin/env python3
"""The local test bed: a real control plane on 127.0.0.1 with kwok-simulated nodes.

`testbed.py up|down|status` starts etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok from the binaries `build.sh` caches, creates the fake nodes
and writes `.cluster/kubeconfig`. Standard library only, so it runs before any venv.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
STATE = Path(os.environ.get("MODELDEPLOY_CLUSTER_DIR", ROOT / ".cluster"))
KUBECONFIG = STATE / "kubeconfig"
TOKEN = "modeldeploy-testbed-admin"  # loopback-only cluster, regenerated per start
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
START_TIMEOUT_S = 90
_started: dict[str, subprocess.Popen[bytes]] = {}  # what this process started, by name


class TestbedError(Exception):
    """A component failed to build, start or become ready."""


def log(message: str) -> None:
    print(f"testbed: {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pid_file(name: str) -> Path:
    return STATE / "pids" / f"{name}.pid"


def log_file(name: str) -> Path:
    return STATE / "logs" / f"{name}.log"


def log_tail(name: str, lines: int = 25) -> str:
    try:
        return "\n".join(log_file(name).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def running_pid(name: str) -> int | None:
    """The pid of our component `name` if it is alive and still the process we started."""
    try:
        pid = int(pid_file(name).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid if str(STATE).encode() in cmdline else None


def ensure_binaries() -> Path:
    started = time.monotonic()
    result = subprocess.run(
        [str(HERE / "build.sh")], stdout=subprocess.PIPE, text=True, check=False
    )
    if result.returncode != 0:
        raise TestbedError("build failed (see the build output above)")
    bin_dir = Path(result.stdout.strip().splitlines()[-1])
    log(f"binaries ready in {time.monotonic() - started:.1f} s: {bin_dir}")
    return bin_dir


def start(name: str, argv: list[str]) -> None:
    with log_file(name).open("wb") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file(name).write_text(str(process.pid))
    _started[name] = process


def alive(name: str) -> bool:
    # A process we just forked may not have exec'd yet, so ask Popen first.
    if name in _started:
        return _started[name].poll() is None
    return running_pid(name) is not None


def wait_for(what: str, check: Callable[[], bool], component: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(component):
            raise TestbedError(
                f"{component} exited while waiting for {what}:\n{log_tail(component)}"
            )
        try:
            if check():
                return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(0.2)
    raise TestbedError(
        f"timed out after {timeout:.0f} s waiting for {what}:\n{log_tail(component)}"
    )


def api(method: str, path: str, body: object | None = None) -> object:
    config = json.loads((STATE / "endpoint.json").read_text())
    context = ssl.create_default_context(cafile=str(STATE / "certs" / "apiserver.crt"))
    request = urllib.request.Request(
        config["server"] + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return json.loads(response.read() or b"null")


def write_credentials() -> None:
    certs = STATE / "certs"
    certs.mkdir(parents=True)
    subprocess.run(
        ["openssl", "genrsa", "-out", str(certs / "sa.key"), "2048"],
        check=True,
        capture_output=True,
    )
    (STATE / "tokens.csv").write_text(f'{TOKEN},testbed-admin,testbed-admin,"system:masters"\n')


def write_kubeconfig(server: str) -> None:
    ca = STATE / "certs" / "apiserver.crt"
    KUBECONFIG.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "modeldeploy-testbed",
                "clusters": [
                    {
                        "name": "modeldeploy-testbed",
                        "cluster": {"server": server, "certificate-authority": str(ca)},
                    }
                ],
                "users": [{"name": "testbed-admin", "user": {"token": TOKEN}}],
                "contexts": [
                    {
                        "name": "modeldeploy-testbed",
                        "context": {"cluster": "modeldeploy-testbed", "user": "testbed-admin"},
                    }
                ],
            },
            indent=2,
        )
    )


def start_control_plane(bin_dir: Path) -> None:
    etcd_port, etcd_peer, api_port, kwok_port = (free_port() for _ in range(4))
    server = f"https://127.0.0.1:{api_port}"
    (STATE / "endpoint.json").write_text(json.dumps({"server": server}))
    certs = STATE / "certs"

    start(
        "etcd",
        [
            str(bin_dir / "etcd"),
            "--name=testbed",
            f"--data-dir={STATE / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=testbed=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync",
            "--auto-compaction-retention=1",
            "--log-level=warn",
        ],
    )
    wait_for("etcd", lambda: http_ok(f"http://127.0.0.1:{etcd_port}/health"), "etcd", 30)

    start(
        "kube-apiserver",
        [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--cert-dir={certs}",
            f"--token-auth-file={STATE / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={certs / 'sa.key'}",
            f"--service-account-signing-key-file={certs / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--allow-privileged=true",
            "--endpoint-reconciler-type=none",
            "--enable-priority-and-fairness=false",
        ],
    )
    wait_for("kube-apiserver /readyz", lambda: api_ready(server), "kube-apiserver", START_TIMEOUT_S)
    write_kubeconfig(server)

    start(
        "kube-controller-manager",
        [
            str(bin_dir / "kube-controller-manager"),
            f"--kubeconfig={KUBECONFIG}",
            "--leader-elect=false",
            "--controllers=*",
            "--secure-port=0",
            f"--service-account-private-key-file={certs / 'sa.key'}",
            f"--root-ca-file={certs / 'apiserver.crt'}",
            "--use-service-account-credentials=false",
            "--concurrent-deployment-syncs=10",
            "--concurrent-replicaset-syncs=10",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
        ],
    )
    start(
        "kube-scheduler",
        [
            str(bin_dir / "kube-scheduler"),
            f"--kubeconfig={KUBECONFIG}",
            "--leader-elect=false",
            "--secure-port=0",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
        ],
    )
    start(
        "kwok",
        [
            str(bin_dir / "kwok"),
            f"--kubeconfig={KUBECONFIG}",
            f"--config={HERE / 'stages.yaml'}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--node-lease-duration-seconds=40",
            "--cidr=10.244.0.1/16",
            "--node-ip=10.244.0.1",
            f"--server-address=127.0.0.1:{kwok_port}",
            "--v=WARN",
        ],
    )


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


def api_ready(server: str) -> bool:
    context = ssl.create_default_context(cafile=str(STATE / "certs" / "apiserver.crt"))
    request = urllib.request.Request(
        server + "/readyz", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, context=context, timeout=2) as response:
        return bool(response.status == 200)


def fake_node(index: int) -> dict[str, object]:
    name = f"kwok-node-{index}"
    resources: dict[str, str] = {"cpu": "32", "memory": "128Gi", "pods": "110"}
    if index == 0:
        resources["nvidia.com/gpu"] = "1"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "status": {"allocatable": resources, "capacity": resources},
    }


def nodes_ready(expected: int) -> bool:
    nodes = api("GET", "/api/v1/nodes")
    assert isinstance(nodes, dict)
    ready = [
        node
        for node in nodes["items"]
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in node.get("status", {}).get("conditions", [])
        )
    ]
    return len(ready) >= expected


def default_service_account_exists() -> bool:
    api("GET", "/api/v1/namespaces/default/serviceaccounts/default")
    return True


def is_up() -> bool:
    if any(running_pid(name) is None for name in COMPONENTS):
        return False
    try:
        return api_ready(json.loads((STATE / "endpoint.json").read_text())["server"])
    except (OSError, urllib.error.URLError, ValueError, KeyError):
        return False


def up() -> None:
    if is_up():
        log(f"already running; export KUBECONFIG={KUBECONFIG}")
        return
    down(quiet=True)
    bin_dir = ensure_binaries()
    started = time.monotonic()
    shutil.rmtree(STATE, ignore_errors=True)
    (STATE / "pids").mkdir(parents=True)
    (STATE / "logs").mkdir()
    write_credentials()
    try:
        start_control_plane(bin_dir)
        for index in range(3):
            api("POST", "/api/v1/nodes", fake_node(index))
        wait_for("3 Ready nodes", lambda: nodes_ready(3), "kwok", START_TIMEOUT_S)
        wait_for(
            "the default ServiceAccount",
            default_service_account_exists,
            "kube-controller-manager",
            START_TIMEOUT_S,
        )
    except (TestbedError, urllib.error.URLError, OSError) as error:
        log(f"start failed: {error}")
        down(quiet=True)
        raise
    log(f"up in {time.monotonic() - started:.1f} s")
    print(f"Test bed is up. Use it with:\n  export KUBECONFIG={KUBECONFIG}\n  kubectl get nodes")


def down(quiet: bool = False) -> None:
    stopped = []
    for name in reversed(COMPONENTS):
        pid = running_pid(name)
        if pid is None:
            continue
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while running_pid(name) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if running_pid(name) is not None:
            os.killpg(pid, signal.SIGKILL)
        stopped.append(name)
    for name in COMPONENTS:
        pid_file(name).unlink(missing_ok=True)
    if not quiet:
        log(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")


def status() -> int:
    for name in COMPONENTS:
        pid = running_pid(name)
        print(f"{name:24} {'running, pid ' + str(pid) if pid else 'stopped'}")
    if is_up():
        print(f"API server ready; KUBECONFIG={KUBECONFIG}")
        return 0
    print("test bed is not (fully) up")
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "build"])
    command = parser.parse_args().command
    try:
        if command == "up":
            up()
        elif command == "down":
            down()
        elif command == "build":
            ensure_binaries()
        else:
            return status()
    except TestbedError as error:
        log(str(error))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
