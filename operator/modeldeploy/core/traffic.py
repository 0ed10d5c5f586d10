"""Which pods the Service sends traffic to while a failure is handled (B22).

Part of the pure core, under `decide`. Normally the Service selects every Ready pod of
the resource. While the standby serves a revert, it selects the standby's pods
(core/standby.py). And once a version that was already receiving traffic has failed
(its pods Ready: it failed in its bake or guard, or was promoted over old pods that
are gone), the Service selects the last good version's pods alone the moment at least
one of them is Ready, so the failed version answers nothing more; fewer pods serve
until the revert has brought the last good version back to full size. That is the
default (`spec.rollout.failedTraffic: Stop`): a wrong answer is worse than a slower
one. `Keep` leaves every Ready pod in the Service until the failed ones are gone.
"""

from __future__ import annotations

from dataclasses import replace

from modeldeploy import constants as c
from modeldeploy.core.draft import Draft
from modeldeploy.core.signals import owned_pods
from modeldeploy.model.observed import Observed
from modeldeploy.model.spec import Spec
from modeldeploy.model.status import Status


def route(draft: Draft, observed: Observed) -> Draft:
    """Which pods the Service selects (`only_template`: that template's alone), and what
    serves: the standby during its switch, the last good version while a failed one is
    kept out."""
    status = draft.status
    record = status.standby
    if record and record.serving:
        return replace(draft, status=replace(status, serving_version=record.version))
    only = only_last_good(status, draft.spec, observed)
    if only is None:
        return draft
    serving = replace(status, serving_version=status.last_good_version)
    return replace(draft, status=serving, only_template=only)


def only_last_good(status: Status, spec: Spec, observed: Observed) -> str | None:
    """The last good template's hash, when the Service must select its pods alone."""
    last_good = status.last_good_template_hash
    rollout = status.rollout
    if (
        spec.rollout.failed_traffic != c.FAILED_TRAFFIC_STOP
        or last_good is None
        or rollout is None
        or not _handling_a_failure(status, last_good)
    ):
        return None
    deployment = observed.deployment
    if deployment is None:
        return None
    ours = {rs.uid for rs in observed.replica_sets if rs.controller_uid == deployment.uid}
    others_ready = any(
        p.ready and p.template_hash != last_good and p.controller_uid in ours and not p.deleting
        for p in observed.pods
    )
    last_good_ready = any(p.ready for p in owned_pods(observed, last_good))
    return last_good if others_ready and last_good_ready else None


def _handling_a_failure(status: Status, last_good: str) -> bool:
    """A version failed and the last good one is not back in full yet: the failed
    rollout is the latest, or the automatic rollout back to the last good one runs."""
    rollout = status.rollout
    assert rollout is not None
    failed = rollout.outcome == c.OUTCOME_FAILED and rollout.template_hash != last_good
    going_back = (
        rollout.trigger == c.TRIGGER_AUTOMATIC
        and rollout.outcome == c.OUTCOME_PROGRESSING
        and rollout.template_hash == last_good
    )
    return failed or going_back
