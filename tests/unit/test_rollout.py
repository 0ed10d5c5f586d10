"""The rollout rules (docs/behaviour.md B2-B9) as table-driven tests of the pure `decide`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from modeldeploy import constants as c
from modeldeploy.core.decide import decide
from modeldeploy.core.ledger import bound
from modeldeploy.core.plan import Decision
from modeldeploy.core.release import judge, release_of
from modeldeploy.model.observed import Observed
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import SpecError
from modeldeploy.model.status import VersionRecord
from tests.unit.builders import (
    BAD,
    at,
    condition,
    deployment,
    pod,
    present,
    resource,
    select,
    service,
    serving_v1,
    spec_of,
    step,
)

# ----------------------------------------------------------- B3, B4 rollouts


def test_first_reconcile_starts_a_manual_rollout_and_renders_the_deployment() -> None:
    decision = decide(resource(), Observed(), at(0))
    assert decision.deployment is not None
    assert decision.service is not None
    rollout = decision.status.rollout
    assert rollout is not None
    assert (rollout.version, rollout.trigger, rollout.outcome, rollout.revision) == (
        "v1",
        "Manual",
        "Progressing",
        1,
    )
    assert rollout.started_at == at(0)
    assert condition(decision.status, c.RECONCILING) == ("True", c.REASON_ROLLOUT_IN_PROGRESS)
    assert decision.status.phase == "Progressing"
    assert [e.reason for e in decision.events] == ["RolloutStarted"]


def test_rollout_succeeds_when_all_new_replicas_are_available() -> None:
    res = serving_v1()
    status = res.status
    assert (status.last_good_version, status.serving_version, status.phase) == (
        "v1",
        "v1",
        "Available",
    )
    assert present(status.version_record("v1")).state == "Available"
    assert status.history[0].outcome == "Succeeded"
    assert condition(res, c.READY) == ("True", "Available")
    assert status.readiness == "2/2"


def test_a_spec_change_mid_rollout_supersedes_it() -> None:
    res = serving_v1(versions={"v1": "a:1", "v2": "a:2", "v3": "a:3"})
    res, _ = step(select(res, "v2"), Observed(deployment=deployment(res)), 3)
    res, decision = step(select(res, "v3"), Observed(deployment=deployment(res)), 4)
    assert [(h.version, h.outcome) for h in res.status.history[:2]] == [
        ("v3", "Progressing"),
        ("v2", "Superseded"),
    ]
    assert decision.deployment is not None


# ------------------------------------------------------------- B6 failure


def fail_v2(**kwargs: Any) -> tuple[Resource, Decision]:
    res = serving_v1(**kwargs)
    bad = select(res, "v2")
    bad, _ = step(bad, Observed(deployment=deployment(res)), 3)
    crashing = pod(bad, "v2", waiting_reason="CrashLoopBackOff", restart_count=1, created=4)
    return step(bad, Observed(deployment=deployment(bad, ready=0, old=2), pods=(crashing,)), 5)


def test_crashloop_failure_is_recorded_then_reverted_to_last_good() -> None:
    res, decision = fail_v2()
    status = res.status
    record = present(status.version_record("v2"))
    assert (record.state, record.reason, record.failed_at) == (
        "Failed",
        "CrashLoopBackOff",
        at(5),
    )
    assert (status.history[0].version, status.history[0].outcome) == ("v2", "Failed")
    # Not yet RolledBack: that is said only once the spec names the target.
    assert condition(status, c.ROLLED_BACK)[0] == "False"
    assert status.reverts == ()
    intent = present(status.intent)
    assert (intent.trigger, intent.version, intent.generation) == ("Automatic", "v1", 2)
    change = present(decision.spec_change)
    assert (change.set_version, change.expect_version, change.expect_generation) == (
        "v1",
        "v2",
        2,
    )
    assert decision.deployment is None  # never re-applied
    assert [e.reason for e in decision.events] == ["RolloutFailed"]
    assert [n.reason for n in status.outbox][-1] == "RolloutFailed"
    assert status.serving_version == "v1"


def test_the_revert_rollout_is_automatic_and_ends_rolled_back() -> None:
    res, _ = fail_v2()
    back = select(res, "v1")
    back, decision = step(back, Observed(deployment=deployment(back, "v2", ready=0, old=2)), 6)
    rollout = present(back.status.rollout)
    assert (rollout.trigger, rollout.from_version, rollout.version) == (
        "Automatic",
        "v2",
        "v1",
    )
    assert decision.deployment is not None
    assert [e.reason for e in decision.events] == ["RolledBack", "RolloutStarted"]
    assert condition(back, c.ROLLED_BACK) == ("True", "CrashLoopBackOff")
    assert len(back.status.reverts) == 1
    back, _ = step(back, Observed(deployment=deployment(back)), 7)
    assert back.status.history[0].reason == "RolledBack"
    assert condition(back, c.READY) == ("True", "RolledBack")
    # The release the user made failed: kstatus tools must see that (Stalled wins), on
    # the generation the operator wrote, until a user writes the spec again.
    assert condition(back, c.STALLED) == ("True", "RolledBack")
    assert back.status.phase == "Degraded"
    written = replace(back, generation=back.generation + 1)  # e.g. a new version listed
    written, _ = step(written, Observed(deployment=deployment(back)), 8)
    assert condition(written, c.STALLED) == ("False", "NotStalled")
    assert written.status.phase == "Available"


def test_revert_target_failing_too_stalls_with_rollback_target_unhealthy() -> None:
    res, _ = fail_v2()
    back = select(res, "v1")
    back, _ = step(back, Observed(deployment=deployment(back, "v2", ready=0, old=2)), 6)
    # v1's pods were there before the revert began; one crashes again after it.
    crashing = pod(back, "v1", waiting_reason="CrashLoopBackOff", restart_count=1)
    back, decision = step(back, Observed(deployment=deployment(back, ready=0), pods=(crashing,)), 8)
    assert decision.spec_change is None
    assert condition(back, c.STALLED) == ("True", "RollbackTargetUnhealthy")
    assert back.status.phase == "Degraded"
    assert "RollbackTargetUnhealthy" in [e.reason for e in decision.events]


def test_first_version_failure_is_failed_without_revert() -> None:
    res = resource(active="v2")
    res, _ = step(res, Observed(), 0)
    crashing = pod(res, waiting_reason="CrashLoopBackOff")
    res, decision = step(res, Observed(deployment=deployment(res, ready=0), pods=(crashing,)), 2)
    assert decision.spec_change is None
    assert condition(res, c.STALLED) == ("True", "FirstVersionFailed")
    assert res.status.phase == "Failed"


def test_auto_rollback_off_records_the_failure_and_stalls() -> None:
    res, decision = fail_v2(autoRollback=False)
    assert decision.spec_change is None
    assert condition(res, c.STALLED) == ("True", "AutoRollbackDisabled")
    assert res.status.phase == "Degraded"


@pytest.mark.parametrize(
    ("versions", "why"),
    [
        pytest.param(
            {"v1": "registry.example/m:1-edited", "v2": BAD},
            "renders different pods",
            id="last-good-edited",
        ),
        pytest.param(
            {"v3": "registry.example/m:3", "v2": BAD}, "was removed", id="last-good-removed"
        ),
    ],
)
def test_a_changed_or_removed_last_good_version_is_no_rollback_target(
    versions: dict[str, str], why: str
) -> None:
    res = serving_v1()
    spec = resource(active="v2", versions=versions).spec
    bad = replace(res, spec=spec, generation=2)
    bad, _ = step(bad, Observed(deployment=deployment(res)), 3)
    crashing = pod(bad, "v2", waiting_reason="CrashLoopBackOff", created=4)
    bad, decision = step(bad, Observed(deployment=deployment(bad, ready=0), pods=(crashing,)), 4)
    assert decision.spec_change is None
    stalled = next(k for k in bad.status.conditions if k.type == c.STALLED)
    assert (stalled.status, stalled.reason) == ("True", "NoRollbackTarget")
    assert why in stalled.message


def rendered_by_an_older_operator(res: Resource) -> Resource:
    """`res` as an operator that rendered pods differently left it (another template hash)."""
    old = "0123456789ab"
    status = res.status
    assert status.rollout is not None
    return replace(
        res,
        status=replace(
            status,
            versions=tuple(replace(v, template_hash=old) for v in status.versions),
            history=tuple(replace(h, template_hash=old) for h in status.history),
            rollout=replace(status.rollout, template_hash=old),
            last_good_template_hash=old,
        ),
    )


def test_after_an_upgrade_that_changes_rendering_a_failing_rerender_keeps_the_old_pods() -> None:
    res = rendered_by_an_older_operator(serving_v1())
    running = replace(deployment(res), template_hash="0123456789ab")
    res, decision = step(res, Observed(deployment=running), 5)
    assert decision.deployment is not None  # the active version rolls out once, re-rendered
    assert res.status.rollout is not None
    assert (res.status.rollout.version, res.status.rollout.outcome) == ("v1", "Progressing")
    refused = pod(res, "v1", waiting_reason="CreateContainerConfigError", created=6)
    res, decision = step(
        res, Observed(deployment=deployment(res, ready=0, old=2), pods=(refused,)), 7
    )
    # nothing to revert to (the pods observed good cannot be rendered again); no write
    # touches the old ReplicaSet, whose pods keep serving (maxUnavailable 0)
    assert (decision.spec_change, decision.deployment) == (None, None)
    stalled = next(k for k in res.status.conditions if k.type == c.STALLED)
    assert (stalled.status, stalled.reason) == ("True", "NoRollbackTarget")
    assert "the operator's rendering changed" in stalled.message
    assert res.status.phase == "Degraded"
    # fixing the version (a non-root image here) makes a new candidate, which recovers it
    fixed = resource(versions={"v1": "registry.example/m:1-nonroot", "v2": BAD}, generation=2)
    res = replace(res, spec=fixed.spec, generation=2)
    res, _ = step(res, Observed(deployment=deployment(res, ready=0, old=2)), 8)
    assert present(res.status.rollout).outcome == "Progressing"
    res, _ = step(res, Observed(deployment=deployment(res)), 9)
    assert condition(res, c.STALLED)[0] == "False"
    assert condition(res, c.READY) == ("True", "Available")


# ---------------------------------------------------------- B7 quarantine


def quarantined_v2_selected_again() -> tuple[Resource, Decision]:
    res, _ = fail_v2()
    back = select(res, "v1")
    back, _ = step(back, Observed(deployment=deployment(back, "v2", ready=0, old=2)), 6)
    back, _ = step(back, Observed(deployment=deployment(back)), 7)
    again = select(back, "v2")
    return step(again, Observed(deployment=deployment(back, "v1")), 8)


def test_selecting_a_quarantined_version_is_refused_and_reverted_with_a_retry_hint() -> None:
    res, decision = quarantined_v2_selected_again()
    assert decision.deployment is None
    change = present(decision.spec_change)
    assert (change.set_version, change.expect_version) == ("v1", "v2")
    (warning,) = [e for e in decision.events if e.reason == "VersionQuarantined"]
    assert "modeldeploy.io/retry=v2" in warning.message
    assert "kubectl modeldeploy retry m v2" in warning.message
    assert res.status.history[0].version == "v1"  # no v2 rollout


def test_retry_annotation_lifts_the_quarantine_and_rolls_out_with_trigger_retry() -> None:
    res, _ = quarantined_v2_selected_again()
    back = select(res, "v1")
    back, _ = step(back, Observed(deployment=deployment(back)), 9)
    retried = replace(back, retry_version="v2")
    retried, decision = step(retried, Observed(deployment=deployment(back)), 10)
    change = decision.spec_change
    assert change is not None
    assert (change.set_version, change.remove_retry) == ("v2", True)
    assert present(retried.status.version_record("v2")).state == "Retrying"
    now_v2 = replace(select(retried, "v2"), retry_version=None)
    now_v2, decision = step(now_v2, Observed(deployment=deployment(back)), 11)
    rollout = present(now_v2.status.rollout)
    assert (rollout.version, rollout.trigger) == (
        "v2",
        "Retry",
    )
    assert decision.deployment is not None


def test_a_retry_of_an_unknown_version_is_refused_and_consumed() -> None:
    res = replace(serving_v1(), retry_version="v9")
    _, decision = step(res, Observed(deployment=deployment(res)), 3)
    assert decision.spec_change is not None
    assert (decision.spec_change.set_version, decision.spec_change.remove_retry) == (None, True)
    assert any("names no entry" in e.message for e in decision.events)


# ------------------------------------------------------------- B9 loop guard


def reselect_and_revert(res: Resource, seconds: float) -> tuple[Resource, Decision]:
    again = select(res, "v2")
    again, decision = step(again, Observed(deployment=deployment(res, "v1")), seconds)
    if decision.spec_change:
        again = select(again, "v1")
        again, _ = step(again, Observed(deployment=deployment(again)), seconds + 1)
    return again, decision


def test_the_fourth_revert_away_from_one_version_in_ten_minutes_stalls_with_revert_loop() -> None:
    res, _ = quarantined_v2_selected_again()  # revert 1 (failure) and 2 (re-selection)
    res = select(res, "v1")
    res, _ = step(res, Observed(deployment=deployment(res)), 9)
    res, third = reselect_and_revert(res, 20)
    assert third.spec_change is not None
    res, fourth = reselect_and_revert(res, 30)
    assert fourth.spec_change is None
    assert condition(res, c.STALLED) == ("True", "RevertLoop")


def test_reverts_count_whatever_the_clock_so_a_slow_self_heal_trips_the_guard() -> None:
    # A GitOps tool re-applying the quarantined version every ten minutes or more: the
    # count is since the version failed, not within a window it could wait out.
    res, _ = quarantined_v2_selected_again()
    res = select(res, "v1")
    res, _ = step(res, Observed(deployment=deployment(res)), 9)
    res, third = reselect_and_revert(res, 20 + 601)
    assert third.spec_change is not None
    res, fourth = reselect_and_revert(res, 20 + 3 * 3600)
    assert fourth.spec_change is None
    assert condition(res, c.STALLED) == ("True", "RevertLoop")
    assert len(res.status.reverts) == 3  # kept, and no more: the guard bounds them


# ------------------------------------------------------------ B10 crash safety


def test_a_recorded_revert_is_reissued_after_a_crash_without_a_second_record() -> None:
    res, first = fail_v2()  # status written, then the operator died before the spec write
    again, decision = step(res, Observed(deployment=deployment(res, "v2", ready=0, old=2)), 9)
    assert decision.spec_change == first.spec_change
    assert again.status.intent == res.status.intent
    assert decision.events == ()


# ---------------------------------------------------------------- B2 idempotence


def test_deciding_again_on_unchanged_state_writes_nothing() -> None:
    res = serving_v1()
    observed = Observed(deployment=deployment(res), service=service(res))
    decision = decide(res, observed, at(100))
    assert decision.status_changed is False
    assert (decision.deployment, decision.service, decision.spec_change) == (None, None, None)
    assert decision.events == ()


def test_drift_in_our_fields_is_repaired() -> None:
    res = serving_v1()
    drifted = deployment(res)
    template = drifted.spec["template"]
    container = {**template["spec"]["containers"][0], "image": "hand/edited:9"}
    drifted = replace(
        drifted,
        spec={
            **drifted.spec,
            "template": {**template, "spec": {**template["spec"], "containers": [container]}},
        },
    )
    decision = decide(res, Observed(deployment=drifted), at(100))
    assert decision.deployment is not None


# ------------------------------------------------------- blocked reconciles


def test_an_invalid_spec_is_reported_and_nothing_is_applied() -> None:
    res = replace(serving_v1(), spec=SpecError("spec.x is wrong"))
    decision = decide(res, Observed(), at(3))
    assert (decision.deployment, decision.service, decision.spec_change) == (None, None, None)
    assert condition(decision.status, c.READY) == ("False", "InvalidSpec")
    assert condition(decision.status, c.STALLED) == ("True", "InvalidSpec")
    assert [e.reason for e in decision.events] == ["InvalidSpec"]


def test_a_deployment_we_do_not_control_is_a_name_conflict() -> None:
    res = resource()
    foreign = replace(deployment(res), controller_uid=None)
    decision = decide(res, Observed(deployment=foreign), at(0))
    assert (decision.deployment, decision.service) == (None, None)
    assert condition(decision.status, c.READY) == ("False", "NameConflict")


# ------------------------------------------------------------- history, B12


def test_history_is_bounded_newest_first() -> None:
    res = serving_v1(versions={"v1": "a:1", "v2": "a:2"}, historyLimit=3)
    for second, version in enumerate(["v2", "v1", "v2", "v1"], start=10):
        res = select(res, version)
        res, _ = step(res, Observed(deployment=deployment(res)), second)
        res, _ = step(res, Observed(deployment=deployment(res)), second + 0.5)
    revisions = [h.revision for h in res.status.history]
    assert revisions == [5, 4, 3]


def test_a_thousand_versions_are_looked_up_by_name() -> None:
    versions = {f"v{i}": f"registry.example/m:{i}" for i in range(1000)}
    res = resource(active="v999", versions=versions)
    assert len(spec_of(res).versions) == 1000
    decision = decide(res, Observed(), at(0))
    assert decision.deployment is not None
    container = decision.deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/m:999"


def test_status_is_bounded_whatever_the_ledger_holds() -> None:
    listed = {f"v{i}": f"r/m:{i}" for i in range(50, 100)}
    res = serving_v1(versions={"v1": "r/m:1", **listed})
    spec = spec_of(res)
    failed = tuple(
        VersionRecord(
            name=f"gone-{i:03d}" if i < 50 else f"v{i}",
            state="Failed",
            template_hash="h",
            reason="CrashLoopBackOff",
            message="m" * 256,
            failed_at=at(i),
        )
        for i in range(100)
    )
    status = replace(res.status, versions=(*res.status.versions, *failed))
    bounded = bound(status, spec)
    names = {v.name for v in bounded.versions}
    assert {f"gone-{i:03d}" for i in range(40, 50)} <= names  # the 10 removed most recently
    assert not any(f"gone-{i:03d}" in names for i in range(40))
    assert sum(1 for v in bounded.versions if v.message) == 20
    assert sum(1 for v in bounded.versions if v.reason) == 20
    assert {v.name for v in bounded.versions if v.message} == {f"v{i}" for i in range(80, 100)}


# ----------------------------------------------------------- onFailure: KeepSpec


def keep_spec_failed() -> tuple[Resource, Decision]:
    return fail_v2(onFailure="KeepSpec")


def test_keep_spec_puts_the_deployment_back_and_leaves_the_spec_alone() -> None:
    res, decision = keep_spec_failed()
    assert decision.spec_change is None
    assert decision.deployment is not None
    labels = decision.deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["modeldeploy.io/version"] == "v1"
    assert [e.reason for e in decision.events] == ["RolloutFailed", "RolloutStarted", "RolledBack"]
    rollout = present(res.status.rollout)
    assert (rollout.version, rollout.trigger, rollout.from_version) == ("v1", "Automatic", "v2")
    assert condition(res, c.STALLED) == ("True", "RolledBack")
    assert condition(res, c.ROLLED_BACK)[0] == "True"
    assert condition(res, c.READY)[0] == "False"
    stalled = next(k for k in res.status.conditions if k.type == c.STALLED)
    assert "the spec still names v2 (onFailure: KeepSpec)" in stalled.message


def test_keep_spec_serves_the_last_good_version_and_stays_stalled_until_the_spec_changes() -> None:
    res, _ = keep_spec_failed()
    res, decision = step(res, Observed(deployment=deployment(res, "v1")), 6)
    assert (res.status.serving_version, res.status.last_good_version) == ("v1", "v1")
    assert res.status.history[0].outcome == "Succeeded"
    assert condition(res, c.STALLED) == ("True", "RolledBack")
    assert res.status.phase == "Degraded"
    assert decision.deployment is None
    _, decision = step(res, Observed(deployment=deployment(res, "v1")), 7)
    assert decision.status_changed is False
    assert decision.events == ()
    moved = select(res, "v1")  # the user (or Git) names a version that works
    moved, decision = step(moved, Observed(deployment=deployment(res, "v1")), 8)
    assert condition(moved, c.STALLED)[0] == "False"
    assert condition(moved, c.READY) == ("True", "RolledBack")  # what serves came back


def test_keep_spec_with_a_failing_last_good_version_stalls_as_target_unhealthy() -> None:
    res, _ = keep_spec_failed()
    crashing = pod(res, "v1", waiting_reason="CrashLoopBackOff", restart_count=1)
    res, decision = step(
        res, Observed(deployment=deployment(res, "v1", ready=0), pods=(crashing,)), 6
    )
    res, decision = step(res, Observed(deployment=deployment(res, "v1", ready=0)), 7)
    assert condition(res, c.STALLED) == ("True", "RollbackTargetUnhealthy")
    assert decision.deployment is None


def test_a_reverted_release_stays_failed_until_the_reverted_value_is_applied_by_its_writer() -> (
    None
):
    res, _ = fail_v2()
    back = replace(select(res, "v1"), active_version_managers=("modeldeploy",))
    back, _ = step(back, Observed(deployment=deployment(back, "v2", ready=0, old=2)), 6)
    back, _ = step(back, Observed(deployment=deployment(back)), 7)
    stalled = next(k for k in back.status.conditions if k.type == c.STALLED)
    assert (stalled.status, stalled.reason) == ("True", "RolledBack")
    assert "v2 failed (CrashLoopBackOff: pod" in stalled.message
    # Helm's rollback (server-side apply of v1) makes Helm a manager of the field again.
    acknowledged = replace(back, active_version_managers=("helm", "modeldeploy"))
    acknowledged, decision = step(acknowledged, Observed(deployment=deployment(back)), 8)
    assert condition(acknowledged, c.STALLED) == ("False", "NotStalled")
    assert decision.release_active_version  # and the operator lets go of the field
    assert acknowledged.status.phase == "Available"


@pytest.mark.parametrize("later_s", [11 * 60, 24 * 3600])
def test_the_verdict_on_a_reverted_release_stands_whatever_the_clock(later_s: float) -> None:
    """Stalled=RolledBack (and `wait`'s judgement of the release) last until the spec is
    written again, not until a revert ages out of the loop guard: an expired stall let
    go of spec.activeVersion and `wait` pass the failed release."""
    res, _ = fail_v2()
    back = replace(select(res, "v1"), active_version_managers=("modeldeploy",))
    back, _ = step(back, Observed(deployment=deployment(back, "v2", ready=0, old=2)), 6)
    back, _ = step(back, Observed(deployment=deployment(back)), 7)
    later, decision = step(back, Observed(deployment=deployment(back)), 7 + later_s)
    assert condition(later, c.STALLED) == ("True", "RolledBack")
    assert not decision.release_active_version
    release = release_of(later)
    assert (release.version, release.generation) == ("v2", later.generation - 1)
    judged = present(judge(later, release))
    assert not judged.succeeded and "reverted to v1" in judged.message
