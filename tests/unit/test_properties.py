"""Properties of the rollout state machine and its write protocol, over random user actions.

A small simulation plays the cluster: the API server is `RecordingCluster` (real
JSON-patch `test` semantics), the Deployment runs whatever the operator last
applied, a good version's pods become Ready and a bad one's crash. Users select
versions, retry quarantined ones, or race the operator's revert. Whatever they do,
the invariants of docs/behaviour.md hold for every reconcile `reconcile_once` makes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from modeldeploy import constants as c
from modeldeploy.core.decide import decide
from modeldeploy.core.plan import SpecChange
from modeldeploy.core.render import template_hash
from modeldeploy.core.revert import is_quarantined
from modeldeploy.model.observed import ChildState, ContainerState, Observed, PodState
from modeldeploy.model.resource import parse_resource
from modeldeploy.model.status import Status, parse_status
from modeldeploy.ports import Services
from modeldeploy.reconcile import reconcile_once
from tests.unit.builders import UID, at, body, spec_of
from tests.unit.fake_cluster import RecordingCluster, RecordingMeasurer, RecordingNotifier

IMAGES = {"v1": "r/m:1", "v2": "r/m:2-bad", "v3": "r/m:3", "v4": "r/m:4-bad"}
BAD = {"v2", "v4"}
REPLICAS = 2

actions = st.lists(
    st.one_of(
        st.tuples(st.just("select"), st.sampled_from(sorted(IMAGES))),
        st.tuples(st.just("retry"), st.sampled_from(sorted(IMAGES))),
        st.tuples(st.just("race"), st.sampled_from(sorted(IMAGES))),
        st.tuples(st.just("tick"), st.just("")),
    ),
    max_size=25,
)


@dataclass
class Simulation:
    api: RecordingCluster
    now: float = 0.0
    completed: set[str] = field(default_factory=set)  # versions observed fully Available
    reverts_since_user_change: int = 0
    deployed_failed_version: list[str] = field(default_factory=list)

    keeps_spec: bool = False

    @classmethod
    def start(cls, on_failure: str = "RevertSpec") -> Simulation:
        raw = body(versions=IMAGES, replicas=REPLICAS, onFailure=on_failure)
        return cls(RecordingCluster.holding(raw), keeps_spec=on_failure == "KeepSpec")

    def observed(self) -> Observed:
        manifest = self.api.children.get("Deployment")
        if manifest is None:
            return Observed()
        labels = manifest["spec"]["template"]["metadata"]["labels"]
        version, digest = labels[c.LABEL_VERSION], labels[c.LABEL_TEMPLATE_HASH]
        bad = version in BAD
        child = ChildState(
            name="m",
            controller_uid=UID,
            spec=manifest["spec"],
            template_hash=digest,
            replicas=REPLICAS + (REPLICAS if bad else 0),
            updated_replicas=REPLICAS,
            ready_replicas=REPLICAS,
            available_replicas=0 if bad else REPLICAS,
        )
        if not bad:
            self.completed.add(version)
            return Observed(deployment=child)
        crashing = PodState(
            name="m-new-1",
            owner="m",
            template_hash=digest,
            created_at=at(self.now),
            containers=(ContainerState(name=c.CONTAINER, waiting_reason="CrashLoopBackOff"),),
        )
        return Observed(deployment=child, pods=(crashing,))

    def deployed(self) -> str | None:
        manifest = self.api.children.get("Deployment")
        if manifest is None:
            return None
        return str(manifest["spec"]["template"]["metadata"]["labels"][c.LABEL_VERSION])

    def user_selects(self, version: str) -> None:
        self.api.edit_spec(activeVersion=version)
        self.reverts_since_user_change = 0

    def user_retries(self, version: str) -> None:
        self.api.annotate(c.ANNOTATION_RETRY, version)
        self.reverts_since_user_change = 0  # a user's request: its own one revert

    def race(self, version: str) -> None:
        """The user's edit lands between the operator's status write and its spec change."""
        self.api.before_spec_change = lambda: self.user_selects(version)

    def reconcile(self) -> None:
        self.now += 1
        start = len(self.api.writes)
        before = parse_status(self.api.body.get("status"))
        services = Services(self.api, RecordingNotifier(), RecordingMeasurer())
        reconcile_once(services, self.api.snapshot(), self.observed(), at(self.now))
        self.check(before, self.api.writes[start:])

    def check(self, status: Status, writes: list[tuple[str, Any]]) -> None:
        """Per-reconcile invariants of the write protocol, against the status of the moment."""
        status_written = False
        for kind, what in writes:
            if kind == "status":
                status, status_written = parse_status(what), True
            elif kind == "spec" and isinstance(what, SpecChange) and what.expect_version:
                assert not self.keeps_spec  # KeepSpec never rewrites the spec
                # status first: the failure and the intent were written before the revert
                assert status_written
                failed = status.version_record(what.expect_version)
                assert failed is not None
                assert failed.state == c.STATE_FAILED
                assert what.set_version is not None
                assert not self.quarantined(status, what.set_version)
                self.reverts_since_user_change += 1
            elif kind == "apply" and what == "Deployment":
                labels = self.api.children["Deployment"]["spec"]["template"]["metadata"]["labels"]
                if self.quarantined(status, labels[c.LABEL_VERSION]):
                    self.deployed_failed_version.append(labels[c.LABEL_VERSION])

    def quarantined(self, status: Status, version: str) -> bool:
        spec = spec_of(parse_resource(self.api.body))
        return is_quarantined(status, version, template_hash("m", spec, spec.versions[version]))

    def settle(self) -> None:
        for _ in range(6):
            self.reconcile()

    def play(self, action: str, version: str) -> None:
        if action == "select":
            self.user_selects(version)
        elif action == "retry":
            self.user_retries(version)
        elif action == "race":
            self.race(version)
        self.settle()


MODES = st.sampled_from(["RevertSpec", "KeepSpec"])


@settings(max_examples=150, deadline=None)
@given(actions, MODES)
def test_rollout_invariants_hold_whatever_users_do(steps: list[tuple[str, str]], mode: str) -> None:
    sim = Simulation.start(mode)
    sim.settle()
    for action, version in steps:
        sim.play(action, version)
        status = parse_status(sim.api.body["status"])
        # at most one automatic revert per user change
        assert sim.reverts_since_user_change <= 1
        # the last good version was observed Available
        assert status.last_good_version is None or status.last_good_version in sim.completed
        # a bad version never becomes last good
        assert status.last_good_version not in BAD
        # KeepSpec: a quarantined spec is served by the last good version, untouched
        active = sim.api.body["spec"]["activeVersion"]
        if sim.keeps_spec and sim.quarantined(status, active) and status.last_good_version:
            assert sim.deployed() == status.last_good_version
    # settled: deciding again writes nothing
    resource = parse_resource(sim.api.body)
    final = decide(resource, sim.observed(), at(sim.now + 0.5))
    if resource.retry_version is None and final.requeue_after is None:
        assert final.status_changed is False
        assert (final.deployment, final.spec_change, final.events) == (None, None, ())


@settings(max_examples=100, deadline=None)
@given(actions, MODES)
def test_a_failed_version_is_never_redeployed_without_a_retry(
    steps: list[tuple[str, str]], mode: str
) -> None:
    sim = Simulation.start(mode)
    sim.settle()
    for action, version in steps:
        if action != "retry":
            sim.play(action, version)
    assert sim.deployed_failed_version == []
