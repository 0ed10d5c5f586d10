"""Properties of the rollout state machine, over random sequences of user actions.

A small simulation plays the cluster: the Deployment runs whatever `decide` last
asked for; a good version's pods become Ready, a bad one's crash. Users select
versions, retry quarantined ones, or race the operator's revert. Whatever they do,
the invariants of DESIGN.md hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from modeldeploy.model import Observed, Resource
from modeldeploy.rollout import Decision, decide
from tests.unit.builders import at, deployment, digest, pod, resource, service

IMAGES = {"v1": "r/m:1", "v2": "r/m:2-bad", "v3": "r/m:3", "v4": "r/m:4-bad"}
BAD = {"v2", "v4"}

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
class Cluster:
    res: Resource
    deployed: str | None = None  # the version the Deployment's template runs
    now: float = 0.0
    race_next: str | None = None  # a user edit that lands before the operator's spec write
    completed: set[str] = field(default_factory=set)  # versions observed fully Available
    reverts_since_user_change: int = 0
    history: list[Decision] = field(default_factory=list)

    def observed(self) -> Observed:
        if self.deployed is None:
            return Observed(service=service(self.res))
        if self.deployed in BAD:
            crashing = pod(self.res, self.deployed, waiting_reason="CrashLoopBackOff")
            child = deployment(self.res, self.deployed, ready=0, old=2)
            return Observed(deployment=child, service=service(self.res), pods=(crashing,))
        self.completed.add(self.deployed)
        return Observed(deployment=deployment(self.res, self.deployed), service=service(self.res))

    def user_selects(self, version: str) -> None:
        spec = self.res.spec
        assert not isinstance(spec, Exception)
        self.res = replace(
            self.res, spec=replace(spec, active_version=version), generation=self.res.generation + 1
        )
        self.reverts_since_user_change = 0

    def reconcile(self) -> None:
        self.now += 1
        decision = decide(self.res, self.observed(), at(self.now))
        self.history.append(decision)
        self.check_never_reverts_to_a_failed_version(decision)
        self.res = replace(self.res, status=decision.status)
        if decision.deployment is not None:
            labels = decision.deployment["spec"]["template"]["metadata"]["labels"]
            self.deployed = labels["modeldeploy.io/version"]
        change = decision.spec_change
        if change is None:
            return
        if self.race_next is not None:
            self.user_selects(self.race_next)  # the user's edit lands first
            self.race_next = None
        spec = self.res.spec
        assert not isinstance(spec, Exception)
        if change.expect_version is not None and spec.active_version != change.expect_version:
            return  # the JSON-patch test fails: the user's edit wins
        if change.remove_retry:
            self.res = replace(self.res, retry_version=None)
        if change.set_version is not None and change.set_version != spec.active_version:
            generation = self.res.generation + 1
            self.res = replace(
                self.res,
                spec=replace(spec, active_version=change.set_version),
                generation=generation,
            )
            if change.expect_version is not None:
                self.reverts_since_user_change += 1

    def check_never_reverts_to_a_failed_version(self, decision: Decision) -> None:
        change = decision.spec_change
        if change is None or change.set_version is None or change.expect_version is None:
            return
        record = decision.status.version_record(change.set_version)
        assert not (
            record
            and record.state == "Failed"
            and record.template_hash == digest(self.res, change.set_version)
        )


def settle(cluster: Cluster) -> None:
    for _ in range(6):
        cluster.reconcile()


@settings(max_examples=150, deadline=None)
@given(actions)
def test_rollout_invariants_hold_whatever_users_do(steps: list[tuple[str, str]]) -> None:
    cluster = Cluster(resource(versions=IMAGES))
    settle(cluster)
    for action, version in steps:
        if action == "select":
            cluster.user_selects(version)
        elif action == "retry":  # a user's request too: its own one revert, if it fails again
            cluster.res = replace(cluster.res, retry_version=version)
            cluster.reverts_since_user_change = 0
        elif action == "race":
            cluster.race_next = version
        settle(cluster)
        status = cluster.res.status
        # at most one automatic revert per user change
        assert cluster.reverts_since_user_change <= 1
        # the last good version was observed Available
        assert status.last_good_version is None or status.last_good_version in cluster.completed
        # a bad version never becomes last good, and nothing bad is served at the end
        assert status.last_good_version not in BAD
    # settled: deciding again writes nothing
    final = decide(cluster.res, cluster.observed(), at(cluster.now + 0.5))
    if cluster.res.retry_version is None and final.requeue_after is None:
        assert final.status_changed is False
        assert (final.deployment, final.spec_change, final.events) == (None, None, ())


@settings(max_examples=100, deadline=None)
@given(actions)
def test_a_failed_version_is_never_redeployed_without_a_retry(steps: list[tuple[str, str]]) -> None:
    cluster = Cluster(resource(versions=IMAGES))
    settle(cluster)
    for action, version in steps:
        if action == "select":
            cluster.user_selects(version)
        settle(cluster)
        for decision in cluster.history[-6:]:
            if decision.deployment is None:
                continue
            labels = decision.deployment["spec"]["template"]["metadata"]["labels"]
            record = decision.status.version_record(labels["modeldeploy.io/version"])
            assert not (
                record
                and record.state == "Failed"
                and record.template_hash == labels["modeldeploy.io/template-hash"]
            )
