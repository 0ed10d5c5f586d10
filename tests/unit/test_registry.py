"""Registry references (docs/registry.md): parsing, the resolution fold, the reconcile's
calls and their backoff, the credentials header. The MLflow client itself is checked
against a real server in tests/e2e/test_registry.py."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from modeldeploy import constants as c
from modeldeploy.cli import CliError, parser, registry_version_target
from modeldeploy.core import registry, writeback
from modeldeploy.core.decide import decide
from modeldeploy.core.plan import ResolveRequest
from modeldeploy.core.reads import reads
from modeldeploy.delivery import registry_credentials
from modeldeploy.model.egress import EgressPolicy, Purpose
from modeldeploy.model.observed import Observed, RegistryResult
from modeldeploy.model.resource import parse_resource
from modeldeploy.model.settings import Settings
from modeldeploy.model.spec import JSON, RegistryRef, Spec, SpecError, parse_spec
from modeldeploy.model.status import (
    RegistryRecord,
    RegistryWrite,
    Revert,
    Status,
    VersionRecord,
    to_json,
)
from modeldeploy.ports import Memory, Services
from modeldeploy.reconcile import reconcile_once
from tests.unit.builders import OURS, at, body
from tests.unit.builders import deployment as observed_deployment
from tests.unit.fake_cluster import RecordingCluster, RecordingMeasurer, RecordingNotifier

URI = "http://mlflow.example:5000"
ALLOWED = Settings(egress=EgressPolicy.of(registries=[(None, URI + "/")]))
SOURCES = {"1": "s3://models/fraud/1", "2": "s3://models/fraud/2", "3": "s3://models/fraud/3"}


def with_registry(active: str = "v1", **references: dict[str, str]) -> JSON:
    raw = body(active=active)
    refs = references or {"v1": {"model": "fraud", "version": "1"}}
    for entry in raw["spec"]["versions"]:
        if entry["name"] in refs:
            entry["registry"] = refs[entry["name"]]
    raw["spec"]["registry"] = {"mlflow": {"trackingURI": URI}}
    return raw


def answer(
    version: str, number: str, requested: str | None = "1", alias: str | None = None
) -> RegistryResult:
    """The registry's answer to a reference to version `requested` (or `alias`)."""
    return RegistryResult(
        version,
        "fraud",
        None if alias else requested,
        alias,
        model_version=number,
        source=SOURCES[number],
        run_id="r1",
    )


# ------------------------------------------------------------- parsing


def test_a_reference_names_a_model_and_a_version_or_an_alias() -> None:
    raw = with_registry(v1={"model": "fraud", "alias": "champion"})["spec"]
    spec = parse_spec(raw)
    assert spec.active.registry == RegistryRef("fraud", alias="champion")
    assert spec.registry is not None and spec.registry.tracking_uri == URI
    assert spec.active.model_location is None  # nothing to run before it is resolved
    for bad, said in (
        ({"model": "fraud", "version": "1", "alias": "a"}, "needs version or alias, not both"),
        ({"model": "fraud"}, "needs version or alias, not both"),
        ({"model": "fraud", "version": "champion"}, "must be a model version number"),
        ({"model": "", "version": "1"}, "registry.model must not be empty"),
    ):
        with pytest.raises(SpecError, match=said):
            parse_spec(with_registry(v1=bad)["spec"])
    orphan = with_registry()["spec"]
    del orphan["registry"]
    with pytest.raises(SpecError, match=r"spec\.registry names no registry"):
        parse_spec(orphan)


def test_the_resolved_source_is_model_uri_unless_the_spec_gives_one() -> None:
    raw = with_registry()
    status = {
        "registry": [
            {
                "version": "v1",
                "model": "fraud",
                "requestedVersion": "1",
                "modelVersion": "1",
                "source": SOURCES["1"],
                "resolvedAt": "2026-11-23T12:00:00Z",
            }
        ]
    }
    spec = parse_resource({**raw, "status": status}).spec
    assert isinstance(spec, Spec) and spec.active.model_location == SOURCES["1"]
    raw["spec"]["versions"][0]["modelUri"] = "s3://mirror/fraud/1"
    spec = parse_resource({**raw, "status": status}).spec
    assert isinstance(spec, Spec) and spec.active.model_location == "s3://mirror/fraud/1"
    # A record of another reference is not this version's model.
    raw = with_registry(v1={"model": "fraud", "version": "2"})
    spec = parse_resource({**raw, "status": status}).spec
    assert isinstance(spec, Spec) and spec.active.resolved is None


