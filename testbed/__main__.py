"""`python -m testbed up|down|status|build [--real-node]`: the test bed from a shell.

`make cluster`, `make cluster-down` and `make cluster-status` call this; the state
(pids, logs, kubeconfig) lives in `.cluster/` or MODELDEPLOY_CLUSTER_DIR.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from testbed import cluster, images, operator_image, realnode
from testbed.processes import TestbedError, log


def build_real_node_images(bin_dir: Path) -> None:
    """The real node's images (the model server's and the operator's), built now (minutes,
    once) rather than when it first starts.

    Where the real node cannot run (no root, say) there is nothing to build for it:
    that is said, and `up --real-node` fails later with the same reason.
    """
    try:
        realnode.preflight()
    except TestbedError as error:
        log(f"not building the real node's images: {error}")
        return
    images.archive(bin_dir / "pause")
    operator_image.archive()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed", description=cluster.__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "build"])
    parser.add_argument(
        "--real-node",
        action="store_true",
        help="up: also start a real node (kubelet, containerd, kube-proxy; needs root);"
        " build: also build its images",
    )
    args = parser.parse_args()
    try:
        if args.command == "up":
            cluster.up(real_node=args.real_node)
        elif args.command == "down":
            cluster.down()
        elif args.command == "build":
            bin_dir = cluster.ensure_binaries()
            if args.real_node:
                build_real_node_images(bin_dir)
        else:
            return cluster.status()
    except TestbedError as error:
        log(str(error))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
