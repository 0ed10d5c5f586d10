"""The write protocol of one reconcile, against a recording API with real `test` semantics."""

from __future__ import annotations

from modeldeploy.model.observed import ContainerState, Observed, PodState
from modeldeploy.model.resource import parse_resource
from modeldeploy.reconcile import Services, reconcile_once
from tests.unit.builders import at, body, deployment, digest, service
from tests.unit.fake_cluster import RecordingCluster, RecordingMeasurer, RecordingNotifier


def serving_v1() -> tuple[RecordingCluster, Services]:
    api = RecordingCluster.holding(body())
    services = Services(api, RecordingNotifier(), RecordingMeasurer())
    reconcile_once(services, api.snapshot(), Observed(), at(0))
    resource = parse_resource(api.body)
    ready = Observed(deployment=deployment(resource), service=service(resource))
    reconcile_once(services, api.snapshot(), ready, at(1))
    assert api.body["status"]["lastGoodVersion"] == "v1"
    api.writes.clear()
    api.events.clear()
    return api, services


def crashing_v2(api: RecordingCluster) -> Observed:
    resource = parse_resource(api.body)
    crash = PodState(
        name="m-2-a",
        owner="m",
        template_hash=digest(resource, "v2"),
        created_at=at(2),
        containers=(ContainerState(name="model", waiting_reason="CrashLoopBackOff"),),
    )
    return Observed(
        deployment=deployment(resource, "v2", ready=0, old=2),
        service=service(resource),
        pods=(crash,),
    )


def test_a_failure_is_written_to_status_before_the_conditional_revert() -> None:
    api, services = serving_v1()
    api.edit_spec(activeVersion="v2")
    reconcile_once(services, api.snapshot(), crashing_v2(api), at(3))
    kinds = [kind for kind, _ in api.writes]
    assert kinds[:2] == ["status", "spec"]
    assert api.body["spec"]["activeVersion"] == "v1"
    assert [e.reason for e in api.events] == ["RolloutStarted", "RolloutFailed", "RolledBack"]
    assert ("m", "RolloutFailed") in services.notifier.sent  # type: ignore[attr-defined]


def test_a_user_edit_landing_first_wins_and_no_revert_is_announced() -> None:
    api, services = serving_v1()
    api.edit_spec(activeVersion="v2")
    api.before_spec_change = lambda: api.edit_spec(activeVersion="v3")
    reconcile_once(services, api.snapshot(), crashing_v2(api), at(3))
    assert [kind for kind, _ in api.writes][:2] == ["status", "spec refused"]
    assert api.body["spec"]["activeVersion"] == "v3"
    assert [e.reason for e in api.events] == ["RolloutStarted", "RolloutFailed"]


def test_a_stale_view_writes_nothing_else() -> None:
    api, services = serving_v1()
    api.edit_spec(activeVersion="v2")
    stale = api.snapshot()
    api.annotate("someone", "else")  # the object moves on before the status write
    reconcile_once(services, stale, crashing_v2(api), at(3))
    assert api.writes == []
    assert api.body["spec"]["activeVersion"] == "v2"
