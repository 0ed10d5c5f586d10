"""`python -m bench [--quick] [--runs N]`: benchmark runs on the local test bed.

A full run first waits for a quiet machine (1-minute load under 1.0, no other
kube-apiserver), starts its own test bed with the API server's audit log, and
measures in order: detect-to-revert samples, recovery beside the peers (Argo
Rollouts and Flagger built from their Go modules; the default-deadline Deployment's
ten minutes pass meanwhile in a thread), scale against kubectl, reconcile cost, the
ramp to thousands of resources (in the last of `--runs` only), and the standby on the
real node. The quick run does the same with small numbers and skips the real node,
saying so.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import testbed.cluster
from bench import capacity, chaos, cost, peers, runtimes, samples, scale, standby, traffic
from bench.apiserver import AuditLog, audited, start_testbed
from bench.cluster import (
    ROOT,
    ArgoRollouts,
    Bed,
    Flagger,
    load_kubeconfig,
    log,
    own_cpu_seconds,
    wait_namespace_gone,
)
from bench.report import write, write_revert_runs, write_section
from testbed.processes import STATE, TOKEN, running_pid
from testbed.support import OperatorProcess

RESULTS = ROOT / "bench" / "results"  # full runs; quick runs write to results/quick/
LOGS = STATE / "logs"


class Sizes:
    """How much of everything a run measures."""

    def __init__(self, quick: bool, chaos_minutes: float = 30) -> None:
        self.plan = (
            samples.Plan(per_case=8, rate=2.0, pool=3)
            if quick
            else samples.Plan(per_case=300, rate=2.0, pool=12)
        )
        self.peer_samples = 2 if quick else 10
        self.default_copies = 0 if quick else 3
        self.scale = 30 if quick else 1000
        self.scale_bad = 5 if quick else 50
        self.scale_singles = 3 if quick else 30
        self.cost_per_size = 10 if quick else 100
        self.cost_resources = 3 if quick else 10
        self.standby_samples = 0 if quick else 2
        self.traffic_samples = 1
        self.ramp = (20, 40) if quick else (1000, 2500, 5000)
        self.chaos = (
            chaos.Plan(resources=30, seconds=120, releases_per_minute=6, kill_every_s=(20, 40))
            if quick
            else chaos.Plan(resources=200, seconds=60 * chaos_minutes, releases_per_minute=6)
        )


def other_apiservers() -> list[str]:
    ours = running_pid("kube-apiserver")
    found = subprocess.run(
        ["pgrep", "-x", "kube-apiserver"], capture_output=True, text=True, check=False
    )
    return [pid for pid in found.stdout.split() if int(pid) != ours]


def wait_quiet(limit_s: float = 3 * 3600, every_s: float = 300) -> bool:
    """Wait until the machine is quiet (see the module's doc); whether it became so."""
    deadline = time.time() + limit_s
    while True:
        load, others = os.getloadavg()[0], other_apiservers()
        if load < 1.0 and not others:
            return True
        if time.time() >= deadline:
            log(f"the machine never got quiet (load {load:.2f}, other API servers {others})")
            return False
        log(f"waiting for a quiet machine: load {load:.2f}, other API servers {len(others)}")
        time.sleep(every_s)


def commit() -> tuple[str, bool]:
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=False
    )
    status = subprocess.run(
        ["git", "status", "--porcelain", "--", "bench", "operator", "crds", "testbed"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    changed = [line for line in status.stdout.splitlines() if "bench/results" not in line]
    return head.stdout.strip() or "unknown", bool(changed)


class Section:
    """Times a section and the bench's own CPU during it."""

    def __init__(self, cpu: dict[str, float], name: str) -> None:
        self.cpu, self.name = cpu, name

    def __enter__(self) -> None:
        self.before = own_cpu_seconds()
        log(f"--- {self.name}")

    def __exit__(self, *exc: object) -> None:
        self.cpu[self.name] = round(own_cpu_seconds() - self.before, 1)


def with_operator(bed: Bed, name: str, body: Callable[[], Any]) -> Any:
    operator = OperatorProcess(LOGS / f"operator-{name}.log", "--namespace", bed.namespace)
    operator.start()
    try:
        return body()
    finally:
        operator.stop()


def soft(name: str, skip: set[str], section: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A later section's figures, or why there are none: one that fails (or is skipped)
    is said in the results, and the sections after it still run."""
    if name in skip:
        return {"skipped": "--skip"}
    try:
        return section()
    except Exception as error:  # recorded in the results, with the traceback in the log
        log(f"{name} failed: {error}\n{traceback.format_exc()}")
        return {"failed": f"{type(error).__name__}: {error}"}


def measure(
    quick: bool, sizes: Sizes, audit: AuditLog | None, ramp: bool, skip: set[str]
) -> dict[str, Any]:
    """Every section of one run, in order; the run's figures."""
    cpu: dict[str, float] = {}
    peers_bed = Bed("peers")
    peers_bed.create_namespace()
    default: dict[str, Any] = {"note": "not measured in the quick run (600 s)"}

    def run_default() -> None:
        default.update(peers.default_deadline(peers_bed, sizes.default_copies))

    waiting = threading.Thread(target=run_default, daemon=True)
    if sizes.default_copies:
        waiting.start()
    with Section(cpu, "detect_to_revert"):
        revert_bed = Bed("revert")
        revert_bed.create_namespace()
        reverts = with_operator(
            revert_bed, "revert", lambda: samples.poisson(revert_bed, audit, sizes.plan)
        )
        revert_bed.delete_namespace()
    with Section(cpu, "peers"):
        recover = with_operator(peers_bed, "peers", lambda: contenders(peers_bed, sizes))
        if sizes.default_copies:
            waiting.join()
        recover["deployment_default"] = default
    peers_bed.delete_namespace()
    # The scale section times the control plane itself: the earlier sections' namespaces
    # are gone first, so their garbage collection does not run under it.
    for bed in (revert_bed, peers_bed):
        wait_namespace_gone(bed, bed.namespace, 600)
    with Section(cpu, "scale"):
        scaled = soft(
            "scale",
            skip,
            lambda: scale.scale(audit, sizes.scale, sizes.scale_bad, sizes.scale_singles, LOGS),
        )
    with Section(cpu, "reconcile_cost"):
        costs = soft(
            "reconcile_cost",
            skip,
            lambda: cost.reconcile_cost(audit, sizes.cost_per_size, sizes.cost_resources, LOGS),
        )
    scaled["reconcile_cost"] = costs
    scaled["reconcile_ratio_1000_vs_10_versions"] = costs.get("latency_ratio_p50")
    if ramp:
        with Section(cpu, "ramp"):
            scaled["max"] = scale.ramp(sizes.ramp, LOGS)
    with Section(cpu, "standby"):
        late = (
            {"skipped": "the quick run does not start the real node"}
            if quick
            else soft("standby", skip, lambda: standby.standby_revert(sizes.standby_samples, LOGS))
        )
    with Section(cpu, "chaos"):
        chaotic = soft("chaos", skip, lambda: chaos.run(sizes.chaos, LOGS))
    return {
        "detect_to_revert_ms": dict(reverts["by_case"]),
        "detect_to_revert": {k: v for k, v in reverts.items() if k != "by_case"},
        "recover_s": recover,
        "scale": scaled,
        "standby_revert": late,
        "chaos": chaotic,
        "bench_cpu_seconds": cpu,
    }


def contenders(bed: Bed, sizes: Sizes) -> dict[str, Any]:
    recover = {"modeldeploy": peers.modeldeploy(bed, sizes.peer_samples)}
    recover["deployment_undo_script"] = peers.undo_script(
        bed, sizes.peer_samples, LOGS / "undo-on-failure.log"
    )
    argo = ArgoRollouts(bed.namespace, LOGS / "argo-rollouts-bench.log")
    argo.start()
    try:
        recover["argo_rollouts_abort"] = peers.argo(bed, sizes.peer_samples, TOKEN)
    finally:
        argo.stop()
    recover["flagger_deadline"] = flagger(bed, sizes.peer_samples)
    return recover


def flagger(bed: Bed, samples: int) -> dict[str, Any]:
    controller = Flagger(bed.namespace, LOGS / "flagger-bench.log")
    controller.start()
    try:
        return peers.flagger(bed, samples)
    finally:
        controller.stop()


def one_run(
    quick: bool, quiet: bool | None, ramp: bool, sizes: Sizes, skip: set[str]
) -> dict[str, Any]:
    load = [round(x, 2) for x in os.getloadavg()]
    others = len(other_apiservers())
    started = time.time()
    was_up = start_testbed()
    load_kubeconfig()
    testbed.cluster.install_crd()
    audit = AuditLog() if audited() else None
    if audit is None:
        log("the running test bed has no audit log: times come from the observer's watches")
    try:
        figures = measure(quick, sizes, audit, ramp, skip)
    finally:
        if not was_up:
            testbed.cluster.down()
    head, dirty = commit()
    figures["recover_s"]["deployment_default"].setdefault("recovered_by_itself", False)
    return {
        "mode": "quick" if quick else "full",
        "finished_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(time.time() - started, 1),
        "commit": head,
        "dirty": dirty,
        "clock": "the API server's audit log (stageTimestamp)" if audit else "observer watch",
        **figures,
        "ratios": ratios(figures["recover_s"]),
        "min_ready_ratio": {k: v.get("min_ready_ratio") for k, v in figures["recover_s"].items()},
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "load_at_start": load,
            "other_api_servers_at_start": others,
            "waited_for_quiet": quiet,
        },
        "versions": {
            "kubernetes": "v1.33.13",
            "kwok": "v0.7.0",
            "argo_rollouts": "v1.8.3",
            "etcd": "3.5.24",
            "modeldeploy": "0.1.0",
        },
    }


def alone(section: str, sizes: Sizes) -> tuple[dict[str, Any], dict[str, Any]]:
    """One section by itself (detect-to-revert, scale, the ramp, or the Flagger peer), on
    a test bed of its own; its figures and when and on what they were measured."""
    started = time.time()
    load = [round(x, 2) for x in os.getloadavg()]
    was_up = start_testbed()
    load_kubeconfig()
    testbed.cluster.install_crd()
    audit = AuditLog() if audited() else None
    before = own_cpu_seconds()
    try:
        if section == "revert":
            bed = Bed("revert")
            bed.create_namespace()
            figures = with_operator(bed, "revert", lambda: samples.poisson(bed, audit, sizes.plan))
            bed.delete_namespace()
        elif section == "ramp":
            figures = scale.ramp(sizes.ramp, LOGS)
        elif section == "traffic":
            figures = traffic.traffic(sizes.traffic_samples, LOGS)
        elif section == "capacity":
            figures = capacity.capacity(sizes.traffic_samples, LOGS)
        elif section == "runtimes":
            figures = runtimes.runtimes(sizes.traffic_samples, LOGS)
        elif section == "flagger":
            bed = Bed("peers")
            bed.create_namespace()
            figures = flagger(bed, sizes.peer_samples)
            bed.delete_namespace()
        else:
            figures = scale.scale(audit, sizes.scale, sizes.scale_bad, sizes.scale_singles, LOGS)
    finally:
        if not was_up:
            testbed.cluster.down()
    head, dirty = commit()
    measured = {
        "finished_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(time.time() - started, 1),
        "commit": head,
        "dirty": dirty,
        "clock": "the API server's audit log (stageTimestamp)" if audit else "observer watch",
        "bench_cpu_seconds": round(own_cpu_seconds() - before, 1),
        "load_at_start": load,
    }
    return figures, measured


def ratios(recover: dict[str, Any]) -> dict[str, Any]:
    """Recovery time over modeldeploy's (p50s); the plain Deployment has none."""
    ours = recover["modeldeploy"]["recovered_s"]

    def over(key: str) -> float | None:
        theirs = (recover.get(key) or {}).get("recovered_s")
        return round(theirs / ours, 2) if theirs and ours else None

    return {
        "undo_script_over_modeldeploy": over("deployment_undo_script"),
        "argo_abort_over_modeldeploy": over("argo_rollouts_abort"),
        "flagger_deadline_over_modeldeploy": over("flagger_deadline"),
        "default_deadline_over_modeldeploy": None,
        "default_deadline_note": "never recovers: a plain Deployment keeps its old pods serving "
        "and the bad ones crashing, and reports ProgressDeadlineExceeded after "
        f"{recover['deployment_default'].get('failure_reported_s')} s",
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small N, same code (< 5 min)")
    parser.add_argument("--runs", type=int, default=1, help="full runs one after another")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    parser.add_argument("--no-ramp", action="store_true", help="leave out the ramp to 5,000")
    parser.add_argument("--chaos-minutes", type=float, default=30, help="the chaos run's length")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        help="leave a section out: scale, reconcile_cost, standby or chaos",
    )
    parser.add_argument(
        "--only",
        choices=["revert", "scale", "ramp", "flagger", "traffic", "capacity", "runtimes"],
        help="run one section alone (--runs times); its figures replace latest.json's for "
        "it, with each figure's spread over the runs of one commit",
    )
    parser.add_argument("--scale", type=int, help="resources in the scale section")
    args = parser.parse_args()
    results = RESULTS / "quick" if args.quick else RESULTS
    results.mkdir(parents=True, exist_ok=True)
    sizes = Sizes(args.quick, args.chaos_minutes)
    if args.scale:
        sizes.scale = args.scale
    if args.only:
        for run in range(args.runs):
            log(f"--only {args.only}: run {run + 1}")
            figures, measured = alone(args.only, sizes)
            if args.only == "revert":
                write_revert_runs(figures, measured, results)
            else:
                write_section(args.only, figures, measured, results)
        return
    for run in range(1 if args.quick else args.runs):
        quiet = None if args.quick or args.no_wait else wait_quiet()
        log(f"run {run + 1} of {args.runs}" + ("" if quiet in (None, True) else " (not quiet)"))
        # The ramp to thousands of resources takes a quarter of an hour: the last run only.
        last = (run == args.runs - 1 or args.quick) and not args.no_ramp
        run_figures = one_run(args.quick, quiet, last, sizes, set(args.skip))
        write(run_figures, results)


if __name__ == "__main__":
    main()
