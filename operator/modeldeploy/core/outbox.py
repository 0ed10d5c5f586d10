"""The outbox: Events and webhooks owed, kept in status until they were delivered.

Part of the pure core. An Event is written into `status.outbox` in the same status
write as the change it reports; the reconcile delivers what the outbox holds (the
Event, then each webhook until it answered 2xx) and tells the next decision what went
out, which removes it. A crash in between only means it is delivered again (at least
once, never lost). A notice still owed a day after it was written (a receiver down
that long), or pushed out of a full outbox, is given up on, and that is said: a
Warning Event `NotificationDropped` and a counter.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import replace
from datetime import datetime, timedelta

from modeldeploy import constants as c
from modeldeploy.core.plan import Event
from modeldeploy.model.observed import Undelivered
from modeldeploy.model.status import Notice, Status
from modeldeploy.model.text import shorten
from modeldeploy.model.times import format_time, truncate

LIMIT = 32  # notices kept; beyond that the oldest are given up on, saying so
NOTICE_LIMIT = 512  # characters of a notice's message (an Event holds at most 1024)
GIVE_UP_AFTER = timedelta(hours=24)  # how long a notice stays owed to a receiver that fails


def add(status: Status, events: Iterable[Event], now: datetime) -> tuple[Status, int]:
    """The status with `events` owed, and how many older notices a full outbox dropped
    (each said in one more Warning notice)."""
    # Each notice carries its time as status will read back (milliseconds): its key, what
    # the reconcile that delivers it remembers, must match the one read back next time.
    at = truncate(now)
    new = [notice(e, at) for e in events]
    if not new:
        return status, 0
    owed = (*status.outbox, *new)
    if len(owed) <= LIMIT:
        return replace(status, outbox=owed), 0
    dropped = owed[: len(owed) - LIMIT + 1]
    said = Event(
        "Warning",
        c.EVENT_NOTIFICATION_DROPPED,
        f"{len(dropped)} notification(s) given up on: more than {LIMIT} were owed at once; "
        f"the oldest was {dropped[0].reason} of {format_time(dropped[0].at)}",
    )
    return replace(status, outbox=(*owed[len(dropped) :], notice(said, at))), len(dropped)


def notice(event: Event, at: datetime) -> Notice:
    return Notice(
        type=event.type, reason=event.reason, message=shorten(event.message, NOTICE_LIMIT), at=at
    )


def prune(status: Status, delivered: Set[tuple[str, str, datetime]]) -> Status:
    """The status without the notices the reconcile reported delivered."""
    if not delivered or not status.outbox:
        return status
    return replace(status, outbox=tuple(n for n in status.outbox if n.key not in delivered))


def expire(
    status: Status, undelivered: tuple[Undelivered, ...], now: datetime
) -> tuple[Status, tuple[Event, ...]]:
    """Give up on notices owed for longer than GIVE_UP_AFTER, each said in a Warning."""
    old = [n for n in status.outbox if now - n.at >= GIVE_UP_AFTER]
    if not old:
        return status, ()
    why = ""
    if undelivered:
        why = f"; the last error: {undelivered[-1].receiver}: {undelivered[-1].error}"
    events = tuple(
        Event(
            "Warning",
            c.EVENT_NOTIFICATION_DROPPED,
            f"gave up delivering {n.reason} of {format_time(n.at)} after "
            f"{int(GIVE_UP_AFTER.total_seconds() // 3600)}h{why}",
        )
        for n in old
    )
    return replace(status, outbox=tuple(n for n in status.outbox if n not in old)), events
