"""`python -m bench [--quick]`: one benchmark run, in order, on the local test bed.

The default-deadline Deployment needs over ten minutes of waiting, so in a full run
it goes on in a thread beside the other measurements; the quick run skips it.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import bench
import testbed.cluster
from bench import scale, scenarios
from bench.cluster import ROOT, ArgoRollouts, Bed, log, start_testbed
from bench.report import assemble, write
from testbed.processes import STATE
from testbed.support import BackgroundCall, OperatorProcess, WaitTimeout

RESULTS = ROOT / "bench" / "results"  # full runs; quick runs write to results/quick/
NOT_MEASURED: dict[str, Any] = {
    "failure_reported_s": None,
    "recovered_s": None,
    "note": "not measured in the quick run (600 s)",
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=bench.__doc__)
    parser.add_argument("--quick", action="store_true", help="small N, same code path (< 3 min)")
    quick = parser.parse_args().quick
    results = RESULTS / "quick" if quick else RESULTS
    results.mkdir(parents=True, exist_ok=True)
    was_up = start_testbed()
    bed = Bed()
    testbed.cluster.create_namespace(bed.namespace)
    started = time.time()
    try:
        raw, recover, scaled = run(bed, quick)
    except WaitTimeout as error:
        sys.exit(f"bench: {error}")
    finally:
        bed.core.delete_namespace(bed.namespace)
        if not was_up:
            testbed.cluster.down()
    scaled["reconcile_ratio_1000_vs_10_versions"] = scale.reconcile_ratio()
    write(assemble(quick, started, raw, recover, scaled), raw, results)


def run(
    bed: Bed, quick: bool
) -> tuple[dict[str, list[float]], dict[str, dict[str, Any]], dict[str, Any]]:
    """Every measurement: detect-to-revert samples, recoveries by contender, the scale run."""
    log_dir = STATE / "logs"
    argo = ArgoRollouts(bed.namespace, log_dir / "argo-rollouts-bench.log")  # builds once
    operator = OperatorProcess(log_dir / "operator-bench.log", "--namespace", bed.namespace)
    default_run = BackgroundCall(
        lambda: scenarios.recover_plain(bed, "plain-default", 4, None, undo=False, give_up_s=660)
    )
    try:
        operator.start()
        time.sleep(2)  # the operator lists and indexes before it acts
        if not quick:
            default_run.start()
        raw = scenarios.detect_to_revert(bed, 3 if quick else 20, 3 if quick else 5)
        modeldeploy = scenarios.recover_modeldeploy(bed, 4)
        log(f"recover modeldeploy: {modeldeploy}")
        undo = scenarios.recover_plain(bed, "plain-undo", 4, 30, undo=True, give_up_s=120)
        log(f"recover plain Deployment + undo script: {undo}")
        argo.start()
        rollouts = scenarios.recover_argo(bed, argo, 4, 30)
        argo.stop()
        log(f"recover Argo Rollouts, 30 s deadline + progressDeadlineAbort: {rollouts}")
        default = dict(NOT_MEASURED) if quick else default_run.result()
        if not quick:
            default["recovered_by_itself"] = default["recovered_s"] is not None
        log(f"recover plain Deployment, default deadline: {default}")
        operator.stop()
        scaled = scale.scale(bed, 30 if quick else 1000, 5 if quick else 50, log_dir)
    finally:
        operator.stop()
        argo.stop()
    recover = {
        "modeldeploy": modeldeploy,
        "deployment_default": default,
        "deployment_undo_script": undo,
        "argo_rollouts_abort": rollouts,
    }
    return raw, recover, scaled


if __name__ == "__main__":
    main()
