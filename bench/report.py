"""The benchmarks' report: the figures against their targets, over runs, and the plot.

Each run is saved as a dated JSON file (raw samples included). `latest.json` is the
newest run plus what the full runs of the same commit say together: the
detect-to-revert samples pooled, and each target figure's value in every run (its
spread). `latest.md` is the table; `latest.png` the plot (matplotlib, the bench
extra).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.stats import spread, summary

JSON = dict[str, Any]
KEEP_RUNS = 3  # the spread is over the newest full runs of one commit


def _worst(result: JSON, key: str) -> float:
    """The worst kind's figure: pooled over the runs where pooled, else this run's."""
    kinds = result.get("detect_to_revert_pooled_ms") or result["detect_to_revert_ms"]
    return float(max(v[key] for v in kinds.values()))


def _scale(*path: str) -> Callable[[JSON], Any]:
    def get(result: JSON) -> Any:
        value: Any = result["scale"]
        for key in path:
            value = value[key]
        return value

    return get


# (figure, target as text, how to read it from a result, whether it meets the target)
Target = tuple[str, str, Callable[[JSON], Any], Callable[[Any], bool]]
TARGETS: list[Target] = [
    (
        "detect-to-revert p50, worst failure kind (ms)",
        "< 200",
        lambda r: _worst(r, "p50"),
        lambda v: v < 200,
    ),
    (
        "detect-to-revert p99, worst failure kind (ms)",
        "< 1000",
        lambda r: _worst(r, "p99"),
        lambda v: v < 1000,
    ),
    (
        "a plain Deployment (600 s deadline) reports a crash-looping release failed (s)",
        "reported; it never recovers by itself",
        lambda r: r["recover_s"]["deployment_default"].get("failure_reported_s"),
        lambda v: v is not None,
    ),
    (
        "ready replicas during a failed rollout and revert (of spec.replicas)",
        ">= 1.0",
        lambda r: r["min_ready_ratio"]["modeldeploy"],
        lambda v: v >= 1.0,
    ),
    (
        "operator peak RSS (VmHWM) with the scale run (MB)",
        "< 250",
        _scale("operator_rss_mb"),
        lambda v: v < 250,
    ),
    (
        "all new ModelDeployments reconciled, from kubectl apply (s)",
        "< 20",
        _scale("all_reconciled_s"),
        lambda v: v < 20,
    ),
    (
        "all Available: modeldeploy / kubectl apply of the same Deployments + Services",
        "<= 1.3",
        _scale("modeldeploy_over_kubectl"),
        lambda v: v <= 1.3,
    ),
    (
        "API writes per new resource (operator)",
        "<= 3 (2 children + 1 status)",
        _scale("api_requests_per_resource", "writes_per_new_resource"),
        lambda v: v <= 3,
    ),
    (
        "API writes per unchanged resource after a restart",
        "0",
        _scale("api_requests_per_resource", "writes_per_unchanged_resource"),
        lambda v: v == 0,
    ),
    (
        "restart with the resources settled: time to idle (s)",
        "< 10",
        _scale("restart_idle_s"),
        lambda v: v < 10,
    ),
    (
        "detect-to-revert p99, releases right after a restart (ms)",
        "< 1000",
        _scale("restart_detect_to_revert_ms", "p99"),
        lambda v: v < 1000,
    ),
    (
        "detect-to-revert p50, one bad release among them (ms)",
        "< 200",
        _scale("single_release_detect_to_revert_ms", "p50"),
        lambda v: v < 200,
    ),
    (
        "detect-to-revert p99, bad releases at once among them (ms)",
        "< 1000",
        _scale("detect_to_revert_p99_ms_under_load"),
        lambda v: v < 1000,
    ),
    (
        "reconcile latency, 1,000 vs 10 versions (end to end, p50 ratio)",
        "< 1.2",
        _scale("reconcile_ratio_1000_vs_10_versions"),
        lambda v: v < 1.2,
    ),
]


def measure(result: JSON, get: Callable[[JSON], Any]) -> Any:
    try:
        return get(result)
    except (KeyError, TypeError, ValueError):
        return None


def targets(latest: JSON, runs: list[JSON]) -> list[JSON]:
    """Each target: the value now (pooled where samples pool), every run's, met or not."""
    rows = []
    for name, target, get, ok in TARGETS:
        value = measure(latest, get)
        per_run = [measure(run, get) for run in runs]
        rows.append(
            {
                "figure": name,
                "target": target,
                "measured": value,
                "runs": spread(per_run),
                "met": None if value is None else bool(ok(value)),
            }
        )
    return rows