# ------------------------------------------------------------- the decision


def test_the_first_rollout_waits_for_the_reference_and_then_runs_its_source() -> None:
    res = parse_resource(with_registry())
    asked = reads(res, Observed(), at(0), ALLOWED)
    assert asked.resolutions == (ResolveRequest("v1", "fraud", "1", None),)
    first = decide(res, Observed(), at(0), ALLOWED)
    assert first.deployment is None  # no rollout before the model is known
    answered = Observed(resolutions=(answer("v1", "1"),))
    assert reads(res, answered, at(0), ALLOWED).resolutions == ()
    second = decide(res, answered, at(0), ALLOWED)
    (record,) = second.status.registry
    assert (record.version, record.model_version, record.source, record.run_id) == (
        "v1",
        "1",
        SOURCES["1"],
        "r1",
    )
    deployment = second.deployment
    assert deployment is not None
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "MODEL_URI", "value": SOURCES["1"]} in env
    assert c.EVENT_REGISTRY_RESOLVED in [e.reason for e in second.events]


def test_a_resolved_reference_is_never_asked_about_again_unless_refreshed() -> None:
    record = RegistryRecord("v1", "fraud", "2", SOURCES["2"], at(0), alias="champion", run_id="r1")
    raw = with_registry(v1={"model": "fraud", "alias": "champion"})
    res = parse_resource({**raw, "status": _json(replace(Status(), registry=(record,)))})
    assert reads(res, Observed(), at(5), ALLOWED).resolutions == ()
    raw["metadata"]["annotations"] = {c.ANNOTATION_REFRESH_REGISTRY: "v1"}
    refreshed = parse_resource({**raw, "status": _json(res.status)})
    asked = reads(refreshed, Observed(), at(5), ALLOWED)
    assert asked.resolutions == (ResolveRequest("v1", "fraud", None, "champion"),)
    moved = decide(
        refreshed, Observed(resolutions=(answer("v1", "3", alias="champion"),)), at(6), ALLOWED
    )
    assert moved.status.registry[0].model_version == "3"
    assert moved.spec_change is not None and moved.spec_change.remove_refresh_registry


def test_what_the_registry_does_not_have_stalls_in_its_own_words() -> None:
    res = parse_resource(with_registry())
    said = "Registered model alias production not found."
    missing = RegistryResult("v1", "fraud", "1", error=said)
    decision = decide(res, Observed(resolutions=(missing,)), at(0), ALLOWED)
    stalled = next(k for k in decision.status.conditions if k.type == c.STALLED)
    assert (stalled.status, stalled.reason) == ("True", c.REASON_INVALID_SPEC)
    assert said in stalled.message
    assert decision.deployment is None
    assert decision.requeue_after is not None  # looked for again, like a missing ConfigMap


def test_an_unanswering_registry_says_so_and_stalls_nothing() -> None:
    res = parse_resource(with_registry())
    down = RegistryResult("v1", "fraud", "1", error="connection refused", unreachable=True)
    decision = decide(res, Observed(resolutions=(down,)), at(0), ALLOWED)
    conditions = {k.type: k for k in decision.status.conditions}
    assert conditions[c.REGISTRY_READY].status == "False"
    assert conditions[c.REGISTRY_READY].reason == c.REASON_REGISTRY_UNREACHABLE
    assert conditions[c.STALLED].status == "False"
    assert decision.deployment is None


