"""The draft every rule of the core takes and returns (core/draft.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from modeldeploy.core.draft import Draft, sooner
from modeldeploy.core.plan import Event, PodGate, ValidationRequest
from modeldeploy.model.resource import parse_resource
from modeldeploy.model.spec import Spec
from modeldeploy.model.status import Status
from tests.unit.builders import body

WAKES = st.one_of(st.none(), st.floats(min_value=0, max_value=1e6, allow_nan=False))


def draft() -> Draft:
    spec = parse_resource(body()).spec
    assert isinstance(spec, Spec)
    return Draft(Status(), spec)


@given(WAKES, WAKES)
def test_sooner_is_the_earlier_wake_up_and_none_is_never(a: float | None, b: float | None) -> None:
    both = [x for x in (a, b) if x is not None]
    assert sooner(a, b) == (min(both) if both else None)
    assert sooner(a, b) == sooner(b, a)


@given(st.lists(WAKES, max_size=6))
def test_a_draft_wakes_at_the_soonest_any_rule_asked(wakes: list[float | None]) -> None:
    shaped = draft()
    for wake in wakes:
        shaped = shaped.wake_in(wake)
    asked = [w for w in wakes if w is not None]
    assert shaped.requeue == (min(asked) if asked else None)


def test_events_requests_and_gates_add_up_in_the_order_the_rules_said_them() -> None:
    first, second = Event("Normal", "A", "one"), Event("Warning", "B", "two")
    request = ValidationRequest("pod-1", "10.0.0.1", 8080, "abc", ())
    gate = PodGate("pod-1", True, "GoldenRequestsPassed", "answered as expected")
    shaped = draft().said(first).validate((request,)).said().said(second).validate((), (gate,))
    assert shaped.events == (first, second)
    assert (shaped.validations, shaped.gates) == ((request,), (gate,))