def same_commit_runs(results: Path, latest: JSON) -> list[JSON]:
    """The newest full runs (up to KEEP_RUNS) of `latest`'s commit, oldest first."""
    if latest["mode"] != "full":
        return [latest]
    runs = []
    for path in sorted(results.glob("20*.json")):
        try:
            run = json.loads(path.read_text())
        except ValueError:
            continue
        if run.get("mode") == "full" and run.get("commit") == latest["commit"]:
            runs.append(run)
    return runs[-KEEP_RUNS:] or [latest]


def pool(runs: list[JSON]) -> JSON:
    """The detect-to-revert samples of all runs, per failure kind."""
    cases: dict[str, list[float]] = {}
    for run in runs:
        for case, values in run["detect_to_revert"]["raw_ms"].items():
            cases.setdefault(case, []).extend(values)
    return {case: summary(values) for case, values in cases.items()}


def combine(latest: JSON, runs: list[JSON]) -> JSON:
    combined = {key: value for key, value in latest.items() if key != "detect_to_revert"}
    combined["detect_to_revert"] = {
        k: v for k, v in latest["detect_to_revert"].items() if k != "raw_ms"
    }
    combined["detect_to_revert_pooled_ms"] = pool(runs)
    ramped = [run["scale"]["max"] for run in runs if "max" in run["scale"]]
    if ramped and "max" not in combined["scale"]:
        combined["scale"] = {**combined["scale"], "max": ramped[-1]}
    combined["runs"] = {
        "n": len(runs),
        "finished_at": [run["finished_at"] for run in runs],
        "load_at_start": [run["machine"].get("load_at_start") for run in runs],
        "detect_to_revert_ms": {
            case: spread([run["detect_to_revert_ms"].get(case, {}).get("p99") for run in runs])
            for case in latest["detect_to_revert_ms"]
        },
        "recovered_p50_s": {
            key: spread([run["recover_s"].get(key, {}).get("recovered_s") for run in runs])
            for key in latest["recover_s"]
        },
    }
    combined["targets"] = targets(combined, runs)
    return combined


# ------------------------------------------------------------------- markdown


def cell(value: Any) -> str:
    if value is None:
        return "not measured"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def markdown(result: JSON) -> str:
    runs = result["runs"]
    machine = result["machine"]
    lines = [
        f"# Benchmark results ({result['mode']} run, {result['finished_at']}, "
        f"commit {result['commit'][:10]}{' + changes' if result.get('dirty') else ''})",
        "",
        f"{machine['nproc']} cores, {machine['memory_gb']} GiB, Python {machine['python']}; "
        f"Kubernetes {result['versions']['kubernetes']}, kwok {result['versions']['kwok']}. "
        f"Clock: {result['clock']}. Runs of this commit: {runs['n']} "
        f"({', '.join(runs['finished_at'])}); 1-minute load at each start: "
        f"{', '.join(cell(x) for x in runs['load_at_start'])}.",
        "",
        "| figure | target | measured | each run | |",
        "|---|---|---|---|---|",
    ]
    for row in result["targets"]:
        verdict = {True: "met", False: "MISSED", None: ""}[row["met"]]
        each = " / ".join(cell(v) for v in row["runs"]["runs"])
        lines.append(
            f"| {row['figure']} | {row['target']} | {cell(row['measured'])} | {each} | {verdict} |"
        )
    lines += ["", "Detect-to-revert (ms), the API server's clock, all runs pooled:", ""]
    lines += [
        "| kind | n | p50 | p95 | p99 | p99 95% interval | max |",
        "|---|---|---|---|---|---|---|",
    ]
    for case, s in result["detect_to_revert_pooled_ms"].items():
        lines.append(
            f"| {case} | {s['n']} | {s['p50']} | {s['p95']} | {s['p99']} | "
            f"{cell(s['p99_ci95'])} | {s['max']} |"
        )
    lines += ["", "Recovery from a crash-looping release, 4 replicas (s):", ""]
    lines += [
        "| contender | n | recovered p50 (max) | each run's p50 | failure reported | min ready "
        "| spec after |"
    ]
    lines += ["|---|---|---|---|---|---|---|"]
    each_run = runs.get("recovered_p50_s") or {}
    for key, entry in result["recover_s"].items():
        recovered = entry.get("recovered") or {}
        rec = (
            f"{recovered['p50']} ({recovered['max']})"
            if recovered.get("n")
            else f"never ({entry.get('never_recovered')} of {entry.get('n')})"
        )
        per_run = " / ".join(cell(v) for v in (each_run.get(key) or {}).get("runs", []))
        lines.append(
            f"| {key} | {entry.get('n')} | {rec} | {per_run} | "
            f"{cell(entry.get('failure_reported_s'))} | "
            f"{cell(entry.get('min_ready_ratio'))} | {entry.get('spec_after', '')} |"
        )
    lines += ["", "Configurations:", ""]
    lines += [f"- {key}: {entry.get('config', '')}" for key, entry in result["recover_s"].items()]
    lines += alone_lines(result.get("detect_to_revert_alone"))
    lines += chaos_lines(result.get("chaos"))
    scaled = result.get("scale") or {}
    for name, alone in (
        ("scale", scaled.get("measured_alone")),
        ("ramp", (scaled.get("max") or {}).get("measured_alone")),
        ("flagger", (result["recover_s"].get("flagger_deadline") or {}).get("measured_alone")),
        ("traffic", (result.get("wrong_answers_after_verdict") or {}).get("measured_alone")),
        ("capacity", (result.get("capacity") or {}).get("measured_alone")),
        ("runtimes", (result.get("runtimes") or {}).get("measured_alone")),
    ):
        if alone:
            lines += [
                "",
                f"The {name} figures were measured alone (`--only {name}`) on commit "
                f"{alone['commit'][:10]}{' + changes' if alone.get('dirty') else ''}, "
                f"{alone['finished_at']}; the rest come from the full run above.",
            ]
            lines += spread_lines(name, alone)
    lines += ["", "```json", json.dumps(_details(result), indent=1), "```", ""]
    return "\n".join(lines)


