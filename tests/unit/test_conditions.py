"""Conditions are the truth and phase is derived from them."""

from __future__ import annotations

import pytest

from modeldeploy.core.conditions import derive_phase, set_condition
from modeldeploy.core.summary import only_progress
from modeldeploy.model.spec import JSON
from modeldeploy.model.status import Condition
from tests.unit.builders import at


def test_transition_time_moves_only_when_the_status_flips() -> None:
    first = set_condition((), "Ready", False, "RolloutInProgress", "", at(1), 1)
    same = set_condition(first, "Ready", False, "Other", "new message", at(2), 2)
    assert same[0].last_transition_time == at(1)
    assert (same[0].reason, same[0].message, same[0].observed_generation) == (
        "Other",
        "new message",
        2,
    )
    flipped = set_condition(same, "Ready", True, "Available", "", at(3), 2)
    assert flipped[0].last_transition_time == at(3)


def test_conditions_keep_a_stable_order() -> None:
    conditions: tuple[Condition, ...] = ()
    for type_ in ("RolledBack", "Ready", "Stalled", "Reconciling"):
        conditions = set_condition(conditions, type_, False, "R", "", at(0), 1)
    assert [k.type for k in conditions] == ["Ready", "Reconciling", "Stalled", "RolledBack"]


def conditions(**states: bool) -> tuple[Condition, ...]:
    out: tuple[Condition, ...] = ()
    for type_, value in states.items():
        out = set_condition(out, type_, value, "R", "", at(0), 1)
    return out


@pytest.mark.parametrize(
    ("states", "serving", "phase"),
    [
        ({"Stalled": True, "Ready": False}, True, "Degraded"),
        ({"Stalled": True, "Ready": False}, False, "Failed"),
        ({"Stalled": False, "Reconciling": True, "Ready": False}, True, "Progressing"),
        ({"Stalled": False, "Reconciling": False, "Ready": True}, True, "Available"),
        ({"Stalled": False, "Reconciling": False, "Ready": False}, False, "Pending"),
        ({}, False, "Pending"),
    ],
)
def test_phase_is_derived_from_the_conditions(
    states: dict[str, bool], serving: bool, phase: str
) -> None:
    assert derive_phase(conditions(**states), serving) == phase


def test_counts_and_the_messages_repeating_them_are_progress_a_reason_is_not() -> None:
    before: JSON = {
        "readiness": "1/3",
        "readyReplicas": 1,
        "conditions": [{"type": "Ready", "status": "False", "reason": "R", "message": "1/3"}],
        "outbox": [],
    }
    counted: JSON = {
        **before,
        "readiness": "2/3",
        "readyReplicas": 2,
        "conditions": [{"type": "Ready", "status": "False", "reason": "R", "message": "2/3"}],
    }
    assert only_progress(before, counted)
    ready = {"type": "Ready", "status": "False", "reason": "Other", "message": "2/3"}
    reasoned = {**counted, "conditions": [ready]}
    assert not only_progress(before, reasoned)
    owed = {**counted, "outbox": [{"reason": "RolloutFailed"}]}
    assert not only_progress(before, owed)
