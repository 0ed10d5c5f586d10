"""Pure condition setters and the phase derived from them.

Part of the pure core. Conditions are the truth (kstatus: Reconciling, Stalled,
Ready, plus RolledBack); phase is only a summary of them for humans and columns.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from modeldeploy import constants as c
from modeldeploy.model.status import Condition


def set_condition(
    conditions: Iterable[Condition],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int,
) -> tuple[Condition, ...]:
    """Return the conditions with `type_` set; its transition time moves only on a flip."""
    wanted = "True" if status else "False"
    current = {condition.type: condition for condition in conditions}
    previous = current.get(type_)
    changed_at = (
        now if previous is None or previous.status != wanted else (previous.last_transition_time)
    )
    current[type_] = Condition(
        type=type_,
        status=wanted,
        reason=reason,
        message=message,
        last_transition_time=changed_at,
        observed_generation=generation,
    )
    order = {name: index for index, name in enumerate(c.CONDITION_TYPES)}
    return tuple(sorted(current.values(), key=lambda k: order.get(k.type, len(order))))


def get_condition(conditions: Iterable[Condition], type_: str) -> Condition | None:
    return next((k for k in conditions if k.type == type_), None)


def is_true(conditions: Iterable[Condition], type_: str) -> bool:
    condition = get_condition(conditions, type_)
    return condition is not None and condition.status == "True"


def derive_phase(conditions: Iterable[Condition], serving: bool) -> str:
    """Phase from conditions: Stalled wins, then Reconciling, then Ready."""
    conditions = tuple(conditions)
    if is_true(conditions, c.STALLED):
        return c.PHASE_DEGRADED if serving else c.PHASE_FAILED
    if is_true(conditions, c.RECONCILING):
        return c.PHASE_PROGRESSING
    if is_true(conditions, c.READY):
        return c.PHASE_AVAILABLE
    return c.PHASE_PENDING