def spread_lines(name: str, alone: JSON) -> list[str]:
    """A section's runs alone, figure by figure: each run's value."""
    spreads = alone.get("spread") or {}
    if alone.get("runs", 1) < 2 or not spreads:
        return []
    lines = [
        "",
        f"Each of the {alone['runs']} {name} runs of that commit "
        f"({', '.join(alone['finished_at_each'])}):",
        "",
        "| figure | each run | min | max |",
        "|---|---|---|---|",
    ]
    for path, values in spreads.items():
        each = " / ".join(cell(v) for v in values["runs"])
        lines.append(f"| {path} | {each} | {cell(values['min'])} | {cell(values['max'])} |")
    return lines


def chaos_lines(chaos: JSON | None) -> list[str]:
    """The chaos run's table: what was done to the pair, and what status says of it."""
    if not chaos:
        return []
    spread = chaos["release_to_revert_s"]
    verdict = chaos["verdict_to_revert_ms"]
    rows = [
        ("resources / minutes", f"{chaos['resources']} / {chaos['seconds'] / 60:g}"),
        ("bad releases / reverted", f"{chaos['bad_releases']} / {chaos['reverted']}"),
        ("double reverts (must be 0)", chaos["double_reverts"]),
        ("missing reverts (must be 0)", chaos["missing_reverts"]),
        ("lost history entries (must be 0)", chaos["lost_history_entries"]),
        ("leader kills / leader changes", f"{chaos['leader_kills']} / {chaos['leader_changes']}"),
        ("API server restarts", chaos["api_server_restarts"]),
        (
            "bad release -> revert (s), p50 / p99 / max",
            f"{cell(spread.get('p50'))} / {cell(spread.get('p99'))} / {cell(spread.get('max'))}",
        ),
        (
            "verdict -> revert (ms), p50 / p99 / max",
            f"{cell(verdict.get('p50'))} / {cell(verdict.get('p99'))} / {cell(verdict.get('max'))}",
        ),
        ("converged after the run", chaos["converged"]),
    ]
    lines = ["", f"Chaos run ({chaos['config']}):", "", "| | |", "|---|---|"]
    return lines + [f"| {name} | {cell(value)} |" for name, value in rows]


def _details(result: JSON) -> JSON:
    scaled = {k: v for k, v in result["scale"].items() if k != "samples"}
    return {
        "scale": scaled,
        "standby_revert": result.get("standby_revert"),
        "bench_cpu_seconds": result.get("bench_cpu_seconds"),
    }


# ----------------------------------------------------------------------- plot