def test_a_tracking_uri_the_admin_did_not_allow_is_never_called() -> None:
    res = parse_resource(with_registry())
    assert reads(res, Observed(), at(0), Settings()).resolutions == ()
    decision = decide(res, Observed(), at(0), Settings())
    stalled = next(k for k in decision.status.conditions if k.type == c.STALLED)
    assert "--allowed-registry" in stalled.message
    allowed = ALLOWED.egress.why_not(URI + "/x", Purpose.REGISTRY, "ns")
    assert allowed is None


def test_records_of_references_the_spec_no_longer_names_are_dropped() -> None:
    record = RegistryRecord("v1", "fraud", "1", SOURCES["1"], at(0), requested_version="1")
    spec = parse_spec(with_registry(v1={"model": "fraud", "version": "2"})["spec"])
    assert registry.kept((record,), spec) == ()
    spec = parse_spec(with_registry()["spec"])
    assert registry.kept((record,), spec) == (record,)


def test_the_same_answer_again_changes_nothing() -> None:
    record = RegistryRecord(
        "v1", "fraud", "1", SOURCES["1"], at(0), requested_version="1", run_id="r1"
    )
    again = RegistryResult("v1", "fraud", "1", model_version="1", source=SOURCES["1"], run_id="r1")
    records, events = registry.folded((record,), (again,), at(9))
    assert records == (record,) and events == ()


# ------------------------------------------------------------- the edge


@dataclass
class FakeRegistry:
    answers: list[RegistryResult]
    calls: list[tuple[str, str | None, ResolveRequest]] = field(default_factory=list)
    writes: list[RegistryWrite] = field(default_factory=list)
    write_answers: list[tuple[str | None, bool]] = field(default_factory=list)

    def resolve(
        self, namespace: str, tracking_uri: str, authorization: str | None, wanted: ResolveRequest
    ) -> RegistryResult:
        self.calls.append((tracking_uri, authorization, wanted))
        return self.answers.pop(0)

    def write(
        self, namespace: str, tracking_uri: str, authorization: str | None, owed: RegistryWrite
    ) -> tuple[str | None, bool]:
        self.writes.append(owed)
        return self.write_answers.pop(0) if self.write_answers else (None, False)


def bed(raw: JSON, fake: FakeRegistry) -> tuple[RecordingCluster, Services, Memory]:
    api = RecordingCluster.holding(raw)
    services = Services(
        api, RecordingNotifier(), RecordingMeasurer(), settings=ALLOWED, registry=fake
    )
    return api, services, Memory()


