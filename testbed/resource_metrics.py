"""The resource metrics API (metrics.k8s.io) on the test bed: a real metrics-server.

metrics-server, built from its Go module (build-tool.sh), scrapes each node's kubelet
resource metrics: for the fake nodes, kwok's server, which says what each simulated pod
uses (usage.yaml: a pod's `kwok.x-k8s.io/usage-cpu` annotation). The API server's
aggregation layer (cluster.front_proxy_flags) reaches it through an APIService, a
Service and its Endpoints and EndpointSlice. An endpoint may not be a loopback address,
so metrics-server listens on the host's own address (`host_address`), behind
authentication: only the API server's front-proxy certificate or a token the API
server accepts gets an answer. HorizontalPodAutoscalers and `kubectl top` read it.
Standard library only.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import subprocess
import urllib.error
from pathlib import Path

from testbed.processes import (
    KUBECONFIG,
    START_TIMEOUT_S,
    STATE,
    TestbedError,
    api,
    running_pid,
    start,
    stop,
    wait_for_component,
)
from testbed.support import build_tool

NAME = "metrics-server"
NAMESPACE = "kube-system"
SERVICE = "metrics-server"
API_SERVICE = "v1beta1.metrics.k8s.io"
RESOLUTION = "10s"  # how often it scrapes; metrics-server's least
SERVICES = f"/api/v1/namespaces/{NAMESPACE}/services"
ENDPOINTS = f"/api/v1/namespaces/{NAMESPACE}/endpoints"
SLICES = f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices"
API_SERVICES = "/apis/apiregistration.k8s.io/v1/apiservices"
AUTHENTICATION = f"/api/v1/namespaces/{NAMESPACE}/configmaps/extension-apiserver-authentication"
SKIP_MIRROR = "endpointslice.kubernetes.io/skip-mirror"  # we write the EndpointSlice ourselves


def node_annotations(node: str) -> dict[str, str]:
    """What a fake node carries so that metrics-server finds its resource metrics: the path
    at which kwok serves them (usage.yaml), at its ExternalIP and port (stages.yaml)."""
    return {"metrics.k8s.io/resource-metrics-path": f"/metrics/nodes/{node}/metrics/resource"}


def ensure_binary() -> Path:
    """metrics-server's binary, built once from its pinned module (minutes cold)."""
    try:
        return build_tool(NAME)
    except subprocess.CalledProcessError:
        raise TestbedError(f"{NAME} failed to build (see the build output above)") from None


def is_up() -> bool:
    return running_pid(NAME) is not None


def up() -> None:
    """Start metrics-server and register it as metrics.k8s.io; wait until the API server
    calls the APIService Available."""
    binary = ensure_binary()
    if not aggregation_enabled():
        raise TestbedError(
            "the running API server has no aggregation layer (front-proxy) flags: it was "
            "started before the test bed served the resource metrics API; restart the "
            "test bed (down, then up) to get them"
        )
    certs = STATE / "certs"
    if not (certs / f"{NAME}.crt").exists():
        write_serving_certificate(certs)
    address = host_address()
    port = free_port_on(address)
    start(
        NAME,
        [
            str(binary),
            f"--kubeconfig={KUBECONFIG}",
            f"--authentication-kubeconfig={KUBECONFIG}",
            f"--authorization-kubeconfig={KUBECONFIG}",
            f"--bind-address={address}",
            f"--secure-port={port}",
            f"--tls-cert-file={certs / f'{NAME}.crt'}",
            f"--tls-private-key-file={certs / f'{NAME}.key'}",
            # Fake nodes' kubelet is kwok's test server: a certificate no CA signed.
            "--kubelet-insecure-tls",
            "--kubelet-use-node-status-port",
            # Fake nodes: their ExternalIP, kwok on loopback (stages.yaml); the real node:
            # its InternalIP on the bridge, where its kubelet listens.
            "--kubelet-preferred-address-types=ExternalIP,InternalIP",
            f"--metric-resolution={RESOLUTION}",
            "--kubelet-request-timeout=5s",  # under 90 % of the resolution
        ],
    )
    publish(address, port, (certs / f"{NAME}-ca.crt").read_bytes())
    wait_for_component(f"the APIService {API_SERVICE} Available", available, NAME, START_TIMEOUT_S)