def plot(result: JSON, raw: dict[str, list[float]], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only `make bench` needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(17, 4.8))
    for case, values in raw.items():
        ordered = sorted(values)
        if ordered:
            shares = [(i + 1) / len(ordered) for i in range(len(ordered))]
            left.plot(ordered, shares, label=f"{case} (n={len(ordered)})")
    left.set_xscale("log")
    left.set_xlabel("ms (API server clock)")
    left.set_ylabel("share of samples")
    left.axhline(0.99, color="grey", linewidth=0.5)
    left.legend()
    left.set_title("Detect-to-revert: failure written -> revert written")
    names, p50s, maxes, colours = [], [], [], []
    for key, entry in result["recover_s"].items():
        recovered = entry.get("recovered") or {}
        names.append(key.replace("_", "\n"))
        if recovered.get("n"):
            p50s.append(recovered["p50"])
            maxes.append(recovered["max"] - recovered["p50"])
            colours.append("tab:green" if key == "modeldeploy" else "tab:blue")
        else:
            p50s.append(entry.get("failure_reported_s") or 600)
            maxes.append(0)
            colours.append("tab:red")
    middle.bar(names, p50s, yerr=[[0] * len(maxes), maxes], color=colours)
    middle.set_yscale("log")
    middle.set_ylabel("seconds (log); red: never recovers, bar = failure reported")
    middle.set_title("Crash-looping release -> last good serving (p50, max)")
    samples = result["scale"].get("samples") or []
    seconds = [t for t, _, _ in samples]
    right.plot(seconds, [rss for _, rss, _ in samples], color="tab:blue")
    right.set_xlabel("seconds after kubectl apply started")
    right.set_ylabel("RSS (MB)", color="tab:blue")
    cpu = right.twinx()
    cpu.plot(seconds, [c for _, _, c in samples], color="tab:grey")
    cpu.set_ylabel("CPU seconds used", color="tab:grey")
    taken = result["scale"].get("crs")
    right.set_title(f"Operator taking on {taken} ModelDeployments" if taken else "scale: not run")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def write(result: JSON, results: Path) -> JSON:
    """The dated run file; latest.json, latest.md and latest.png over the commit's runs."""
    stamp = result["finished_at"].replace(":", "")
    (results / f"{stamp}.json").write_text(json.dumps(result, indent=1))
    runs = same_commit_runs(results, result)
    latest = carried(combine(result, runs), results / "latest.json")
    (results / "latest.json").write_text(json.dumps(latest, indent=1))
    (results / "latest.md").write_text(markdown(latest))
    raw: dict[str, list[float]] = {}
    for run in runs:
        for case, values in run["detect_to_revert"]["raw_ms"].items():
            raw.setdefault(case, []).extend(values)
    plot(latest, raw, results / "latest.png")
    print(markdown(latest))
    return latest


def carried(latest: JSON, previous_path: Path) -> JSON:
    """`latest` with what the runs did not measure themselves kept from the previous
    latest.json: the ramp (left out with --no-ramp) and detect-to-revert measured
    alone, each still saying on which commit and when it was measured."""
    try:
        previous: JSON = json.loads(previous_path.read_text())
    except (OSError, ValueError):
        return latest
    ramp = (previous.get("scale") or {}).get("max")
    if ramp and "max" not in latest["scale"]:
        latest["scale"] = {**latest["scale"], "max": ramp}
    if "detect_to_revert_alone" in previous:
        latest.setdefault("detect_to_revert_alone", previous["detect_to_revert_alone"])
    return latest


# Where a section measured alone goes in latest.json, and what it keeps of what was there.
SECTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "scale": (("scale",), ("reconcile_cost", "reconcile_ratio_1000_vs_10_versions", "max")),
    "ramp": (("scale", "max"), ()),
    "flagger": (("recover_s", "flagger_deadline"), ()),
    "traffic": (("wrong_answers_after_verdict",), ()),
    "capacity": (("capacity",), ()),
    "runtimes": (("runtimes",), ()),
}


def write_section(name: str, figures: JSON, measured: JSON, results: Path) -> JSON:
    """A section run alone (`--only`): its own dated file under results/sections/, and
    latest.json's figures for it replaced, saying on which commit and when."""
    runs = saved_run(name, figures, measured, results)
    latest: JSON = json.loads((results / "latest.json").read_text())
    path, keep = SECTIONS[name]
    parent = latest
    for key in path[:-1]:
        parent = parent.setdefault(key, {})
    previous = parent.get(path[-1]) or {}
    kept = {key: previous[key] for key in keep if key in previous}
    alone = {
        **measured,
        "runs": len(runs),
        "finished_at_each": [run["finished_at"] for run in runs],
        "spread": section_spread([run[name] for run in runs]),
    }
    parent[path[-1]] = {**kept, **figures, "measured_alone": alone}
    latest["targets"] = targets(latest, same_commit_runs(results, latest))
    (results / "latest.json").write_text(json.dumps(latest, indent=1))
    (results / "latest.md").write_text(markdown(latest))
    return latest


