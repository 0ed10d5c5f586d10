"""The bench's results files when a section is measured alone (`python -m bench --only`).

A full run writes latest.json whole; a section run replaces only its own figures in it
and says on which commit and when, and detect-to-revert runs of one commit pool. These
run the real writers on a copy of the committed results (matplotlib is not needed).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bench.report import carried, write_revert_runs, write_section

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def results_copy(tmp_path: Path) -> Path:
    shutil.copy(RESULTS / "latest.json", tmp_path / "latest.json")
    return tmp_path


def measured(commit: str, at: str) -> dict[str, Any]:
    return {"finished_at": at, "commit": commit, "dirty": False, "duration_s": 1.0}


def test_a_scale_run_alone_replaces_the_scale_figures_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    results = results_copy(tmp_path)
    before = json.loads((results / "latest.json").read_text())
    figures = {"crs": 10, "kubectl_baseline_s": 7.0, "restart_idle_s": 1.5}
    write_section("scale", figures, measured("c0ffee" * 7, "2026-12-05T01:00:00Z"), results)
    latest = json.loads((results / "latest.json").read_text())
    assert latest["scale"]["restart_idle_s"] == 1.5
    assert latest["scale"]["reconcile_cost"] == before["scale"]["reconcile_cost"]
    assert "skipped" not in latest["scale"]  # what the full run said of scale is replaced
    assert latest["detect_to_revert_ms"] == before["detect_to_revert_ms"]
    assert latest["scale"]["measured_alone"]["commit"].startswith("c0ffee")
    assert (
        "measured alone (`--only scale`) on commit c0ffeec0ff"
        in (results / "latest.md").read_text()
    )


def revert_figures(values: list[float]) -> dict[str, Any]:
    summary = {"p50": values[len(values) // 2], "p95": max(values), "p99": max(values)}
    return {"raw_ms": {"crashloop": values}, "by_case": {"crashloop": summary}, "plan": {}}


def test_revert_runs_of_one_commit_pool_and_another_commits_do_not(tmp_path: Path) -> None:
    results = results_copy(tmp_path)
    write_revert_runs(
        revert_figures([10.0, 20.0]), measured("a" * 40, "2026-12-05T01:00:00Z"), results
    )
    write_revert_runs(
        revert_figures([30.0, 40.0]), measured("b" * 40, "2026-12-05T01:10:00Z"), results
    )
    write_revert_runs(
        revert_figures([50.0, 60.0]), measured("b" * 40, "2026-12-05T01:20:00Z"), results
    )
    alone = json.loads((results / "latest.json").read_text())["detect_to_revert_alone"]
    assert alone["commit"] == "b" * 40
    assert alone["pooled_ms"]["crashloop"]["n"] == 4
    assert alone["spread_ms"]["crashloop"]["p99"]["runs"] == [40.0, 60.0]
    assert "2 runs on commit bbbbbbbbbb" in (results / "latest.md").read_text()


def test_a_full_run_keeps_the_ramp_and_the_revert_runs_it_did_not_measure(
    tmp_path: Path,
) -> None:
    results = results_copy(tmp_path)
    before = json.loads((results / "latest.json").read_text())
    run = {k: v for k, v in before.items() if k != "detect_to_revert_alone"}
    run["scale"] = {k: v for k, v in before["scale"].items() if k != "max"}
    latest = carried(run, results / "latest.json")
    assert latest["scale"]["max"] == before["scale"]["max"]
    assert latest["detect_to_revert_alone"] == before["detect_to_revert_alone"]
    ramped = {**run, "scale": {**run["scale"], "max": {"steps": []}}}
    assert carried(ramped, results / "latest.json")["scale"]["max"] == {"steps": []}


def test_runs_of_a_section_alone_spread_each_figure_over_one_commits_runs(
    tmp_path: Path,
) -> None:
    results = results_copy(tmp_path)

    def ramp(rss: float) -> dict[str, Any]:
        step = {"resources": 5000, "operator_rss_mb": rss, "profile": {"samples": 9}}
        return {"steps": [step], "rss_mb_per_resource": rss / 5000, "broke": None}

    write_section("ramp", ramp(300.0), measured("a" * 40, "2026-12-05T01:00:00Z"), results)
    write_section("ramp", ramp(340.0), measured("b" * 40, "2026-12-05T02:00:00Z"), results)
    write_section("ramp", ramp(360.0), measured("b" * 40, "2026-12-05T03:00:00Z"), results)
    alone = json.loads((results / "latest.json").read_text())["scale"]["max"]["measured_alone"]
    assert alone["runs"] == 2
    assert alone["spread"]["steps.5000.operator_rss_mb"] == {
        "runs": [340.0, 360.0],
        "min": 340.0,
        "max": 360.0,
    }
    assert not any("profile" in path for path in alone["spread"])
    assert "| steps.5000.operator_rss_mb | 340 / 360 | 340 | 360 |" in (
        (results / "latest.md").read_text()
    )
