"""The outbox: Events and webhooks owed, kept in status until they were delivered.

Part of the pure core. An Event is written into `status.outbox` in the same status
write as the change it reports; the handlers deliver what the outbox holds and
tell the next reconcile what went out, which removes it. A crash in between only
means it is delivered again (at least once, never lost).
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import replace
from datetime import datetime

from modeldeploy.core.plan import Event
from modeldeploy.model.status import Notice, Status
from modeldeploy.model.text import shorten
from modeldeploy.model.times import truncate

LIMIT = 16  # notices kept; beyond that the oldest are dropped (a receiver down for long)
NOTICE_LIMIT = 512  # characters of a notice's message (an Event holds at most 1024)


def add(status: Status, events: Iterable[Event], now: datetime) -> Status:
    # Each notice carries its time as status will read back (milliseconds): its key, what
    # the reconcile that delivers it remembers, must match the one read back next time.
    at = truncate(now)
    new = tuple(
        Notice(type=e.type, reason=e.reason, message=shorten(e.message, NOTICE_LIMIT), at=at)
        for e in events
    )
    if not new:
        return status
    return replace(status, outbox=(*status.outbox, *new)[-LIMIT:])


def prune(status: Status, delivered: Set[tuple[str, str, datetime]]) -> Status:
    """The status without the notices the handlers reported delivered."""
    if not delivered or not status.outbox:
        return status
    return replace(status, outbox=tuple(n for n in status.outbox if n.key not in delivered))
