"""An autoscaler owns replicas when spec.replicas is left out (B24): the operator never
writes the count, judges a rollout against what the Deployment asks, and a revert keeps it.
"""

from __future__ import annotations

from dataclasses import replace

from modeldeploy import constants as c
from modeldeploy.model.observed import ChildState, Observed
from modeldeploy.model.resource import Resource, parse_resource
from modeldeploy.model.spec import with_replicas
from modeldeploy.model.status import Status
from tests.unit.builders import body, deployment, present, select, spec_of, step


def autoscaled() -> Resource:
    raw = body()
    del raw["spec"]["replicas"]
    return replace(parse_resource(raw), status=Status())


def scaled_to(child: ChildState, count: int) -> ChildState:
    """The Deployment as the HorizontalPodAutoscaler left it: `count` asked and serving."""
    return replace(
        child,
        spec={**child.spec, "replicas": count},
        replicas=count,
        updated_replicas=count,
        ready_replicas=count,
        available_replicas=count,
    )


def test_left_out_the_count_is_the_deployments_and_never_rendered() -> None:
    res = autoscaled()
    spec = spec_of(res)
    assert spec.autoscaled
    assert with_replicas(spec, 7).replicas == 7
    assert with_replicas(spec, None).replicas == 1  # the Deployment's own default
    assert not spec_of(replace(res, spec=replace(spec, autoscaled=False))).autoscaled
    _, decision = step(res, Observed(), 0)
    assert "replicas" not in present(decision.deployment)["spec"]


def test_a_rollout_completes_only_when_the_autoscaled_count_is_available() -> None:
    res = autoscaled()
    res, _ = step(res, Observed(), 0)
    # The HPA asks for 5; 2 are available: not done yet, whatever spec.replicas said before.
    partly = replace(scaled_to(deployment(res), 5), available_replicas=2)
    res, _ = step(res, Observed(deployment=partly), 1)
    assert res.status.last_good_version is None
    res, _ = step(res, Observed(deployment=scaled_to(deployment(res), 5)), 2)
    assert res.status.last_good_version == "v1"
    assert res.status.readiness == "5/5"


def test_a_new_version_is_rolled_out_to_the_autoscaled_count_without_writing_it() -> None:
    res = autoscaled()
    res, _ = step(res, Observed(), 0)
    res, _ = step(res, Observed(deployment=scaled_to(deployment(res), 4)), 2)
    res = select(res, "v2")
    res, decision = step(res, Observed(deployment=scaled_to(deployment(res, "v1"), 4)), 3)
    applied = present(decision.deployment)
    assert "replicas" not in applied["spec"]  # a template change, the count left alone
    assert applied["spec"]["template"]["metadata"]["labels"][c.LABEL_VERSION] == "v2"
    assert res.status.readiness == "4/4"
