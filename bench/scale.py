"""The scale run and the reconcile-cost ratio.

`scale` creates many ModelDeployments while the operator is stopped, starts it and
measures how long it takes to reconcile them, what it costs in memory and CPU, and
how fast it still reverts bad rollouts under that load. `reconcile_ratio` times the
pure core's decide() with 1,000 versions against 10.
"""

from __future__ import annotations

import contextlib
import statistics
import time
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes

from bench.cluster import (
    CRASHLOOP,
    Bed,
    Timeline,
    Usage,
    add_nodes,
    control_plane_cpu,
    cpu_seconds,
    log,
    watching,
)
from bench.report import percentile
from modeldeploy.core.decide import decide
from modeldeploy.core.render import render_deployment, template_hash
from modeldeploy.model.observed import ChildState, Observed
from modeldeploy.model.resource import parse_resource
from modeldeploy.model.status import to_json
from testbed.support import OperatorProcess, wait_for


def settled_decide(versions: int) -> Callable[[], object]:
    """parse + decide of one settled resource with `versions` versions, ready to time."""
    body: dict[str, Any] = {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {
            "activeVersion": "v0",
            "replicas": 3,
            "versions": [{"name": f"v{i}", "image": f"r/m:{i}"} for i in range(versions)],
        },
    }
    resource = parse_resource(body)
    spec = resource.spec
    assert not isinstance(spec, Exception)
    manifest = render_deployment(
        resource, spec, spec.active, template_hash(resource.name, spec, spec.active)
    )
    child = ChildState(
        name="m",
        controller_uid="u",
        spec=manifest["spec"],
        template_hash=manifest["metadata"]["annotations"]["modeldeploy.io/template-hash"],
        generation=1,
        observed_generation=1,
        replicas=3,
        updated_replicas=3,
        ready_replicas=3,
        available_replicas=3,
    )
    observed = Observed(deployment=child)
    now = datetime.now(UTC)
    settled = decide(resource, observed, now).status
    body["status"] = to_json(settled)
    return lambda: decide(parse_resource(body), observed, now)


def reconcile_ratio(large: int = 1000, small: int = 10, rounds: int = 7) -> float:
    """Cost of a reconcile with `large` versions over one with `small`.

    Both are warmed up, then timed in alternating rounds (median of 200 calls
    each) so a GC pause or a noisy neighbour lands on both sides alike.
    """
    timers = [timeit.Timer(settled_decide(n)) for n in (large, small)]
    for timer in timers:
        timer.repeat(repeat=50, number=1)
    ratios = []
    for _ in range(rounds):
        big, little = (statistics.median(t.repeat(repeat=200, number=1)) for t in timers)
        ratios.append(big / little)
    return round(statistics.median(ratios), 2)


def all_reconciled(bed: Bed, names: set[str]) -> bool:
    """The operator has acted on every one: status written for this generation, child made."""
    done = {
        m["metadata"]["name"]
        for m in bed.models()
        if (m.get("status") or {}).get("observedGeneration") == m["metadata"]["generation"]
    }
    deployments = {
        d.metadata.name for d in bed.apps.list_namespaced_deployment(bed.namespace).items
    }
    return names <= done & deployments


def settle(pid: int, limit_s: float) -> float:
    """Wait until process `pid` is idle (under 5% of a core over 5 s); seconds waited."""
    started = time.time()
    while time.time() - started < limit_s:
        before = cpu_seconds(pid)
        time.sleep(5)
        if cpu_seconds(pid) - before < 0.25:
            break
    return round(time.time() - started, 1)


def remove_scale_run(bed: Bed, names: set[str], nodes: list[str]) -> None:
    """The models and their pods gone before the fake nodes that run them.

    The scale run's models are the only ones left in the namespace by then.
    """
    for name in names:
        with contextlib.suppress(kubernetes.client.ApiException):
            bed.delete_model(name)
    wait_for(
        lambda: (
            not bed.core.list_namespaced_pod(
                bed.namespace, label_selector="modeldeploy.io/name", limit=1
            ).items
        ),
        600,
        "the scale run's pods deleted",
    )
    for node in nodes:
        bed.core.delete_node(node)


def scale(bed: Bed, count: int, bad: int, log_dir: Path) -> dict[str, Any]:
    """`count` models created while the operator is stopped; then start it and measure."""
    added = add_nodes(bed, count * 3)
    log(f"scale: {len(added)} fake nodes added for {count * 3} pods")
    operator = OperatorProcess(log_dir / "operator-scale.log")
    names = {f"scale-{i}" for i in range(count)}
    try:
        for name in sorted(names):
            bed.model(name, CRASHLOOP, replicas=3)
        log(f"scale: {count} ModelDeployments created; starting the operator")
        cpu_before = control_plane_cpu()
        started = time.time()
        operator.start()
        with Usage(operator.pid, since=started) as usage:
            figures = measure_scale(bed, names, bad, operator.pid, started, cpu_before)
            operator.stop()
    finally:
        operator.stop()
        remove_scale_run(bed, names, added)
    samples = usage.samples
    return {
        "crs": count,
        "pods": count * 3,
        "operator_rss_mb": round(max((s[1] for s in samples), default=0.0), 1),
        **figures,
        "nodes_added": len(added),
        "bad_rollouts": bad,
        "cpu_seconds": round(samples[-1][2], 1) if samples else None,
        "samples": [[round(t, 1), round(m, 1), round(c, 2)] for t, m, c in samples],
    }


def measure_scale(
    bed: Bed, names: set[str], bad: int, pid: int, started: float, cpu_before: dict[str, float]
) -> dict[str, Any]:
    """The operator (`pid`, started at `started`) taking on `names`; then `bad` reverts."""
    count = len(names)
    wait_for(lambda: all_reconciled(bed, names), 60 + count, f"{count} models reconciled")
    reconciled = time.time() - started
    cpu_during = {
        name: round(used - cpu_before.get(name, 0.0), 1)
        for name, used in control_plane_cpu().items()
    }
    cpu_during["modeldeploy"] = round(cpu_seconds(pid), 1)
    log(f"scale: CPU seconds while reconciling: {cpu_during}")
    log(f"scale: all {count} reconciled {reconciled:.1f}s after the operator started")
    wait_for(lambda: bed.all_good(names), 60 + count * 1.5, f"{count} models Available")
    all_available = time.time() - started
    log(f"scale: all {count} Available {all_available:.1f}s after the operator started")
    # "Under management" is the steady state, not the start-up storm of 3,000 pods.
    settled = settle(pid, 300)
    log(f"scale: operator idle {settled}s after all were Available")
    chosen = sorted(names)[:bad]
    timeline = Timeline()
    with watching(bed, "modeldeploy.io/version=v2", timeline):
        for name in chosen:
            timeline.selected[name] = time.time()
            bed.select(name, "v2")
        wait_for(lambda: all(n in timeline.reverted for n in chosen), 180, "reverts under load")
        time.sleep(0.5)
    samples = [
        (timeline.reverted[n] - timeline.signal[n]) * 1000 for n in chosen if n in timeline.signal
    ]
    return {
        "all_reconciled_s": round(reconciled, 1),
        "cpu_seconds_while_reconciling": cpu_during,
        "settle_s": settled,
        "all_available_s": round(all_available, 1),
        "detect_to_revert_p50_ms_under_load": round(percentile(samples, 50), 1),
        "detect_to_revert_p99_ms_under_load": round(percentile(samples, 99), 1),
    }
