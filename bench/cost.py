"""Reconcile cost end to end: a resource with 1,000 versions against one with 10.

Each reconcile is a real one against the API server: the bench changes
`spec.rollout.progressDeadlineSeconds` (the Deployment's spec changes, its pods do
not), the operator receives the watch event, decodes the whole resource, decides,
applies the Deployment and writes status. Its latency is the audit log's time from
the bench's patch to the operator's first status write after it; its CPU is the
operator's CPU over a block of reconciles of one size (one reconcile at a time, the
operator otherwise idle), divided by the block's reconciles. The two sizes take
turns, block by block, so a noisy neighbour lands on both alike.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path
from typing import Any

from bench.apiserver import AuditLog, Request
from bench.cluster import GOOD, JSON, Bed, Watcher, cpu_seconds, serving
from bench.profile import Profile, summarize
from bench.stats import summary
from modeldeploy import constants as c
from testbed.support import OperatorProcess, wait_for

SIZES = (10, 1000)
BLOCK = 5


class Generations(Watcher):
    """Each resource's latest body, as the watch shows it."""

    def __init__(self, bed: Bed) -> None:
        super().__init__(bed.list_models, self._on_event)
        self.bodies: dict[str, JSON] = {}

    def _on_event(self, kind: str, body: JSON, at: float) -> None:
        self.bodies[body["metadata"]["name"]] = body

    def observed(self, name: str, generation: int) -> bool:
        status = self.bodies.get(name, {}).get("status") or {}
        return int(status.get("observedGeneration") or 0) >= generation


def latency_ms(requests: list[Request], name: str, after: float) -> float | None:
    """From the bench's patch of `name` (at or after `after`) to the operator's first
    status write after it."""
    mine = [r for r in requests if r.name == name and r.resource == c.PLURAL and r.at >= after]
    patch = next((r for r in mine if r.client == "bench" and not r.subresource), None)
    if patch is None:
        return None
    status = next(
        (
            r
            for r in mine
            if r.client == "modeldeploy" and r.subresource == "status" and r.at > patch.at
        ),
        None,
    )
    return None if status is None else (status.at - patch.at) * 1000


class Rounds:
    """The reconciles of one run, by size: who was changed when, CPU, stacks."""

    def __init__(self, bed: Bed, seen: Generations, pid: int) -> None:
        self.bed, self.seen, self.pid = bed, seen, pid
        self.timed: dict[int, list[tuple[str, float]]] = {size: [] for size in SIZES}
        self.cpu: dict[int, float] = dict.fromkeys(SIZES, 0.0)
        self.stacks: dict[int, str] = dict.fromkeys(SIZES, "")
        self.changes = 0

    def block(self, size: int, names: list[str], rng: random.Random) -> None:
        """BLOCK reconciles of resources of `size` versions, one at a time."""
        before = cpu_seconds(self.pid)
        with Profile(self.pid) as profile:
            for _ in range(BLOCK):
                self.one(rng.choice(names), size)
            time.sleep(0.3)  # the last status write's own watch event, handled
        self.cpu[size] += cpu_seconds(self.pid) - before
        self.stacks[size] += profile.raw

    def one(self, name: str, size: int) -> None:
        generation = self.seen.bodies[name]["metadata"]["generation"] + 1
        self.changes += 1
        deadline = 301 + self.changes % 200  # a new value each time: a new generation
        at = time.time()
        self.bed.patch_model(name, {"spec": {"rollout": {"progressDeadlineSeconds": deadline}}})
        wait_for(lambda: self.seen.observed(name, generation), 30, f"{name} reconciled")
        self.timed[size].append((name, at))


def reconcile_cost(
    audit: AuditLog | None, per_size: int, resources: int, log_dir: Path
) -> dict[str, Any]:
    """`per_size` reconciles of each size over `resources` resources of each size."""
    bed = Bed("cost")
    bed.create_namespace()
    operator = OperatorProcess(log_dir / "operator-cost.log", "--namespace", bed.namespace)
    names = {size: [f"v{size}-{i}" for i in range(resources)] for size in SIZES}
    for size, group in names.items():
        for name in group:
            bed.model(name, {f"v{k + 1}": GOOD for k in range(size)})
    operator.start()
    rng = random.Random(4)  # noqa: S311 - an order, not a secret
    try:
        with Generations(bed) as seen:
            everyone = [n for group in names.values() for n in group]
            wait_for(
                lambda: all(n in seen.bodies and serving(seen.bodies[n]) for n in everyone),
                300,
                "the resources settled",
            )
            mark = audit.mark() if audit else 0
            rounds = Rounds(bed, seen, operator.pid)
            for _ in range(0, per_size, BLOCK):
                for size in rng.sample(SIZES, len(SIZES)):
                    rounds.block(size, names[size], rng)
            requests = audit.since(mark, [bed.namespace]) if audit else []
    finally:
        operator.stop()
        bed.delete_namespace()
    return figures(rounds, requests, per_size)


def figures(rounds: Rounds, requests: list[Request], per_size: int) -> dict[str, Any]:
    small, large = SIZES
    latency = {
        size: [
            ms
            for name, after in rounds.timed[size]
            if (ms := latency_ms(requests, name, after)) is not None
        ]
        for size in SIZES
    }
    cpu_ms = {size: rounds.cpu[size] / max(1, len(rounds.timed[size])) * 1000 for size in SIZES}
    found: dict[str, Any] = {
        f"{size}_versions": {
            "latency_ms": summary(latency[size]),
            "cpu_ms_per_reconcile": round(cpu_ms[size], 1),
            "api_server_ms_per_request": server_time(requests, rounds.timed[size]),
            "profile": summarize(rounds.stacks[size]) if rounds.stacks[size] else None,
        }
        for size in SIZES
    }
    ratio = None
    if latency[small] and latency[large]:
        ratio = round(statistics.median(latency[large]) / statistics.median(latency[small]), 2)
    found["latency_ratio_p50"] = ratio
    found["cpu_ratio"] = round(cpu_ms[large] / cpu_ms[small], 2) if cpu_ms[small] else None
    found["reconciles_per_size"] = per_size
    return found


def server_time(requests: list[Request], timed: list[tuple[str, float]]) -> dict[str, float]:
    """The API server's median time per request on these resources, by client and kind."""
    names = {name for name, _ in timed}
    first = min((at for _, at in timed), default=0.0)
    took: dict[str, list[float]] = {}
    for r in requests:
        if r.at >= first and r.write and (r.name in names):
            took.setdefault(f"{r.client} {r.verb} {r.kind}", []).append(r.took_ms)
    return {key: round(statistics.median(v), 1) for key, v in sorted(took.items())}
