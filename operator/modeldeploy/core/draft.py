"""The draft of one reconcile's decision: what every rule of the core takes and returns.

Part of the pure core, below the rules and above the ledger: `decide` starts a draft
from the resource's status and hands it down its ordered list of rules
(core/decide.py); each returns it with its own part done (the new status, Events, the
spec write, a stall, when to look again, the queries and golden requests due, what the
Deployment should run), and `decide` turns the last one into the `Decision` the edge
carries out. A rule reads what earlier rules wrote only through the draft, so the order
of the list is the order of the behaviour rules.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from modeldeploy.core.analysis import Query
from modeldeploy.core.ledger import Target
from modeldeploy.core.plan import Event, PodGate, Problem, SpecChange, ValidationRequest
from modeldeploy.model.spec import Spec
from modeldeploy.model.status import Status


@dataclass(frozen=True)
class Draft:
    """The decision as it takes shape, one rule after the other."""

    status: Status
    spec: Spec  # as the versions' pods run it: their configuration snapshots folded in
    events: tuple[Event, ...] = ()
    spec_change: SpecChange | None = None
    stall: Problem | None = None  # what needs a person (Stalled)
    requeue: float | None = None  # seconds until the resource is looked at again
    queries: tuple[Query, ...] = ()  # analysis measurements due
    target: Target | None = None  # what the Deployment should run; None: leave it alone
    quarantined: bool = False  # the version the spec names is quarantined
    fallback: str | None = None  # KeepSpec: the version the Deployment runs instead
    validations: tuple[ValidationRequest, ...] = ()  # golden requests due (spec.validation)
    gates: tuple[PodGate, ...] = ()  # pods whose readiness gate to set
    # The active version lacks what its rollout needs first (its configuration snapshot,
    # its registry model version): no rollout of it yet.
    waiting: bool = False
    consume_refresh: bool = False  # the refresh-config annotation was handled
    consume_refresh_registry: bool = False  # the refresh-registry annotation was handled
    deletes: tuple[str, ...] = ()  # snapshot ConfigMaps no version needs any more
    only_template: str | None = None  # the Service selects this template's pods alone
    keep_standby: bool = False  # the standby Deployment should exist (apply it)
    remove_standby: bool = False  # delete the standby Deployment

    def said(self, *events: Event) -> Draft:
        """With `events` owed after those already said."""
        return replace(self, events=self.events + events) if events else self

    def wake_in(self, seconds: float | None) -> Draft:
        """Looked at again no later than in `seconds` (None: no sooner than decided)."""
        return replace(self, requeue=sooner(self.requeue, seconds))

    def validate(
        self, requests: tuple[ValidationRequest, ...], gates: tuple[PodGate, ...] = ()
    ) -> Draft:
        """With golden requests due and readiness gates to set, after those already there."""
        return replace(self, validations=self.validations + requests, gates=self.gates + gates)


def sooner(a: float | None, b: float | None) -> float | None:
    """The earlier of two wake-ups; None is never."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)
