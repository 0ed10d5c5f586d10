"""The test bed's control plane: etcd, the Kubernetes control plane and kwok's fake nodes.

`up` starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok
from the binaries `build.sh` caches, creates three fake nodes, writes the
kubeconfig (processes.KUBECONFIG) and serves the resource metrics API with
metrics-server (resource_metrics.py); `up(real_node=True)` adds the real node beside
them (realnode.py); `down` stops all of it. Standard library only.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testbed import realnode, resource_metrics
from testbed.processes import (
    KUBECONFIG,
    ROOT,
    START_TIMEOUT_S,
    STATE,
    TOKEN,
    TestbedError,
    api,
    api_ready,
    http_ok,
    log,
    running_pid,
    start,
    stop,
    wait_for_component,
    write_kubeconfig,
)
from testbed.support import free_port, wait_for

HERE = Path(__file__).resolve().parent
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
FRONT_PROXY_CLIENT = "front-proxy-client"


def ensure_binaries() -> Path:
    """The control plane's bin folder; metrics-server is built beside it (its own cache)."""
    started = time.monotonic()
    result = subprocess.run(
        [str(HERE / "build.sh")], stdout=subprocess.PIPE, text=True, check=False
    )
    if result.returncode != 0:
        raise TestbedError("build failed (see the build output above)")
    bin_dir = Path(result.stdout.strip().splitlines()[-1])
    resource_metrics.ensure_binary()
    log(f"binaries ready in {time.monotonic() - started:.1f} s: {bin_dir}")
    return bin_dir


def write_credentials() -> None:
    certs = STATE / "certs"
    certs.mkdir(parents=True)
    openssl("genrsa", "-out", certs / "sa.key", "2048")
    write_kubelet_client_certificate(certs)
    write_front_proxy_certificate(certs)
    (STATE / "tokens.csv").write_text(
        f'{TOKEN},testbed-admin,testbed-admin,"system:masters"\n' + realnode.token_lines()
    )


def write_kubelet_client_certificate(certs: Path) -> None:
    """The API server's certificate towards kubelets (logs, exec), from a CA of its own."""
    ca, client = certs / "kubelet-client-ca", certs / "kubelet-client"
    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout")
    ca_subject = "/CN=modeldeploy-testbed-kubelet-client-ca"
    openssl("req", "-x509", *key, f"{ca}.key", "-out", f"{ca}.crt", "-subj", ca_subject)
    client_subject = "/O=system:masters/CN=kube-apiserver-kubelet-client"
    openssl("req", "-new", *key, f"{client}.key", "-out", f"{client}.csr", "-subj", client_subject)
    signer = ("-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial", "-days", "365")
    openssl("x509", "-req", "-in", f"{client}.csr", *signer, "-out", f"{client}.crt")


def write_front_proxy_certificate(certs: Path) -> None:
    """The API server's certificate towards aggregated API servers (metrics-server), from a
    CA of its own: they trust the user it names in its request headers for that CA alone."""
    ca, client = certs / "front-proxy-ca", certs / "front-proxy-client"
    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout")
    ca_subject = "/CN=modeldeploy-testbed-front-proxy-ca"
    openssl("req", "-x509", *key, f"{ca}.key", "-out", f"{ca}.crt", "-subj", ca_subject)
    client_subject = f"/CN={FRONT_PROXY_CLIENT}"
    openssl("req", "-new", *key, f"{client}.key", "-out", f"{client}.csr", "-subj", client_subject)
    signer = ("-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial", "-days", "365")
    openssl("x509", "-req", "-in", f"{client}.csr", *signer, "-out", f"{client}.crt")


def front_proxy_flags(certs: Path) -> list[str]:
    """The aggregation layer: the API server proxies /apis/metrics.k8s.io to metrics-server
    as FRONT_PROXY_CLIENT, the user in the X-Remote-* headers, and dials the Service's
    endpoint address itself (no kube-proxy on the host)."""
    return [
        f"--requestheader-client-ca-file={certs / 'front-proxy-ca.crt'}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={certs / 'front-proxy-client.crt'}",
        f"--proxy-client-key-file={certs / 'front-proxy-client.key'}",
        "--enable-aggregator-routing=true",
    ]


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def start_control_plane(bin_dir: Path, apiserver_flags: Sequence[str] = ()) -> None:
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
    wait_for_component("etcd", lambda: http_ok(f"http://127.0.0.1:{etcd_port}/health"), "etcd", 30)

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
            f"--kubelet-client-certificate={certs / 'kubelet-client.crt'}",
            f"--kubelet-client-key={certs / 'kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP",
            *front_proxy_flags(certs),
            *apiserver_flags,
        ],
    )
    wait_for_component("kube-apiserver /readyz", api_ready, "kube-apiserver", START_TIMEOUT_S)
    write_kubeconfig(KUBECONFIG, "testbed-admin", TOKEN)

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
            f"--config={HERE / 'usage.yaml'}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--node-lease-duration-seconds=40",
            "--cidr=10.244.0.1/16",
            "--node-ip=10.244.0.1",
            f"--server-address=127.0.0.1:{kwok_port}",
            f"--node-port={kwok_port}",  # the fake nodes' kubelet port (stages.yaml)
            "--v=WARN",
        ],
    )


