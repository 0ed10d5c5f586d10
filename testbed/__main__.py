"""`python -m testbed up|down|status|build [--real-node]`: the test bed from a shell.

`make cluster`, `make cluster-down` and `make cluster-status` call this; the state
(pids, logs, kubeconfig) lives in `.cluster/` or MODELDEPLOY_CLUSTER_DIR.
"""

from __future__ import annotations

import argparse
import sys

from testbed import cluster
from testbed.processes import TestbedError, log


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed", description=cluster.__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "build"])
    parser.add_argument(
        "--real-node",
        action="store_true",
        help="up: also start a real node (kubelet, containerd, kube-proxy; needs root)",
    )
    args = parser.parse_args()
    try:
        if args.command == "up":
            cluster.up(real_node=args.real_node)
        elif args.command == "down":
            cluster.down()
        elif args.command == "build":
            cluster.ensure_binaries()
        else:
            return cluster.status()
    except TestbedError as error:
        log(str(error))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