def saved_run(name: str, figures: JSON, measured: JSON, results: Path) -> list[JSON]:
    """A run of section `name` alone saved as its own dated file under results/sections/;
    the newest KEEP_RUNS runs of it on `measured`'s commit (and with the same
    uncommitted changes or none), this one last."""
    stamp = measured["finished_at"].replace(":", "")
    sections = results / "sections"
    sections.mkdir(parents=True, exist_ok=True)
    (sections / f"{name}-{stamp}.json").write_text(json.dumps({**measured, name: figures}))
    runs = []
    for path in sorted(sections.glob(f"{name}-*.json")):
        try:
            run = json.loads(path.read_text())
        except ValueError:
            continue
        if run.get("commit") == measured["commit"] and run.get("dirty") == measured["dirty"]:
            runs.append(run)
    return runs[-KEEP_RUNS:]


# Not figures, or too fine to spread: profiles, raw samples, the ramp's per-process CPU.
UNSPREAD = {"profile", "samples", "measured_alone", "control_plane_cpu_s"}


def figures_of(value: Any, prefix: str = "") -> dict[str, float]:
    """Every number in a section's figures by its path (a step of the ramp by its
    resource count: `steps.5000.operator_rss_mb`)."""
    if isinstance(value, bool):
        return {}
    if isinstance(value, int | float):
        return {prefix: value}
    found: dict[str, float] = {}
    if isinstance(value, dict):
        for key, inner in value.items():
            if key not in UNSPREAD:
                found.update(figures_of(inner, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            label = inner.get("resources", index) if isinstance(inner, dict) else index
            found.update(figures_of(inner, f"{prefix}.{label}"))
    return found


def section_spread(runs: list[JSON]) -> dict[str, JSON]:
    """Each figure of a section measured alone over its runs: each run's value, min, max."""
    each = [figures_of(run) for run in runs]
    paths = list(dict.fromkeys(path for figures in each for path in figures))
    return {path: spread([figures.get(path) for figures in each]) for path in paths}


def write_revert_runs(figures: JSON, measured: JSON, results: Path) -> JSON:
    """Detect-to-revert measured alone (`--only revert`): the newest KEEP_RUNS such runs
    of this commit, pooled and spread, as latest.json's `detect_to_revert_alone`."""
    runs = saved_run("revert", figures, measured, results)
    cases = list(figures["raw_ms"])
    latest: JSON = json.loads((results / "latest.json").read_text())
    latest["detect_to_revert_alone"] = {
        "commit": measured["commit"],
        "dirty": measured["dirty"],
        "finished_at": [run["finished_at"] for run in runs],
        "plan": figures["plan"],
        "pooled_ms": {
            case: summary([v for run in runs for v in run["revert"]["raw_ms"][case]])
            for case in cases
        },
        "spread_ms": {
            case: {
                q: spread([run["revert"]["by_case"].get(case, {}).get(q) for run in runs])
                for q in ("p50", "p95", "p99")
            }
            for case in cases
        },
    }
    (results / "latest.json").write_text(json.dumps(latest, indent=1))
    (results / "latest.md").write_text(markdown(latest))
    return latest


def alone_lines(alone: JSON | None) -> list[str]:
    """The detect-to-revert runs measured alone: pooled, and each run's p50 / p99."""
    if not alone:
        return []
    lines = [
        "",
        f"Detect-to-revert measured alone (`--only revert`), {len(alone['finished_at'])} runs "
        f"on commit {alone['commit'][:10]}{' + changes' if alone['dirty'] else ''} "
        "(the API server's clock; ms):",
        "",
        "| kind | n pooled | p50 | p95 | p99 | each run's p50 | each run's p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for case, s in alone["pooled_ms"].items():
        each = alone["spread_ms"][case]
        lines.append(
            f"| {case} | {s['n']} | {s['p50']} | {s['p95']} | {s['p99']} | "
            f"{' / '.join(cell(v) for v in each['p50']['runs'])} | "
            f"{' / '.join(cell(v) for v in each['p99']['runs'])} |"
        )
    return lines


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
