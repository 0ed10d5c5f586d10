"""What the edge reads before `decide`, asked for once (reconcile.py takes it first).

The top of the pure core, beside `decide`: a version's configuration snapshot and its
registry model version come before its rollout, and a child of our name that the
label-filtered caches do not show is looked at first (B1). Asking here, once, keeps
`decide` to one run per reconcile.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from modeldeploy.core import children, config, registry
from modeldeploy.core.plan import ResolveRequest, SnapshotRequest
from modeldeploy.model.observed import Observed
from modeldeploy.model.resource import Resource
from modeldeploy.model.settings import Settings
from modeldeploy.model.spec import SpecError

DEFAULTS = Settings()


@dataclass(frozen=True)
class Reads:
    """What the edge reads before `decide`, asked for once."""

    snapshots: tuple[SnapshotRequest, ...] = ()  # to take before a version's rollout
    children: tuple[str, ...] = ()  # kinds (APPLY's keys) of our name the caches lack
    resolutions: tuple[ResolveRequest, ...] = ()  # registry references, before a rollout


def reads(
    resource: Resource, observed: Observed, now: datetime, settings: Settings = DEFAULTS
) -> Reads:
    """The configuration snapshots and registry model versions a version needs before its
    rollout, and each child this spec has that the label-filtered caches do not show: one
    of that name may exist, made by someone else, and is looked at first so it is never
    taken over (B1)."""
    spec = resource.spec
    if isinstance(spec, SpecError) or children.foreign(resource, observed):
        return Reads()
    ours = (
        ("Deployment", True, observed.deployment),
        ("Service", spec.service.enabled, observed.service),
        ("Standby", spec.rollout.standby is not None, observed.standby),
        ("PodDisruptionBudget", spec.disruption is not None, observed.budget),
    )
    missing = tuple(kind for kind, has, seen in ours if has and seen is None)
    snapshots = config.wanted(resource.status, resource, spec, observed, now)
    models = registry.wanted(resource.status, resource, spec, observed, now, settings)
    return Reads(snapshots, missing, models)
