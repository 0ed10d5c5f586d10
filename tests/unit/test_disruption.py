"""A PodDisruptionBudget per model (spec.disruption): rendered, owned, repaired, removed."""

from __future__ import annotations

from dataclasses import replace

from modeldeploy.model.observed import ChildState, Observed
from modeldeploy.model.spec import Disruption
from tests.unit.builders import UID, deployment, present, resource, serving_v1, spec_of, step


def test_a_budget_over_the_serving_pods_is_applied_and_owned() -> None:
    res = serving_v1()
    res = replace(res, spec=replace(spec_of(res), disruption=Disruption(max_unavailable=1)))
    _, decision = step(res, Observed(deployment=deployment(res)), 3)
    budget = present(decision.budget)
    assert budget["kind"] == "PodDisruptionBudget"
    selector = {"matchLabels": {"modeldeploy.io/name": "m"}}
    assert budget["spec"] == {"maxUnavailable": 1, "selector": selector}
    assert budget["metadata"]["ownerReferences"][0]["uid"] == UID


def test_a_budget_as_rendered_is_left_alone_and_one_no_longer_asked_for_is_deleted() -> None:
    res = serving_v1()
    asked = replace(res, spec=replace(spec_of(res), disruption=Disruption(max_unavailable=2)))
    _, decision = step(asked, Observed(deployment=deployment(asked)), 3)
    rendered = present(decision.budget)
    there = ChildState(name="m", controller_uid=UID, spec=rendered["spec"])
    _, again = step(asked, Observed(deployment=deployment(asked), budget=there), 4)
    assert again.budget is None and not again.remove_budget
    _, dropped = step(res, Observed(deployment=deployment(res), budget=there), 5)
    assert dropped.remove_budget
    foreign = replace(there, controller_uid="someone-else")
    _, theirs = step(res, Observed(deployment=deployment(res), budget=foreign), 6)
    assert not theirs.remove_budget


def test_spreading_over_nodes_is_a_preference_in_the_template() -> None:
    res = resource()
    asked = Disruption(spread_across_nodes=True)
    spread = replace(res, spec=replace(spec_of(res), disruption=asked))
    _, decision = step(spread, Observed(), 0)
    pod = present(decision.deployment)["spec"]["template"]["spec"]
    (constraint,) = pod["topologySpreadConstraints"]
    assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
    assert constraint["topologyKey"] == "kubernetes.io/hostname"