def test_the_reconcile_resolves_before_the_status_that_records_it() -> None:
    fake = FakeRegistry([answer("v1", "1")])
    api, services, memory = bed(with_registry(), fake)
    reconcile_once(services, api.snapshot(), Observed(), at(0), memory)
    assert len(fake.calls) == 1
    assert api.body["status"]["registry"][0]["source"] == SOURCES["1"]
    env = api.children["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "MODEL_URI", "value": SOURCES["1"]} in env
    reconcile_once(services, api.snapshot(), Observed(), at(1), memory)
    assert len(fake.calls) == 1  # resolved once


def test_an_unanswering_registry_is_asked_again_with_backoff() -> None:
    down = RegistryResult("v1", "fraud", "1", error="connection refused", unreachable=True)
    fake = FakeRegistry([down, down, answer("v1", "1")])
    api, services, memory = bed(with_registry(), fake)
    first = reconcile_once(services, api.snapshot(), Observed(), at(0), memory)
    assert first is not None and 0 < first <= 2
    reconcile_once(services, api.snapshot(), Observed(), at(1), memory)
    assert len(fake.calls) == 1  # within the backoff: not asked
    second = reconcile_once(services, api.snapshot(), Observed(), at(2.5), memory)
    assert len(fake.calls) == 2 and second is not None and 2 < second <= 4
    reconcile_once(services, api.snapshot(), Observed(), at(7), memory)
    assert len(fake.calls) == 3
    assert api.body["status"]["registry"][0]["modelVersion"] == "1"
    ready = next(k for k in api.body["status"]["conditions"] if k["type"] == c.REGISTRY_READY)
    assert ready["status"] == "True"


def test_credentials_are_a_bearer_token_or_basic_auth_from_the_secret() -> None:
    api = RecordingCluster.holding(with_registry())
    assert registry_credentials(api, "ns", None) == (None, None)
    api.secrets[("creds", "token")] = "t0k"
    assert registry_credentials(api, "ns", "creds") == ("Bearer t0k", None)
    del api.secrets[("creds", "token")]
    api.secrets[("creds", "username")] = "u"
    api.secrets[("creds", "password")] = "p"
    assert registry_credentials(api, "ns", "creds") == ("Basic dTpw", None)
    header, problem = registry_credentials(api, "ns", "absent")
    assert header is None and problem is not None and "Secret absent" in problem


def _json(status: Status) -> JSON:
    converted: JSON = to_json(status)
    return converted


# ------------------------------------------------------------- what the registry is owed


def records_for(*versions: str) -> tuple[RegistryRecord, ...]:
    return tuple(
        RegistryRecord(v, "fraud", v[1:], f"s3://models/fraud/{v[1:]}", at(0), v[1:])
        for v in versions
    )


def aliased_spec() -> Spec:
    raw = with_registry(
        v1={"model": "fraud", "version": "1"}, v2={"model": "fraud", "version": "2"}
    )
    raw["spec"]["registry"]["mlflow"]["alias"] = "production"
    return parse_spec(raw["spec"])


def test_a_promotion_owes_serving_and_the_alias_and_supersedes_the_last_good() -> None:
    before = Status(registry=records_for("v1", "v2"), last_good_version="v1")
    after = replace(before, last_good_version="v2")
    owed = writeback.owe(before, after, aliased_spec(), at(5)).registry_writes
    assert [(w.version, w.model_version, w.state, w.alias) for w in owed] == [
        ("v1", "1", writeback.SUPERSEDED, None),
        ("v2", "2", writeback.SERVING, "production"),
    ]
    assert writeback.owe(after, after, aliased_spec(), at(6)) == after  # once, not again


def test_a_failure_and_its_revert_owe_failed_and_serving_with_the_alias() -> None:
    failed = VersionRecord("v2", c.STATE_FAILED, "h2", "CrashLoop", "restarted 3 times", at(4))
    before = Status(registry=records_for("v1", "v2"), last_good_version="v1")
    after = replace(before, versions=(failed,))
    (write,) = writeback.owe(before, after, aliased_spec(), at(4)).registry_writes
    assert (write.version, write.state, write.reason) == (
        "v2",
        writeback.FAILED,
        "CrashLoop: restarted 3 times",
    )
    reverted = replace(after, reverts=(Revert("v2", "v1", at(6)),))
    (back,) = writeback.owe(after, reverted, aliased_spec(), at(6)).registry_writes
    assert (back.version, back.state, back.alias) == ("v1", writeback.SERVING, "production")


def test_versions_not_from_the_registry_owe_nothing_and_written_ones_leave() -> None:
    before = Status(last_good_version="v1")
    after = replace(before, last_good_version="v2")
    assert writeback.owe(before, after, aliased_spec(), at(1)).registry_writes == ()
    owed = writeback.owe(
        Status(registry=records_for("v2")),
        Status(registry=records_for("v2"), last_good_version="v2"),
        aliased_spec(),
        at(1),
    )
    (write,) = owed.registry_writes
    assert writeback.prune(owed, {write.key}).registry_writes == ()


def test_owed_writes_wait_out_an_outage_and_land_in_order_once_it_ends() -> None:
    raw = with_registry()
    raw["spec"]["registry"]["mlflow"]["alias"] = "production"
    fake = FakeRegistry(
        [answer("v1", "1")], write_answers=[("connection refused", True), (None, False)]
    )
    api, services, memory = bed(raw, fake)
    reconcile_once(services, api.snapshot(), Observed(), at(0), memory)
    deployment = parse_resource(api.snapshot())
    available = Observed(deployment=observed_deployment(deployment), replica_sets=OURS)
    wait = reconcile_once(services, api.snapshot(), available, at(2), memory)
    owed = api.body["status"]["registryWrites"]
    assert [(w["version"], w["state"], w["alias"]) for w in owed] == [
        ("v1", "serving", "production")
    ]
    assert len(fake.writes) == 1 and wait is not None and wait <= 2  # no answer: back off
    ready = next(k for k in api.body["status"]["conditions"] if k["type"] == c.REGISTRY_READY)
    assert ready["status"] == "True"  # said at the next decision
    reconcile_once(services, api.snapshot(), available, at(3), memory)
    assert len(fake.writes) == 1  # within the backoff
    ready = next(k for k in api.body["status"]["conditions"] if k["type"] == c.REGISTRY_READY)
    assert (ready["status"], ready["reason"]) == ("False", c.REASON_REGISTRY_UNREACHABLE)
    reconcile_once(services, api.snapshot(), available, at(5), memory)
    assert len(fake.writes) == 2  # it came back: written
    reconcile_once(services, api.snapshot(), available, at(6), memory)
    assert not api.body["status"].get("registryWrites")
    ready = next(k for k in api.body["status"]["conditions"] if k["type"] == c.REGISTRY_READY)
    assert ready["status"] == "True"


def test_a_registry_rule_allows_the_registry_purpose_alone_and_its_namespace() -> None:
    policy = EgressPolicy.of(
        registries=[("team-a", "http://mlflow.ml:5000/")], webhooks=[(None, "https://hooks/")]
    )
    assert policy.why_not("http://mlflow.ml:5000/api", Purpose.REGISTRY, "team-a") is None
    refused = policy.why_not("http://mlflow.ml:5000/api", Purpose.REGISTRY, "team-b")
    assert refused is not None and "--allowed-registry" in refused
    assert policy.why_not("http://mlflow.ml:5000/", Purpose.WEBHOOK, "team-a") is not None
    assert policy.why_not("https://hooks/x", Purpose.REGISTRY, "team-a") is not None


# ------------------------------------------------------------- the plugin


def test_the_plugin_picks_the_version_that_runs_a_registry_version() -> None:
    raw = with_registry(
        v1={"model": "fraud", "version": "1"}, v2={"model": "fraud", "alias": "champion"}
    )
    record = RegistryRecord("v2", "fraud", "3", SOURCES["3"], at(0), alias="champion")
    raw["status"] = _json(replace(Status(), registry=(record,)))
    assert registry_version_target(raw, "3") == "v2"  # resolved: the alias named 3
    assert registry_version_target(raw, "1") == "v1"  # declared, not resolved yet
    with pytest.raises(CliError, match="no version of m resolved to or names registry"):
        registry_version_target(raw, "7")
    args = parser().parse_args(["rollback", "m", "--to-registry-version", "3"])
    assert args.registry_version == "3"


def test_owed_writes_wait_for_a_missing_credentials_secret_instead_of_being_dropped() -> None:
    raw = with_registry()
    raw["spec"]["registry"]["mlflow"]["credentialsSecret"] = "creds"
    fake = FakeRegistry([answer("v1", "1")])
    api, services, memory = bed(raw, fake)
    api.secrets[("creds", "token")] = "t0k"
    reconcile_once(services, api.snapshot(), Observed(), at(0), memory)
    del api.secrets[("creds", "token")]  # gone before the promotion's write
    available = Observed(
        deployment=observed_deployment(parse_resource(api.snapshot())), replica_sets=OURS
    )
    reconcile_once(services, api.snapshot(), available, at(2), memory)
    reconcile_once(services, api.snapshot(), available, at(3), memory)
    assert fake.writes == []  # nothing sent without credentials
    assert api.body["status"]["registryWrites"]  # still owed
    ready = next(k for k in api.body["status"]["conditions"] if k["type"] == c.REGISTRY_READY)
    assert ready["status"] == "False" and "Secret creds" in ready["message"]
    api.secrets[("creds", "token")] = "t0k"  # fixed
    reconcile_once(services, api.snapshot(), available, at(10), memory)
    reconcile_once(services, api.snapshot(), available, at(11), memory)
    assert len(fake.writes) == 1 and fake.calls[0][1] == "Bearer t0k"
    assert not api.body["status"].get("registryWrites")
