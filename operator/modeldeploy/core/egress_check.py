"""Egress checks: the Prometheus and webhooks a resource names, allowed or said refused.

Part of the pure core, below `decide` (docs/security.md): a spec.analysis.prometheus the
admin did not allow stalls the analysis (InvalidSpec) and nothing is queried; a webhook
the admin did not allow, or whose Secret could not be used, is said in WebhookReady, and
rollouts and reverts go on.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from modeldeploy import constants as c
from modeldeploy.core import ledger
from modeldeploy.core.conditions import get_condition
from modeldeploy.core.draft import Draft
from modeldeploy.core.plan import Event, Problem
from modeldeploy.model.egress import Purpose
from modeldeploy.model.observed import Refusal, Undelivered
from modeldeploy.model.resource import Resource
from modeldeploy.model.settings import Settings
from modeldeploy.model.times import format_time

ANALYSIS, WEBHOOK_TARGET = Purpose.ANALYSIS, Purpose.WEBHOOK


def check(
    draft: Draft,
    resource: Resource,
    webhook_refusal: Refusal | None,
    undelivered: tuple[Undelivered, ...],
    settings: Settings,
    now: datetime,
) -> Draft:
    """Each endpoint the spec names, against the admin's allow-list (and, for a webhook
    from a Secret, what reading it gave: `webhook_refusal`); and whether notices are owed
    to a receiver that failed (`undelivered`: WebhookReady=False while they are). An
    analysis source not allowed stalls the draft, and none of its queries is sent."""
    status, spec = draft.status, draft.spec
    prometheus = spec.analysis.prometheus if spec.analysis else None
    namespace = resource.namespace
    refused = settings.egress.why_not(prometheus, ANALYSIS, namespace) if prometheus else None
    if refused is not None:
        stall = Problem(c.REASON_INVALID_SPEC, f"spec.analysis.prometheus: {refused}")
        draft = replace(draft, stall=draft.stall or stall, queries=())
    if spec.webhook is None and not undelivered:
        kept = tuple(k for k in status.conditions if k.type != c.WEBHOOK_READY)
        return replace(draft, status=replace(status, conditions=kept))
    url = spec.webhook.url if spec.webhook else None
    why = settings.egress.why_not(url, WEBHOOK_TARGET, namespace) if url else None
    reason = c.REASON_WEBHOOK_REFUSED
    if why is not None:
        why = f"spec.notifications.webhook.url: {why}"
    elif webhook_refusal is not None:
        why = webhook_refusal.message
    elif undelivered:
        why, reason = _owed(undelivered), c.REASON_WEBHOOK_UNDELIVERED
    message = why or "webhook notifications are allowed"
    reason = reason if why else c.REASON_WEBHOOK_READY
    status = ledger.set_status_condition(
        status, resource, c.WEBHOOK_READY, why is None, reason, message, now
    )
    previous = get_condition(resource.status.conditions, c.WEBHOOK_READY)
    draft = replace(draft, status=status)
    if why and (previous is None or previous.status != "False" or previous.message != why):
        return draft.said(Event("Warning", reason, why))
    return draft


def _owed(undelivered: tuple[Undelivered, ...]) -> str:
    """What is owed to which receiver, and the latest error: stable between attempts, so
    retrying writes no status."""
    latest = max(undelivered, key=lambda u: u.since)
    receivers = ", ".join(sorted({u.receiver for u in undelivered}))
    return (
        f"notifications owed to {receivers} since {format_time(min(u.since for u in undelivered))}"
        f" (retried with backoff for up to a day): {latest.receiver}: {latest.error}"
    )
