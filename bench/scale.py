"""Scale against the control plane itself, in one run.

1. The baseline: the Deployments and Services modeldeploy would render for `count`
   ModelDeployments, applied with `kubectl apply --server-side` into a namespace of
   their own; timed until every Deployment is Available. Then that namespace goes.
2. The same `count` as ModelDeployments, applied the same way while the operator
   runs; timed until every one reports Ready on v1 (and its Deployment Available).
   The operator's requests are counted from the audit log per new resource.
3. The operator restarted with the resources settled: how long until it is idle,
   and what it wrote meanwhile (per unchanged resource). Restarted again, with bad
   releases made right after it started.
4. Bad releases one at a time among the settled resources, then many at once.

The observer keeps one watch per kind open (no polling lists); it runs in this
process, whose CPU is recorded beside the measured ones.
"""

from __future__ import annotations

import json
import random
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.apiserver import AuditLog, count, writes
from bench.cluster import (
    CRASHLOOP,
    GOOD,
    JSON,
    Bed,
    Usage,
    Watcher,
    add_nodes,
    control_plane_cpu,
    cpu_seconds,
    cpu_since,
    log,
    memory_mb,
    model_body,
    own_cpu_seconds,
    remove_nodes,
    serving,
    wait_namespace_gone,
)
from bench.profile import Profile
from bench.samples import Tracker, by_case
from modeldeploy.core.render import render_deployment, render_service, template_hash
from modeldeploy.model.resource import parse_resource
from testbed.support import OperatorProcess, WaitTimeout, wait_for

REPLICAS = 3


def deployment_available(body: JSON) -> bool:
    status = body.get("status") or {}
    replicas = body["spec"]["replicas"]
    return bool(
        status.get("observedGeneration") == body["metadata"]["generation"]
        and status.get("updatedReplicas") == replicas
        and status.get("availableReplicas") == replicas
        and status.get("replicas") == replicas
    )


class Census(Watcher):
    """How many objects of one kind meet `done`, and when the last of `expected` did."""

    def __init__(
        self, list_call: Callable[..., Any], done: Callable[[JSON], bool], expected: int
    ) -> None:
        super().__init__(list_call, self._on_event)
        self.done, self.expected = done, expected
        self.met: set[str] = set()
        self.all_at: float | None = None
        self.lock = threading.Lock()

    def _on_event(self, kind: str, body: JSON, at: float) -> None:
        name = body["metadata"]["name"]
        with self.lock:
            if kind != "DELETED" and self.done(body):
                self.met.add(name)
            else:
                self.met.discard(name)
            if self.all_at is None and len(self.met) >= self.expected:
                self.all_at = at

    def wait(self, timeout: float, what: str) -> float:
        wait_for(lambda: self.all_at is not None, timeout, f"{what} ({len(self.met)} so far)")
        assert self.all_at is not None
        return self.all_at


def models(count_: int, prefix: str = "scale") -> list[JSON]:
    """`count_` ModelDeployments on v1, each with a crash-looping v2 for later."""
    return [
        model_body(f"{prefix}-{i}", {"v1": GOOD, "v2": CRASHLOOP}, replicas=REPLICAS)
        for i in range(count_)
    ]


def rendered(body: JSON, namespace: str) -> list[JSON]:
    """What modeldeploy renders for `body`, without the owner (there is none)."""
    body = {**body, "metadata": {**body["metadata"], "namespace": namespace, "uid": "-"}}
    resource = parse_resource(body)
    spec = resource.spec
    assert not isinstance(spec, Exception)
    digest = template_hash(resource.name, spec, spec.active)
    children = [
        render_deployment(resource, spec, spec.active, digest),
        render_service(resource, spec),
    ]
    for child in children:
        del child["metadata"]["ownerReferences"]
    return children


