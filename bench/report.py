"""The benchmarks' report: percentiles, the figures against their targets, the plot.

`assemble` gathers one run's figures as latest.json holds them; `write` saves
latest.json (and a dated copy), latest.md and latest.png. Only `plot` needs
matplotlib (the bench extra).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float | int]:
    return {
        "p50": round(percentile(values, 50), 1),
        "p95": round(percentile(values, 95), 1),
        "p99": round(percentile(values, 99), 1),
        "n": len(values),
    }


# (figure, target as text, how to read it from a result, whether it meets the target)
Target = tuple[str, str, Callable[[dict[str, Any]], float], Callable[[float], bool]]
TARGETS: list[Target] = [
    (
        "detect-to-revert p50 (ms)",
        "< 200",
        lambda r: max(v["p50"] for v in r["detect_to_revert_ms"].values()),
        lambda v: v < 200,
    ),
    (
        "detect-to-revert p99 (ms)",
        "< 1000",
        lambda r: max(v["p99"] for v in r["detect_to_revert_ms"].values()),
        lambda v: v < 1000,
    ),
    (
        "recovery vs plain Deployment, default deadline (x faster)",
        ">= 100",
        lambda r: r["ratios"]["default_deadline_over_modeldeploy"],
        lambda v: v >= 100,
    ),
    (
        "min ready ratio during a failed rollout",
        ">= 1.0",
        lambda r: r["min_ready_ratio"]["modeldeploy"],
        lambda v: v >= 1.0,
    ),
    (
        "operator RSS (MB) with the scale run",
        "< 250",
        lambda r: r["scale"]["operator_rss_mb"],
        lambda v: v < 250,
    ),
    (
        "all reconciled after operator start (s)",
        "< 20",
        lambda r: r["scale"]["all_reconciled_s"],
        lambda v: v < 20,
    ),
    (
        "detect-to-revert p99 under load (ms)",
        "< 1000",
        lambda r: r["scale"]["detect_to_revert_p99_ms_under_load"],
        lambda v: v < 1000,
    ),
    (
        "reconcile cost, 1000 vs 10 versions",
        "< 1.2",
        lambda r: r["scale"]["reconcile_ratio_1000_vs_10_versions"],
        lambda v: v < 1.2,
    ),
]


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Benchmark results ({result['mode']} run, {result['finished_at']})",
        "",
        f"{result['machine']['nproc']} cores, {result['machine']['memory_gb']} GiB, "
        f"Python {result['machine']['python']}; Kubernetes {result['versions']['kubernetes']}"
        f", kwok {result['versions']['kwok']}, kopf {result['versions']['kopf']}; scale run:"
        f" {result['scale']['crs']} ModelDeployments, {result['scale']['pods']} pods.",
        "",
        "| figure | target | measured | |",
        "|---|---|---|---|",
    ]
    for name, target, get, ok in TARGETS:
        try:
            value = get(result)
        except (KeyError, TypeError, ValueError):
            lines.append(f"| {name} | {target} | not measured | |")
            continue
        if value is None:
            lines.append(f"| {name} | {target} | not measured | |")
        else:
            lines.append(f"| {name} | {target} | {value} | {'met' if ok(value) else 'MISSED'} |")
    lines += [
        "",
        "Detect-to-revert, first failure signal to `spec.activeVersion` reverted (ms):",
        "",
        "| scenario | p50 | p95 | p99 | n |",
        "|---|---|---|---|---|",
    ]
    for scenario, s in result["detect_to_revert_ms"].items():
        lines.append(f"| {scenario} | {s['p50']} | {s['p95']} | {s['p99']} | {s['n']} |")
    recover = result["recover_s"]
    lines += [
        "",
        "Bad version applied -> last good version fully serving, no bad pods (s):",
        "",
        "| | failure reported after | recovered after | min ready / replicas |",
        "|---|---|---|---|",
        f"| modeldeploy | {recover['modeldeploy']['recovered_s']} (reverted) | "
        f"{recover['modeldeploy']['recovered_s']} | "
        f"{result['min_ready_ratio']['modeldeploy']} |",
    ]
    for key, label in (
        ("deployment_default", "plain Deployment, default 600 s deadline"),
        ("deployment_undo_script", "plain Deployment, 30 s deadline + `kubectl rollout undo`"),
        ("argo_rollouts_abort", "Argo Rollouts, 30 s deadline + `progressDeadlineAbort`"),
    ):
        entry = recover[key]
        lines.append(
            f"| {label} | {entry.get('failure_reported_s', 'not measured')} | "
            f"{entry.get('recovered_s') or entry.get('note', 'never')} | "
            f"{entry.get('min_ready_ratio', '')} |"
        )
    scaled = result["scale"]
    lines += [
        "",
        f"Scale: {scaled['crs']} ModelDeployments created while the operator was stopped; "
        f"it had reconciled all of them {scaled['all_reconciled_s']} s after it started, and "
        f"all {scaled['pods']} pods were Ready and every resource Available after "
        f"{scaled['all_available_s']} s (the control plane and kwok making the pods). CPU "
        f"seconds while it reconciled: {scaled['cpu_seconds_while_reconciling']}. Operator "
        f"peak RSS {scaled['operator_rss_mb']} MB, {scaled['cpu_seconds']} CPU seconds in all. "
        f"Once it was idle again ({scaled['settle_s']} s later), "
        f"{scaled['bad_rollouts']} bad rollouts at once: detect-to-revert p50 "
        f"{scaled['detect_to_revert_p50_ms_under_load']} ms, p99 "
        f"{scaled['detect_to_revert_p99_ms_under_load']} ms.",
    ]
    ratios = result["ratios"]
    lines += [
        "",
        f"modeldeploy recovered {ratios['undo_script_over_modeldeploy']}x faster than the undo "
        f"script, {ratios['argo_abort_over_modeldeploy']}x faster than Argo Rollouts' abort, "
        f"and {ratios['default_deadline_over_modeldeploy']}x faster than a plain Deployment "
        "even reports the failure (it never recovers by itself). After Argo Rollouts aborts, "
        "the Rollout stays Degraded and its spec still names the bad image; modeldeploy puts "
        "`spec.activeVersion` back, so the spec and what serves agree.",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any], raw: dict[str, list[float]], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only `make bench` needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, (left, right, load) = plt.subplots(1, 3, figsize=(16, 4.5))
    left.boxplot(list(raw.values()), tick_labels=list(raw))
    left.set_ylabel("ms")
    left.set_title("Detect-to-revert (first failure signal -> spec reverted)")
    recover = result["recover_s"]
    bars = {
        "modeldeploy": recover["modeldeploy"]["recovered_s"],
        "Deployment\n+ undo script\n(30 s deadline)": recover["deployment_undo_script"].get(
            "recovered_s"
        ),
        "Argo Rollouts\nabort\n(30 s deadline)": recover["argo_rollouts_abort"].get("recovered_s"),
        "Deployment\n(600 s deadline,\nreports only)": recover["deployment_default"].get(
            "failure_reported_s"
        )
        or 600.0,
    }
    right.bar(
        list(bars),
        [v or 0 for v in bars.values()],
        color=["tab:green", "tab:orange", "tab:purple", "tab:red"],
    )
    right.set_yscale("log")
    right.set_ylabel("seconds (log)")
    right.set_title("Bad version applied -> good version serving")
    samples = result["scale"]["samples"]
    seconds = [t for t, _, _ in samples]
    load.plot(seconds, [rss for _, rss, _ in samples], color="tab:blue")
    load.set_xlabel("seconds after the operator started")
    load.set_ylabel("RSS (MB)", color="tab:blue")
    cpu = load.twinx()
    cpu.plot(seconds, [c for _, _, c in samples], color="tab:gray")
    cpu.set_ylabel("CPU seconds used", color="tab:gray")
    load.set_title(f"Operator with {result['scale']['crs']} ModelDeployments")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def assemble(
    quick: bool,
    started: float,
    raw: dict[str, list[float]],
    recover: dict[str, dict[str, Any]],
    scaled: dict[str, Any],
) -> dict[str, Any]:
    """The figures of one run as latest.json holds them."""
    modeldeploy, undo = recover["modeldeploy"], recover["deployment_undo_script"]
    rollouts, default = recover["argo_rollouts_abort"], recover["deployment_default"]
    return {
        "mode": "quick" if quick else "full",
        "finished_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(time.time() - started, 1),
        "detect_to_revert_ms": {k: summary(v) for k, v in raw.items()},
        "recover_s": recover,
        "ratios": {
            "undo_script_over_modeldeploy": round(
                undo["recovered_s"] / modeldeploy["recovered_s"], 1
            )
            if undo["recovered_s"]
            else None,
            "argo_abort_over_modeldeploy": round(
                rollouts["recovered_s"] / modeldeploy["recovered_s"], 1
            )
            if rollouts["recovered_s"]
            else None,
            "default_deadline_over_modeldeploy": round(
                (default["failure_reported_s"] or 600) / modeldeploy["recovered_s"], 1
            ),
            "default_deadline_note": "the plain Deployment never recovers by itself; this is "
            "the time until Kubernetes even reports the failure",
        },
        "min_ready_ratio": {
            "modeldeploy": modeldeploy["min_ready_ratio"],
            "deployment": undo["min_ready_ratio"],
            "argo_rollouts": rollouts["min_ready_ratio"],
        },
        "scale": scaled,
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        },
        "versions": {
            "kubernetes": "v1.33.13",
            "kwok": "v0.7.0",
            "argo_rollouts": "v1.8.3",
            "etcd": "3.5.24",
            "kopf": kopf.__version__ if hasattr(kopf, "__version__") else "1.45.2",
            "modeldeploy": "0.1.0",
        },
    }


def write(result: dict[str, Any], raw: dict[str, list[float]], results: Path) -> None:
    """latest.json, its dated copy, latest.md and latest.png; the table on stdout too."""
    text = json.dumps(result, indent=2)
    (results / "latest.json").write_text(text)
    (results / f"{result['finished_at'].replace(':', '')}.json").write_text(text)
    (results / "latest.md").write_text(markdown(result))
    plot(result, raw, results / "latest.png")
    print(markdown(result))
