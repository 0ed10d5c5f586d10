"""The test bed's real node: kubelet, containerd and kube-proxy running real containers.

Beside the kwok nodes, one Node whose pods are real processes: containerd and runc
from Debian's packages, CNI bridge networking on a private bridge the test bed
creates, and kube-proxy so Services route for real; pods reach the API server
through the `kubernetes` Service (apiforward.py). Pods land here only with the
toleration for its taint, so kwok-based tests never do. `up` adds it to a running
control plane; `down` stops it and removes what it made: pods, processes, mounts,
the bridge, iptables rules, cgroups, the Service's Endpoints and the Node.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
from pathlib import Path

from testbed import apiforward, images, operator_image, packages
from testbed.processes import (
    START_TIMEOUT_S,
    STATE,
    TestbedError,
    alive,
    api,
    http_ok,
    log,
    running_pid,
    start,
    stop,
    wait_for_component,
    write_kubeconfig,
)
from testbed.support import free_port

NODE = "modeldeploy-real-node"
LABEL_KEY, LABEL_VALUE = "modeldeploy.io/node", "real"
TAINT = {"key": "modeldeploy.io/real-node", "value": "true", "effect": "NoSchedule"}
# What a pod spec needs to run here (ModelDeployment: spec.template).
POD_PLACEMENT = {
    "nodeSelector": {LABEL_KEY: LABEL_VALUE},
    "tolerations": [{"key": TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}],
}
NODE_USER, NODE_TOKEN = f"system:node:{NODE}", "modeldeploy-testbed-node"
PROXY_USER, PROXY_TOKEN = "system:kube-proxy", "modeldeploy-testbed-proxy"
COMPONENTS = ("containerd", "kubelet", "kube-proxy", apiforward.NAME)

BRIDGE, NODE_IP, POD_CIDR = "mdtb0", "10.245.0.1", "10.245.0.0/24"
KUBELET_PORT = 10250
CGROUP_PARENT = "modeldeploy-testbed"  # a cgroup of ours under every hierarchy
CGROUPS = Path("/sys/fs/cgroup")
CNI_BIN = Path("/usr/lib/cni")
SYSCTLS = ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables")
# containerd's shims and CNI's result cache write here whatever the configuration says.
HOST_FOLDERS = (Path("/run/containerd"), Path("/var/lib/cni"))
IPTABLES = ("iptables", "ip6tables")
DIR = STATE / "real-node"
# Sockets need a short path (108 bytes), whatever the checkout's path is.
RUN = Path("/run") / f"modeldeploy-{hashlib.sha256(str(STATE).encode()).hexdigest()[:8]}"
SOCKET = RUN / "containerd.sock"


def token_lines() -> str:
    """The node's and kube-proxy's identities, for the API server's token file."""
    return (
        f'{NODE_TOKEN},{NODE_USER},{NODE_USER},"system:nodes"\n'
        f"{PROXY_TOKEN},{PROXY_USER},{PROXY_USER}\n"
    )


def preflight() -> None:
    """Everything the real node needs from the machine, named, before anything starts."""
    missing = packages.missing("real-node")
    if missing:
        raise TestbedError(
            f"the real node needs Debian packages that are missing: {' '.join(missing)}"
            f" (apt-get install {' '.join(missing)})"
        )
    if os.geteuid() != 0:
        raise TestbedError("the real node needs root: it runs containerd, runc and a kubelet")
    if "overlay" not in Path("/proc/filesystems").read_text():
        raise TestbedError("the real node needs the overlay filesystem in the kernel")
    if not (CGROUPS / "memory").is_dir() and not (CGROUPS / "cgroup.controllers").exists():
        raise TestbedError(f"no memory cgroup under {CGROUPS}: containers need one")


def is_up() -> bool:
    return all(running_pid(name) is not None for name in COMPONENTS)


def up(bin_dir: Path) -> None:
    """Add the real node to the running control plane; TestbedError says why it could not."""
    preflight()
    try:
        archives = (images.archive(bin_dir / "pause"), operator_image.archive())
        started = time.monotonic()
        down(quiet=True)
        for folder in (DIR, RUN):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        remember_host()
        write_cni_config()
        make_bridge()
        start_containerd()
        import_images(archives)
        make_cgroup_parent()
        start_kubelet(bin_dir)
        start_kube_proxy(bin_dir)
        apiforward.serve(NODE_IP)
    except (TestbedError, urllib.error.URLError, OSError, subprocess.CalledProcessError) as error:
        down(quiet=True)
        detail = getattr(error, "stderr", None) or ""
        raise TestbedError(f"the real node did not start: {error} {detail}".strip()) from error
    log(f"real node {NODE} up in {time.monotonic() - started:.1f} s")


