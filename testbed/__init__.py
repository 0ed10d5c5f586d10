"""The local test bed: a real Kubernetes control plane on 127.0.0.1, no Docker needed.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler built from Go modules
(build.sh, go/), kwok's fake nodes, and optionally one real node (kubelet, containerd,
kube-proxy) running the reference model server (modelserver/). `python -m testbed
up|down|status|build` drives it; the e2e tests, the demo and the benchmarks use it and
share its helpers (support.py). The bed itself is standard library only, so it runs
before any virtual environment exists.
"""
