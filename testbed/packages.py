"""The Debian packages the test bed, the tests and the demo need: which are missing, and
installing them.

`python3 -m testbed.packages GROUP...` (what `make test` and `make demo` run first)
installs what is missing when run as root, and otherwise stops at once with one
sentence naming the packages and the apt-get command. realnode.preflight asks the
same table. Standard library only: it runs before any venv exists.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys

# group -> {Debian package: the commands (or absolute paths) that show it is installed}
GROUPS: dict[str, dict[str, tuple[str, ...]]] = {
    # the control plane's keys and certificates
    "control-plane": {"openssl": ("openssl",)},
    # the real node: containers, their network and the images' root filesystem
    "real-node": {
        "containerd": ("containerd", "ctr"),
        "runc": ("runc",),
        "iptables": ("iptables",),
        "iproute2": ("ip",),
        "debootstrap": ("debootstrap",),
        "python3-pip": ("/usr/bin/pip3",),  # installs the operator image's packages
        "containernetworking-plugins": tuple(
            f"/usr/lib/cni/{plugin}" for plugin in ("bridge", "host-local", "loopback")
        ),
    },
    # the analysis tests' real Prometheus, the Argo CD health check's Lua interpreter
    "tests": {"prometheus": ("prometheus",), "lua5.4": ("lua5.4",)},
}


def missing(*groups: str) -> list[str]:
    """The Debian packages of `groups` that are not installed, in a stable order."""
    # A user's PATH often lacks the sbin folders where iptables and debootstrap live.
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    return [
        package
        for group in groups
        for package, commands in GROUPS[group].items()
        if any(shutil.which(command, path=path) is None for command in commands)
    ]


def missing_here() -> list[str]:
    """Packages every goal needs from the Python running this: a venv needs ensurepip."""
    return [] if importlib.util.find_spec("ensurepip") else ["python3-venv"]


def apt_get_install(packages: list[str]) -> None:
    """apt-get install `packages`; its progress is left out, its errors are not."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["update"], ["install", "-y", "--no-install-recommends", *packages]):
        subprocess.run(["apt-get", "-qq", *command], stdout=subprocess.DEVNULL, check=True, env=env)


def ensure(groups: list[str]) -> str | None:
    """Install what `groups` need if root; else the sentence saying what to install."""
    needed = missing_here() + missing(*groups)
    if needed and os.geteuid() == 0:
        print(f"packages: installing {' '.join(needed)}", file=sys.stderr, flush=True)
        apt_get_install(needed)
        needed = missing_here() + missing(*groups)
    if needed:
        names = " ".join(needed)
        return f"Debian packages missing: {names}; install them with: sudo apt-get install {names}"
    if shutil.which("kubectl") is None:  # Debian bookworm's kubernetes-client is 1.20
        return "kubectl is missing: install it from the Kubernetes project (pkgs.k8s.io)"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(prog="python3 -m testbed.packages", description=__doc__)
    parser.add_argument("groups", nargs="+", choices=sorted(GROUPS))
    problem = ensure(parser.parse_args().groups)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