def remember_host() -> None:
    """What the node changes on the machine, as it was before: `down` puts it back.

    The bridge plugin and kube-proxy turn sysctls on; the kubelet and kube-proxy add
    iptables chains (all named KUBE-*); containerd and CNI create host folders.
    """
    host = {
        "sysctls": {name: (Path("/proc/sys") / name).read_text().strip() for name in SYSCTLS},
        "chains": {tool: sorted(kube_chains(iptables_save(tool))) for tool in IPTABLES},
        "absent": [str(folder) for folder in HOST_FOLDERS if not folder.exists()],
    }
    (DIR / "host.json").write_text(json.dumps(host))


def iptables_save(tool: str) -> str:
    return subprocess.run([f"{tool}-save"], capture_output=True, text=True, check=True).stdout


def kube_chains(dump: str) -> set[str]:
    return {line[1:].split()[0] for line in dump.splitlines() if line.startswith(":KUBE-")}


def make_bridge() -> None:
    # The node's address lives on the bridge, so the kubelet and the API server talk
    # over it and nothing binds to the machine's own interfaces.
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        claim_stale_bridge()
    ip("link", "add", BRIDGE, "type", "bridge")
    ip("addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
    ip("link", "set", BRIDGE, "up")


def claim_stale_bridge() -> None:
    """The bridge is there though our node is down: another checkout's real node owns it
    (one real node per machine: the bridge, its address and kube-proxy's chains are
    shared), or one that died without `down` left it behind, and then it is ours."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
            continue
        if argv[0].endswith(b"/kubelet") and DIR.name.encode() in b" ".join(argv):
            raise TestbedError(
                f"another test bed's real node runs on this machine (kubelet pid {proc.name}:"
                f" {argv[0].decode(errors='replace')}); one real node per machine: stop it"
                " with `python3 -m testbed down` in its checkout"
            )
    ip("link", "del", BRIDGE)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def write_cni_config() -> None:
    (DIR / "cni").mkdir()
    (DIR / "cni" / "10-modeldeploy.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "modeldeploy-testbed",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": BRIDGE,
                        "isGateway": True,
                        "ipMasq": False,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                            # Service ClusterIPs are off the pod subnet: through the node,
                            # where kube-proxy's rules are (the API server's, say).
                            "routes": [{"dst": "0.0.0.0/0"}],
                            "dataDir": str(DIR / "ipam"),
                        },
                    }
                ],
            },
            indent=2,
        )
    )


def containerd_config() -> str:
    # restrict_oom_score_adj: where root lacks CAP_SYS_RESOURCE (sandboxed machines), no
    # process may lower its OOM score; containerd then clamps its pods' scores to its own.
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{DIR / "containerd"}"
state = "{RUN / "containerd"}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
]
[grpc]
  address = "{SOCKET}"
[ttrpc]
  address = "{SOCKET}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{DIR / "opt"}"
[{cri}]
  sandbox_image = "{images.PAUSE}"
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{RUN / "runc"}"
[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{DIR / "cni"}"
"""


def start_containerd() -> None:
    config = DIR / "containerd.toml"
    config.write_text(containerd_config())
    start("containerd", ["containerd", "--config", str(config), "--log-level", "warn"])
    wait_for_component(
        "containerd's socket", lambda: ctr("version").returncode == 0, "containerd", 30
    )


def ctr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ctr", "--address", str(SOCKET), "--namespace", "k8s.io", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def import_images(archives: tuple[Path, ...]) -> None:
    for archive in archives:
        result = ctr("images", "import", str(archive))
        if result.returncode != 0:
            raise TestbedError(f"importing {archive} into containerd failed:\n{result.stderr}")
    listed = ctr("images", "list", "--quiet").stdout.split()
    expected = {
        images.PAUSE,
        operator_image.IMAGE,
        *map(images.model_server_image, images.VARIANTS),
    }
    missing = expected - set(listed)
    if missing:
        raise TestbedError(f"containerd did not import {sorted(missing)}; it has {listed}")


def imported_digests() -> dict[str, str]:
    """The images the node's containerd holds, by name: each one's manifest digest."""
    lines = ctr("images", "list").stdout.splitlines()[1:]
    return {line.split()[0]: line.split()[2] for line in lines if len(line.split()) > 2}


def import_archive(archive: Path) -> None:
    """Import an image archive into the running node, unless every image it holds is
    there already with the same manifest: a second call, or a second test session, costs
    one listing. TestbedError if the node is down or containerd refuses it."""
    if running_pid("containerd") is None:
        raise TestbedError(f"the real node is not up: cannot import {archive}")
    wanted = images.manifest_digests(archive)
    have = imported_digests()
    if all(have.get(name) == digest for name, digest in wanted.items()):
        return
    started = time.monotonic()
    result = ctr("images", "import", str(archive))
    if result.returncode != 0:
        raise TestbedError(f"importing {archive} into containerd failed:\n{result.stderr}")
    have = imported_digests()
    missing = sorted(name for name, digest in wanted.items() if have.get(name) != digest)
    if missing:
        raise TestbedError(f"containerd did not import {missing} from {archive}")
    log(f"real node: imported {archive.name} in {time.monotonic() - started:.0f} s")


def cgroup_folders() -> list[Path]:
    """Our cgroup under each cgroup v1 hierarchy, or under the one v2 hierarchy."""
    if (CGROUPS / "cgroup.controllers").exists():
        return [CGROUPS / CGROUP_PARENT]
    return [h / CGROUP_PARENT for h in sorted(CGROUPS.iterdir()) if (h / "cgroup.procs").exists()]


def make_cgroup_parent() -> None:
    for folder in cgroup_folders():
        folder.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):  # v1 cpuset starts empty: no task may join
            if (folder / name).exists() and not (folder / name).read_text().strip():
                (folder / name).write_text((folder.parent / name).read_text())
        controllers = folder / "cgroup.controllers"
        if controllers.exists():  # v2: hand our controllers down to the kubelet's cgroups
            enabled = " ".join(f"+{c}" for c in controllers.read_text().split())
            (folder / "cgroup.subtree_control").write_text(enabled)