def kubectl_apply(items: list[JSON], namespace: str) -> float:
    """`kubectl apply --server-side` of all `items` in one call; seconds it took."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as out:
        json.dump({"apiVersion": "v1", "kind": "List", "items": items}, out)
    started = time.time()
    subprocess.run(
        ["kubectl", "apply", "--server-side", "-n", namespace, "-f", out.name],
        check=True,
        capture_output=True,
    )
    Path(out.name).unlink()
    return time.time() - started


def baseline(count_: int) -> dict[str, Any]:
    """The control plane alone: kubectl applies the rendered children; all Available."""
    bed = Bed("baseline")
    bed.create_namespace()
    children = [child for body in models(count_) for child in rendered(body, bed.namespace)]
    cpu_before = control_plane_cpu()
    with Census(bed.list_deployments, deployment_available, count_) as available:
        started = time.time()
        applied_s = kubectl_apply(children, bed.namespace)
        done = available.wait(120 + count_ * 0.5, f"{count_} Deployments Available")
    figures = {
        "kubectl_baseline_s": round(done - started, 1),
        "kubectl_apply_s": round(applied_s, 1),
        "cpu_seconds": cpu_since(cpu_before),
    }
    log(f"scale: kubectl baseline {figures}")
    bed.delete_namespace()
    wait_namespace_gone(bed, bed.namespace, 300 + count_ * 0.3)
    return figures


def idle_after(pid: int, started: float, quiet_s: float = 2.0, limit_s: float = 120) -> float:
    """Seconds from `started` until process `pid` went quiet: the start of the first
    `quiet_s` window in which it used under 2% of a core (sampled every 0.1 s)."""
    samples: list[tuple[float, float]] = []
    deadline = time.time() + limit_s
    while time.time() < deadline:
        samples.append((time.time(), cpu_seconds(pid)))
        for at, used in samples:
            if samples[-1][0] - at < quiet_s:
                break
            later = [(t, u) for t, u in samples if t >= at]
            window = [(t, u) for t, u in later if t - at <= quiet_s]
            if window[-1][1] - used <= 0.02 * quiet_s and window[-1][0] - at >= quiet_s * 0.95:
                return round(at - started, 2)
        time.sleep(0.1)
    return round(limit_s, 2)


class Scale:
    """One namespace of `count` ModelDeployments under an operator of its own."""

    def __init__(self, count_: int, audit: AuditLog | None, log_dir: Path) -> None:
        self.count, self.audit = count_, audit
        self.bed = Bed("scale")
        self.operator = OperatorProcess(
            log_dir / "operator-scale.log", "--namespace", self.bed.namespace
        )
        self.names = [f"scale-{i}" for i in range(count_)]
        self.result: dict[str, Any] = {"crs": count_, "pods": count_ * REPLICAS}

    def requests_since(self, mark: int) -> list[Any]:
        return self.audit.since(mark, [self.bed.namespace]) if self.audit else []

    def create(self) -> None:
        """Step 2: kubectl applies the resources while the operator runs."""
        self.bed.create_namespace()
        self.operator.start()
        mark = self.audit.mark() if self.audit else 0
        cpu_before = control_plane_cpu()
        own_before = own_cpu_seconds()
        census_models = Census(self.bed.list_models, serving, self.count)
        reconciled = Census(
            self.bed.list_models,
            lambda m: (
                (m.get("status") or {}).get("observedGeneration") == m["metadata"]["generation"]
            ),
            self.count,
        )
        census_children = Census(self.bed.list_deployments, deployment_available, self.count)
        with census_models, reconciled, census_children:
            started = time.time()
            with Usage(self.operator.pid, since=started) as usage:
                applied_s = kubectl_apply(models(self.count), self.bed.namespace)
                reconciled_at = reconciled.wait(120 + self.count, "all reconciled")
                children_at = census_children.wait(120 + self.count, "children Available")
                available_at = census_models.wait(120 + self.count, "all Ready on v1")
                cpu_during = cpu_since(cpu_before)
                cpu_during["modeldeploy"] = round(cpu_seconds(self.operator.pid), 1)
                cpu_during["bench"] = round(own_cpu_seconds() - own_before, 1)
                idle = idle_after(self.operator.pid, available_at)
        requests = self.requests_since(mark)
        self.result |= {
            "apply_s": round(applied_s, 1),
            "all_reconciled_s": round(reconciled_at - started, 1),
            "children_available_s": round(children_at - started, 1),
            "all_available_s": round(available_at - started, 1),
            "settle_s": idle,
            "cpu_seconds_while_reconciling": cpu_during,
            "operator_rss_mb": round(usage.peak_mb, 1),
            "cpu_seconds": round(usage.samples[-1][2], 1) if usage.samples else None,
            "samples": [[round(t, 1), round(m, 1), round(c, 2)] for t, m, c in usage.samples],
        }
        self.result["api_requests_per_resource"] = {
            "new": count(requests, "modeldeploy", per=self.count),
            "writes_per_new_resource": round(writes(requests, "modeldeploy") / self.count, 2),
        }
        log(f"scale: {self.count} created: {self.result['all_available_s']} s to all Ready")

    def restart(self) -> None:
        """Step 3: stop, start, time to idle, and every request it made meanwhile."""
        self.operator.stop()
        mark = self.audit.mark() if self.audit else 0
        plane_before = control_plane_cpu()
        started = time.time()
        self.operator.start()
        idle = idle_after(self.operator.pid, started)
        requests = self.requests_since(mark)
        self.result["restart_idle_s"] = idle
        # What the time to idle was spent on: the operator's own CPU (from its start,
        # interpreter and imports included) and the rest of the machine's meanwhile.
        self.result["restart_cpu_s"] = {
            "modeldeploy": round(cpu_seconds(self.operator.pid), 1),
            **cpu_since(plane_before),
        }
        self.result["restart_rss_mb"] = round(memory_mb(self.operator.pid, "VmHWM"), 1)
        per = self.result["api_requests_per_resource"]
        per["unchanged_after_restart"] = count(requests, "modeldeploy", per=self.count)
        per["writes_per_unchanged_resource"] = round(
            writes(requests, "modeldeploy") / self.count, 3
        )
        per["writes_after_restart"] = writes(requests, "modeldeploy")
        log(f"scale: restart idle after {idle} s, {per['writes_after_restart']} writes")

    def restart_with_releases(self, bad: int, rng: random.Random) -> None:
        """Restarted again; `bad` releases in the first seconds after it started."""
        self.operator.stop()
        names = self.names[:bad]
        with Tracker(self.bed, self.audit) as tracker:
            self.operator.start()
            first = time.time()
            offsets = sorted(rng.uniform(0, 3) for _ in names)
            for name, offset in zip(names, offsets, strict=True):
                time.sleep(max(0.0, first + offset - time.time()))
                tracker.flip(name, "v2", "crashloop")
            tracker.wait_all_reverted(180)
            found = by_case(tracker.samples())
        self.result["restart_detect_to_revert_ms"] = found["crashloop"]
        self.wait_settled(names)

    def single_releases(self, n: int, rng: random.Random) -> None:
        """One bad release at a time among the settled resources."""
        names = self.names[-n:]
        with Tracker(self.bed, self.audit) as tracker:
            for name in names:
                tracker.flip(name, "v2", "crashloop")
                tracker.wait_all_reverted(60)
                time.sleep(rng.uniform(0.5, 1.5))
            found = by_case(tracker.samples())
        self.result["single_release_detect_to_revert_ms"] = found["crashloop"]
        self.wait_settled(names)

    def releases_at_once(self, n: int, offset: int) -> None:
        names = self.names[offset : offset + n]
        with Tracker(self.bed, self.audit) as tracker:
            for name in names:
                tracker.flip(name, "v2", "crashloop")
            tracker.wait_all_reverted(180)
            found = by_case(tracker.samples())["crashloop"]
        self.result["bad_rollouts"] = n
        self.result["detect_to_revert_ms_at_once"] = found
        self.result["detect_to_revert_p50_ms_under_load"] = found.get("p50")
        self.result["detect_to_revert_p99_ms_under_load"] = found.get("p99")

    def wait_settled(self, names: list[str]) -> None:
        wanted = set(names)

        def done() -> bool:
            items = self.bed.list_models()["items"]
            return wanted <= {m["metadata"]["name"] for m in items if serving(m)}

        wait_for(done, 180, "the released resources settled again")

    def remove(self) -> None:
        self.operator.stop()
        self.bed.delete_namespace()
        wait_namespace_gone(self.bed, self.bed.namespace, 300 + self.count * 0.3)


def scale(audit: AuditLog | None, count_: int, bad: int, singles: int, log_dir: Path) -> JSON:
    """Steps 1-4 with `count_` resources; the figures as latest.json's `scale` holds them."""
    nodes_bed = Bed("nodes")
    added = add_nodes(nodes_bed, count_ * REPLICAS)
    log(f"scale: {len(added)} fake nodes added for {count_ * REPLICAS} pods")
    rng = random.Random(10)  # noqa: S311 - a schedule, not a secret
    run = Scale(count_, audit, log_dir)
    try:
        kubectl = baseline(count_)
        run.create()
        run.restart()
        run.restart_with_releases(bad, rng)
        run.single_releases(singles, rng)
        run.releases_at_once(bad, offset=bad)
    finally:
        run.remove()
        remove_nodes(nodes_bed, added)
    result = run.result
    result["kubectl_baseline_s"] = kubectl["kubectl_baseline_s"]
    result["kubectl_baseline"] = kubectl
    result["modeldeploy_over_kubectl"] = round(
        result["all_available_s"] / kubectl["kubectl_baseline_s"], 2
    )
    result["nodes_added"] = len(added)
    result["single_release_n"] = singles
    result["summary_note"] = (
        "all_available_s: kubectl apply of the ModelDeployments started -> every one Ready on "
        "v1; kubectl_baseline_s: kubectl apply of the same Deployments and Services started "
        "-> every Deployment Available"
    )
    return result


