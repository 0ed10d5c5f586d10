"""Releases on a full GPU pool (B23; docs/capacity.md): Replace and Auto against Surge.

A pool of N kwok nodes with one `nvidia.com/gpu` each (tainted and labelled for the
bench's namespace), a model of N replicas asking one GPU a pod: the pool is full. Per
strategy and pool size: the time from selecting a healthy v2 to v2 being the last good
version, and from selecting a crash-looping v3 to v2 serving in full again after the
revert; with the least share of the N pods Ready at any moment of each (polled every
0.2 s). The baseline is Surge with one spare GPU (N + 1 nodes), today's behaviour; Surge
on a full pool never finishes a release by design (it waits for room, B23), so it is not
timed here.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.cluster import JSON, Bed, log
from testbed.manifests import GPU, gpu_node, model_deployment, pool_placement
from testbed.support import OperatorProcess, wait_for

SIZES = (4, 16)
CASES = (("Surge", 1), ("Replace", 0), ("Auto", 0))  # (strategy, spare GPUs)
GOOD, GOOD_V2 = "registry.example/fraud:1.0", "registry.example/fraud:2.0"
CRASH = "registry.example/fraud:3-crashloop"


def add_pool(bed: Bed, count: int) -> list[str]:
    names = [f"gpu-{bed.namespace}-{i}" for i in range(count)]
    for name in names:
        bed.core.create_node(gpu_node(name, bed.namespace))
    return names


def remove_pool(bed: Bed, names: list[str]) -> None:
    for name in names:
        bed.core.delete_node(name)


def model(bed: Bed, name: str, replicas: int, strategy: str) -> JSON:
    versions = {"v1": GOOD, "v2": GOOD_V2, "v3": CRASH}
    body = model_deployment(
        name,
        versions,
        "v1",
        replicas,
        resources={v: {"limits": {GPU: 1}} for v in versions},
        strategy=strategy,
        maxUnavailable=1,
    )
    body["spec"]["template"] = pool_placement(bed.namespace)
    return body


def ready_pods(bed: Bed, name: str) -> int:
    pods = bed.list_pods(label_selector=f"modeldeploy.io/name={name}").items
    return sum(
        1
        for p in pods
        if p.metadata.deletion_timestamp is None
        and any(k.type == "Ready" and k.status == "True" for k in p.status.conditions or ())
    )


def timed(bed: Bed, name: str, replicas: int, done: Callable[[JSON], bool]) -> tuple[float, float]:
    """Seconds until `done`, and the least share of `replicas` Ready on the way."""
    began, least = time.monotonic(), 1.0
    while True:
        least = min(least, ready_pods(bed, name) / replicas)
        if done(bed.get_model(name)):
            return time.monotonic() - began, least
        if time.monotonic() - began > 600:
            raise TimeoutError(f"{name}: not done in 600 s")
        time.sleep(0.2)


def released(version: str) -> Callable[[JSON], bool]:
    def check(body: JSON) -> bool:
        return bool((body.get("status") or {}).get("lastGoodVersion") == version)

    return check


def back_on(version: str) -> Callable[[JSON], bool]:
    def check(body: JSON) -> bool:
        status = body.get("status") or {}
        history = status.get("history") or [{}]
        return bool(
            body["spec"]["activeVersion"] == version
            and (history[0].get("version"), history[0].get("outcome")) == (version, "Succeeded")
        )

    return check


def one_case(bed: Bed, size: int, strategy: str, spare: int, i: int) -> dict[str, Any]:
    nodes = add_pool(bed, size + spare)
    name = f"{strategy.lower()}-{size}-{i}"
    try:
        bed.create_model(model(bed, name, size, strategy))
        wait_for(lambda: released("v1")(bed.get_model(name)), 300, f"{name}: v1")
        bed.select(name, "v2")
        release_s, release_least = timed(bed, name, size, released("v2"))
        bed.select(name, "v3")
        recover_s, recover_least = timed(bed, name, size, back_on("v2"))
        bed.delete_model(name)
    finally:
        remove_pool(bed, nodes)
    return {
        "release_s": round(release_s, 2),
        "release_min_ready_ratio": round(release_least, 3),
        "recover_s": round(recover_s, 2),
        "recover_min_ready_ratio": round(recover_least, 3),
    }


def capacity(samples: int, log_dir: Any) -> dict[str, Any]:
    """`samples` of each (size, strategy) case, summarized per case."""
    bed = Bed("capacity")
    bed.create_namespace()
    operator = OperatorProcess(log_dir / "operator-capacity.log", "--namespace", bed.namespace)
    found: dict[str, list[dict[str, Any]]] = {}
    try:
        operator.start()
        for i in range(samples):
            for size in SIZES:
                for strategy, spare in CASES:
                    key = f"{strategy.lower()}_{size}" + ("_spare" if spare else "_full")
                    sample = one_case(bed, size, strategy, spare, i)
                    log(f"capacity: {key} {sample}")
                    found.setdefault(key, []).append(sample)
    finally:
        operator.stop()
        bed.delete_namespace()
    return {key: aggregate(runs) for key, runs in found.items()} | {
        "config": "kwok nodes of one nvidia.com/gpu each, replicas = N, one GPU a pod, "
        "maxUnavailable 1; Surge with one spare GPU as the baseline; v3 crash-loops"
    }


def aggregate(found: list[dict[str, Any]]) -> dict[str, Any]:
    """Per case: the median time of its samples and the least share Ready in any of them
    (one sample a run by default, so `--runs 3` gives each figure's three values)."""
    return {
        "samples": len(found),
        "release_s": statistics.median(f["release_s"] for f in found),
        "release_min_ready_ratio": min(f["release_min_ready_ratio"] for f in found),
        "recover_s": statistics.median(f["recover_s"] for f in found),
        "recover_min_ready_ratio": min(f["recover_min_ready_ratio"] for f in found),
    }