def start_kubelet(bin_dir: Path) -> None:
    kubeconfig = DIR / "kubelet.kubeconfig"
    write_kubeconfig(kubeconfig, NODE_USER, NODE_TOKEN)
    health_port = free_port()
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": health_port,
        "containerRuntimeEndpoint": f"unix://{SOCKET}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP_PARENT}",
        "failSwapOn": False,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(STATE / "certs" / "kubelet-client-ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "registerWithTaints": [TAINT],
        "podLogsDir": str(DIR / "pod-logs"),
        "maxPods": 40,
        "serializeImagePulls": False,
        # The machine's disk is shared: never evict or collect images on its account.
        "evictionHard": {"memory.available": "100Mi"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "resolvConf": "/etc/resolv.conf",
        "oomScoreAdj": 0,  # see containerd_config: lowering it needs CAP_SYS_RESOURCE
    }
    (DIR / "kubelet.json").write_text(json.dumps(config, indent=2))
    start(
        "kubelet",
        [
            str(bin_dir / "kubelet"),
            f"--config={DIR / 'kubelet.json'}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={DIR / 'kubelet'}",
            f"--hostname-override={NODE}",
            f"--node-ip={NODE_IP}",
            f"--node-labels={LABEL_KEY}={LABEL_VALUE}",
            "--v=1",
        ],
    )
    wait_for_component(f"Node {NODE} Ready", node_ready, "kubelet", START_TIMEOUT_S)


def node_ready() -> bool:
    node = api("GET", f"/api/v1/nodes/{NODE}")
    assert isinstance(node, dict)
    conditions = node.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def start_kube_proxy(bin_dir: Path) -> None:
    kubeconfig = DIR / "kube-proxy.kubeconfig"
    write_kubeconfig(kubeconfig, PROXY_USER, PROXY_TOKEN)
    health = f"127.0.0.1:{free_port()}"
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE,
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "healthzBindAddress": health,
        "metricsBindAddress": f"127.0.0.1:{free_port()}",
        # Leave the machine's conntrack table sizes and localhost routing as they are.
        "conntrack": {"maxPerCore": 0, "min": 0},
        "iptables": {"localhostNodePorts": False},
        "oomScoreAdj": 0,
    }
    (DIR / "kube-proxy.json").write_text(json.dumps(config, indent=2))
    start("kube-proxy", [str(bin_dir / "kube-proxy"), f"--config={DIR / 'kube-proxy.json'}"])
    wait_for_component("kube-proxy", lambda: http_ok(f"http://{health}/healthz"), "kube-proxy", 60)