def fake_node(index: int) -> dict[str, Any]:
    name = f"kwok-node-{index}"
    resources: dict[str, str] = {"cpu": "32", "memory": "128Gi", "pods": "110"}
    if index == 0:
        resources["nvidia.com/gpu"] = "1"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                "kwok.x-k8s.io/node": "fake",
                "node.alpha.kubernetes.io/ttl": "0",
                **resource_metrics.node_annotations(name),
            },
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


def default_service_account_exists(namespace: str = "default") -> bool:
    api("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/default")
    return True


def namespace_exists(name: str) -> bool:
    try:
        api("GET", f"/api/v1/namespaces/{name}")
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return False
        raise
    return True


def create_namespace(name: str) -> None:
    """Create namespace `name` and wait for its default ServiceAccount: pods need it."""
    api("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    wait_for(
        lambda: default_service_account_exists(name),
        30,
        f"namespace {name}'s default ServiceAccount",
        tolerate=(urllib.error.HTTPError,),
    )


def install_crd() -> None:
    """modeldeploy's CRD applied (server-side, so it updates in place) and Established."""
    kubectl = ("kubectl", f"--kubeconfig={KUBECONFIG}")
    crd = ROOT / "crds" / "modeldeployment.yaml"
    apply = ("apply", "--server-side", "--force-conflicts", f"--filename={crd}")
    established = ("wait", "--for=condition=Established", "--timeout=60s", f"--filename={crd}")
    for command in (apply, established):
        result = subprocess.run([*kubectl, *command], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise TestbedError(f"kubectl {command[0]} of the CRD failed: {result.stderr.strip()}")


def is_up() -> bool:
    """The control plane runs and answers; the real node is asked about separately."""
    if any(running_pid(name) is None for name in COMPONENTS):
        return False
    try:
        return api_ready()
    except (OSError, urllib.error.URLError, ValueError, KeyError):
        return False


def up(real_node: bool = False, apiserver_flags: Sequence[str] = ()) -> None:
    """Start the control plane and the kwok nodes (if not running); add the real node.
    `apiserver_flags` go to a new API server as well (the benchmarks' audit log)."""
    bin_dir = ensure_binaries()
    if is_up():
        log("the control plane is already running")
        if not resource_metrics.is_up():
            try:
                resource_metrics.up()
            except TestbedError as error:  # the control plane still serves everything else
                log(f"no resource metrics API: {error}")
    else:
        start_cluster(bin_dir, apiserver_flags)
    if real_node and not realnode.is_up():
        realnode.up(bin_dir)
    print(f"Test bed is up. Use it with:\n  export KUBECONFIG={KUBECONFIG}\n  kubectl get nodes")


def start_cluster(bin_dir: Path, apiserver_flags: Sequence[str] = ()) -> None:
    down(quiet=True)
    started = time.monotonic()
    shutil.rmtree(STATE, ignore_errors=True)
    (STATE / "pids").mkdir(parents=True)
    (STATE / "logs").mkdir()
    write_credentials()
    try:
        start_control_plane(bin_dir, apiserver_flags)
        for index in range(3):
            api("POST", "/api/v1/nodes", fake_node(index))
        wait_for_component("3 Ready nodes", lambda: nodes_ready(3), "kwok", START_TIMEOUT_S)
        wait_for_component(
            "the default ServiceAccount",
            default_service_account_exists,
            "kube-controller-manager",
            START_TIMEOUT_S,
        )
        metrics_started = time.monotonic()
        resource_metrics.up()
        log(f"{resource_metrics.NAME} up in {time.monotonic() - metrics_started:.1f} s")
    except (TestbedError, urllib.error.URLError, OSError) as error:
        log(f"start failed: {error}")
        down(quiet=True)
        raise
    log(f"up in {time.monotonic() - started:.1f} s")


def down(quiet: bool = False) -> None:
    """Stop the real node (while the API server can still drain it), then the rest."""
    stopped = realnode.down(quiet=True)
    stopped += [resource_metrics.NAME] if resource_metrics.down() else []
    stopped += [name for name in reversed(COMPONENTS) if stop(name)]
    if not quiet:
        log(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")


def status() -> int:
    for name in (*COMPONENTS, resource_metrics.NAME, *realnode.COMPONENTS):
        pid = running_pid(name)
        print(f"{name:24} {'running, pid ' + str(pid) if pid else 'stopped'}")
    if is_up():
        print(f"API server ready; KUBECONFIG={KUBECONFIG}")
        return 0
    print("test bed is not (fully) up")
    return 1