def down() -> bool:
    """Stop metrics-server; the control plane stops with it (cluster.down)."""
    return stop(NAME)


def aggregation_enabled() -> bool:
    """The API server trusts a front-proxy CA: it was started with cluster.front_proxy_flags."""
    try:
        config = api("GET", AUTHENTICATION)
    except urllib.error.HTTPError as error:
        if error.code == 404:  # published only when the API server has some of those flags
            return False
        raise
    assert isinstance(config, dict)
    return "requestheader-client-ca-file" in (config.get("data") or {})


def host_address() -> str:
    """The host's IPv4 address on its default route (no packet is sent), else its first
    global address: where the API server can reach metrics-server through an endpoint."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("203.0.113.1", 9))  # TEST-NET-3: any routed address would do
        address = str(probe.getsockname()[0])
        if not address.startswith("127."):
            return address
    shown = subprocess.run(
        ["ip", "-4", "-oneline", "address", "show", "scope", "global"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for line in shown.splitlines():
        fields = line.split()
        if "inet" in fields and not fields[1].startswith("mdtb"):  # not the real node's bridge
            return fields[fields.index("inet") + 1].split("/")[0]
    raise TestbedError("no non-loopback IPv4 address on this host for metrics-server")


def free_port_on(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def write_serving_certificate(certs: Path) -> None:
    """metrics-server's serving certificate for its Service's name, from a CA of its own
    that the APIService names (caBundle), so the API server checks whom it talks to."""
    ca, server = certs / f"{NAME}-ca", certs / NAME
    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout")
    openssl("req", "-x509", *key, f"{ca}.key", "-out", f"{ca}.crt", "-subj", f"/CN={NAME}-ca")
    dns = f"{SERVICE}.{NAMESPACE}.svc"
    openssl(
        *("req", "-new", *key, f"{server}.key", "-out", f"{server}.csr", "-subj", f"/CN={dns}"),
        *("-addext", f"subjectAltName=DNS:{dns}"),
    )
    signer = ("-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial", "-days", "365")
    openssl(
        *("x509", "-req", "-in", f"{server}.csr", *signer, "-out", f"{server}.crt"),
        *("-copy_extensions", "copy"),
    )


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def publish(address: str, port: int, ca: bytes) -> None:
    """The Service, its Endpoints (what the aggregation layer reads in v1.33) and
    EndpointSlice at `address`:`port`, and the APIService; earlier ones replaced."""
    unpublish()
    named_port = {"name": "https", "port": port, "protocol": "TCP"}
    api(
        "POST",
        SERVICES,
        {
            "metadata": {"name": SERVICE, "namespace": NAMESPACE},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]},
        },
    )
    api(
        "POST",
        ENDPOINTS,
        {
            "metadata": {"name": SERVICE, "namespace": NAMESPACE, "labels": {SKIP_MIRROR: "true"}},
            "subsets": [{"addresses": [{"ip": address}], "ports": [named_port]}],
        },
    )
    api(
        "POST",
        SLICES,
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": SERVICE,
                "namespace": NAMESPACE,
                "labels": {"kubernetes.io/service-name": SERVICE},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
            "ports": [named_port],
        },
    )
    api(
        "POST",
        API_SERVICES,
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": API_SERVICE},
            "spec": {
                "group": "metrics.k8s.io",
                "version": "v1beta1",
                "service": {"name": SERVICE, "namespace": NAMESPACE, "port": 443},
                "caBundle": base64.b64encode(ca).decode(),
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    )


def unpublish() -> None:
    """What `publish` wrote, removed (if the API server still answers)."""
    for path in (
        f"{API_SERVICES}/{API_SERVICE}",
        f"{SLICES}/{SERVICE}",
        f"{ENDPOINTS}/{SERVICE}",
        f"{SERVICES}/{SERVICE}",
    ):
        with contextlib.suppress(urllib.error.URLError, OSError):  # 404 is an HTTPError too
            api("DELETE", path)


def available() -> bool:
    service = api("GET", f"{API_SERVICES}/{API_SERVICE}")
    assert isinstance(service, dict)
    return any(
        c["type"] == "Available" and c["status"] == "True"
        for c in service.get("status", {}).get("conditions", [])
    )