# ------------------------------------------------------------------------------ down


def down(quiet: bool = False) -> list[str]:
    """Stop the real node and remove everything it made; the names of what was running."""
    if not DIR.exists() and not RUN.exists():
        return []
    apiforward.unpublish()
    drain()
    stopped = [name for name in (apiforward.NAME, "kube-proxy", "kubelet") if stop(name)]
    kill_containers()
    if stop("containerd"):
        stopped.append("containerd")
    kill_shims()
    unmount_under(RUN, DIR)
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)
    remove_cgroups()
    forget_node()
    restore_host()
    shutil.rmtree(RUN, ignore_errors=True)
    shutil.rmtree(DIR, ignore_errors=True)
    if not quiet and stopped:
        log(f"real node: stopped {', '.join(stopped)}")
    return stopped


def drain() -> None:
    """Cordon the node and delete its pods, so the kubelet tears their sandboxes down."""
    if not alive("kubelet"):
        return
    try:
        api("PATCH", f"/api/v1/nodes/{NODE}", {"spec": {"unschedulable": True}})
        pods = api("GET", f"/api/v1/pods?fieldSelector=spec.nodeName={NODE}")
        assert isinstance(pods, dict)
        for pod in pods["items"]:
            meta = pod["metadata"]
            api(
                "DELETE",
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {"gracePeriodSeconds": 0},
            )
    except (urllib.error.URLError, OSError) as error:
        log(f"real node: could not drain through the API ({error}); killing its containers")
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and running_tasks():
        time.sleep(0.2)


def running_tasks() -> list[str]:
    lines = ctr("tasks", "list").stdout.splitlines()[1:]
    return [line.split()[0] for line in lines if line.split()[-1:] == ["RUNNING"]]


def kill_containers() -> None:
    """Whatever still runs in our cgroups (a kubelet that died, say) is killed."""
    if running_pid("containerd") is not None:
        for task in running_tasks():
            ctr("tasks", "kill", "--signal", "SIGKILL", task)
    for folder in cgroup_folders():
        for procs in folder.rglob("cgroup.procs") if folder.exists() else ():
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)


def kill_shims() -> None:
    """containerd's shims outlive it by design; ours name our socket on their command line."""
    marker = str(SOCKET).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            continue


def unmount_under(*folders: Path) -> None:
    """Unmount what the kubelet and containerd mounted under our folders, deepest first."""
    prefixes = tuple(f"{folder}/" for folder in folders)
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    ours = sorted((m for m in mounts if m.startswith(prefixes)), key=len, reverse=True)
    for mount in ours:
        subprocess.run(["umount", "--lazy", mount], capture_output=True, check=False)


def remove_cgroups() -> None:
    for folder in cgroup_folders():
        if not folder.exists():
            continue
        deadline = time.monotonic() + 10
        for parent, _, _ in os.walk(folder, topdown=False):  # children before parents
            # A cgroup is busy until the kernel has reaped its last task.
            while Path(parent).is_dir():
                try:
                    Path(parent).rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)


def forget_node() -> None:
    # If the control plane is gone, the Node went with it.
    with contextlib.suppress(urllib.error.URLError, OSError):
        api("DELETE", f"/api/v1/nodes/{NODE}")


def restore_host() -> None:
    try:
        host = json.loads((DIR / "host.json").read_text())
    except FileNotFoundError:
        return
    for name, value in host["sysctls"].items():
        (Path("/proc/sys") / name).write_text(value)
    for tool, before in host["chains"].items():
        remove_chains(tool, kube_chains(iptables_save(tool)) - set(before))
    for folder in map(Path, host["absent"]):
        for parent, _, _ in os.walk(folder, topdown=False):
            with contextlib.suppress(OSError):  # only what is empty: files mean someone else's
                Path(parent).rmdir()


def remove_chains(tool: str, chains: set[str]) -> None:
    """Drop `chains` and every rule that names them, leaving the rest as it is."""
    if not chains:
        return
    kept = [
        line
        for line in iptables_save(tool).splitlines()
        if not chains.intersection(line.lstrip(":").split())
    ]
    subprocess.run(
        [f"{tool}-restore"],
        input="\n".join(kept) + "\n",
        text=True,
        check=True,
        capture_output=True,
    )
