"""The children a resource owns, rendered from the draft: its Deployment, Service, warm
standby and disruption budget (B1, B17, B25).

Part of the pure core, under `decide` and over the rules that shape the draft: what
the Deployment runs is the draft's target, the Service selects the last good version's
pods alone while a failed one is kept out of it, the standby is rendered as it was
observed good. A child the API refused for this spec is not applied again before its
backoff (InvalidSpec says why), and one that already runs as rendered is not applied.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from modeldeploy import constants as c
from modeldeploy.core import ledger, revert, standby
from modeldeploy.core.draft import Draft
from modeldeploy.core.plan import Problem
from modeldeploy.core.render import (
    covers,
    render_deployment,
    render_disruption_budget,
    render_service,
    render_standby,
)
from modeldeploy.model.observed import ChildState, Observed, RefusalKey
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import JSON
from modeldeploy.model.text import shorten

APPLY = {
    "Deployment": RefusalKey.APPLY_DEPLOYMENT,
    "Service": RefusalKey.APPLY_SERVICE,
    "Standby": RefusalKey.APPLY_STANDBY,
    "PodDisruptionBudget": RefusalKey.APPLY_BUDGET,
}


def render(
    draft: Draft, resource: Resource, observed: Observed, now: datetime
) -> tuple[dict[str, JSON | None], Draft]:
    """The Deployment (for the target), Service, standby and budget to apply, unless the
    API refused one for this spec and it is not yet time to try again (InvalidSpec)."""
    spec, target, record = draft.spec, draft.target, draft.status.standby
    deployment = None
    if target is not None:
        version = spec.versions[target.version]
        gated = ledger.gated(draft.status, target.version, target.digest)
        strategy = ledger.strategy(draft.status, spec, target.digest)
        deployment = render_deployment(resource, spec, version, target.digest, gated, strategy)
    serving_standby = record is not None and record.serving
    service = (
        render_service(resource, spec, serving_standby, draft.only_template)
        if spec.service.enabled
        else None
    )
    children: dict[str, JSON | None] = {
        "Deployment": deployment,
        "Service": service,
        "Standby": _warm(draft, resource, observed),
        "PodDisruptionBudget": render_disruption_budget(resource, spec),
    }
    for kind, manifest in children.items():
        refused = observed.refusal(APPLY[kind], resource.generation)
        if manifest is None or refused is None:
            continue
        said = f"the API server refused the {kind} (HTTP {refused.code}): {refused.message}"
        draft = replace(draft, stall=draft.stall or Problem(c.REASON_INVALID_SPEC, shorten(said)))
        if not revert.retry_due(refused, now):
            children[kind] = None
            draft = draft.wake_in(revert.retry_in(refused, now))
    return children, draft


def _warm(draft: Draft, resource: Resource, observed: Observed) -> JSON | None:
    """The standby Deployment, as it was observed good: a version edited since is not
    re-rendered under it, and a <name>-standby someone else made is never taken over."""
    spec, record = draft.spec, draft.status.standby
    foreign = observed.standby is not None and observed.standby.controller_uid != resource.uid
    if (
        not draft.keep_standby
        or record is None
        or not standby.renders_as_observed(record, spec, resource.name)
        or foreign
    ):
        return None
    config = spec.rollout.standby
    replicas = (config.replicas if config and config.replicas else None) or spec.replicas
    version = spec.versions[record.version]
    return render_standby(resource, spec, version, record.template_hash, replicas)


def needed(desired: JSON | None, observed: ChildState | None) -> JSON | None:
    """`desired` when what runs differs from it (or there is none), else None: an apply
    that would change nothing is not made."""
    if desired is None:
        return None
    if observed is None:
        return desired
    wanted_hash = desired["metadata"].get("annotations", {}).get(c.ANNOTATION_TEMPLATE_HASH)
    if observed.template_hash != wanted_hash or not covers(observed.spec, desired["spec"]):
        return desired
    # A selector is ours whole: a key we no longer set must go (covers() ignores extras).
    selector = desired["spec"].get("selector")
    if desired["kind"] == "Service" and observed.spec.get("selector") != selector:
        return desired
    return None


def foreign(resource: Resource, observed: Observed) -> str | None:
    """A child of our name that someone else controls (NameConflict): it is never
    touched, and nothing of this resource is applied while it is there (B1)."""
    named = (
        ("Deployment", observed.deployment),
        ("Service", observed.service),
        ("PodDisruptionBudget", observed.budget),
    )
    for kind, child in named:
        if child is not None and child.controller_uid != resource.uid:
            return (
                f"a {kind} named {resource.name} exists and is not controlled by this "
                f"ModelDeployment; it is left untouched"
            )
    return None
