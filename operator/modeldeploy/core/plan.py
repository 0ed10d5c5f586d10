"""What a decision asks the edges to do: the plan types every other layer shares.

The lowest floor of the core: `decide` returns a `Decision`; the kube layer writes
its status, children and `SpecChange`; Events and webhooks carry its `Event`s.
"""

from __future__ import annotations

from dataclasses import dataclass

from modeldeploy.core.analysis import Query
from modeldeploy.model.spec import JSON
from modeldeploy.model.status import Status


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Problem:
    """Why a rollout failed, or why the resource is stalled: a reason and a sentence."""

    reason: str
    message: str


@dataclass(frozen=True)
class SpecChange:
    """A write to the resource itself, made only after the status recording it."""

    set_version: str | None  # the new spec.activeVersion, if any
    expect_version: str | None  # apply only while the spec still names this version
    remove_retry: bool = False
    events: tuple[Event, ...] = ()  # posted once the change applied


@dataclass(frozen=True)
class Decision:
    status: Status
    status_changed: bool
    deployment: JSON | None = None  # apply this; None leaves the Deployment alone
    service: JSON | None = None
    events: tuple[Event, ...] = ()  # posted after the status write
    spec_change: SpecChange | None = None
    requeue_after: float | None = None  # seconds until the next deadline to check
    queries: tuple[Query, ...] = ()  # analysis measurements due now