# ------------------------------------------------------------------ the ramp


def ramp(steps: tuple[int, ...], log_dir: Path) -> JSON:
    """ModelDeployments (1 replica) added step by step up to `steps[-1]`, or until a step
    does not settle in time: per step, the time to all Ready, the operator's memory and
    CPU per new resource; then memory per resource extrapolated (a straight line)."""
    total_pods = steps[-1]
    nodes_bed = Bed("nodes")
    added = add_nodes(nodes_bed, total_pods)
    bed = Bed("ramp")
    bed.create_namespace()
    operator = OperatorProcess(log_dir / "operator-ramp.log", "--namespace", bed.namespace)
    operator.start()
    rows: list[JSON] = []
    broke: str | None = None
    have = 0
    try:
        with Census(bed.list_models, serving, 0) as ready:
            for step in steps:
                broke = ramp_step(bed, operator.pid, ready, have, step, rows)
                have = step
                if broke:
                    break
    finally:
        operator.stop()
        bed.delete_namespace()
        wait_namespace_gone(bed, bed.namespace, 900)
        remove_nodes(nodes_bed, added)
    return {"steps": rows, "broke": broke, **extrapolate(rows)}


def ramp_step(
    bed: Bed, pid: int, ready: Census, have: int, step: int, rows: list[JSON]
) -> str | None:
    """From `have` resources to `step`; a row in `rows`; why it broke, if it did."""
    new = [model_body(f"ramp-{i}", {"v1": GOOD}, replicas=1) for i in range(have, step)]
    cpu_before = cpu_seconds(pid)
    plane_before = control_plane_cpu()
    ready.expected, ready.all_at = step, None
    started = time.time()
    limit = 120 + (step - have) * 0.5
    # The profile is taken here, not in the measured scale run: py-spy costs CPU too.
    with Profile(pid) as profile:
        kubectl_apply(new, bed.namespace)
        try:
            done = ready.wait(limit, f"{step} Ready")
        except WaitTimeout:
            return f"{len(ready.met)} of {step} Ready {limit:.0f} s after the step's apply began"
    idle = idle_after(pid, done, limit_s=300)
    rows.append(
        {
            "resources": step,
            "to_all_ready_s": round(done - started, 1),
            "operator_rss_mb": round(memory_mb(pid), 1),
            "operator_peak_rss_mb": round(memory_mb(pid, "VmHWM"), 1),
            "operator_cpu_ms_per_new_resource": round(
                (cpu_seconds(pid) - cpu_before) / (step - have) * 1000, 1
            ),
            "control_plane_cpu_s": cpu_since(plane_before),
            "idle_after_s": idle,
            "profile": profile.result,
        }
    )
    log(f"ramp: { ({k: v for k, v in rows[-1].items() if k != 'profile'}) }")
    return None


def extrapolate(rows: list[JSON]) -> JSON:
    """Operator RSS per resource (least squares over the steps), and at 10,000 and 50,000."""
    if len(rows) < 2:
        return {"rss_mb_per_resource": None}
    xs = [r["resources"] for r in rows]
    ys = [r["operator_rss_mb"] for r in rows]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
    base = mean_y - slope * mean_x
    return {
        "rss_mb_per_resource": round(slope, 4),
        "rss_mb_at_0": round(base, 1),
        "rss_mb_at_10000": round(base + slope * 10_000, 0),
        "rss_mb_at_50000": round(base + slope * 50_000, 0),
        "assumptions": "a straight line through the settled RSS at each step; each resource "
        "as here (1 version, 1 replica: its ModelDeployment, Deployment, ReplicaSet, "
        "Service and pod cached); every resource in the watched namespaces",
    }
