"""The write protocol of one reconcile, against a recording API with real `test` semantics.

The same protocol runs against the real API server in tests/e2e; here each rule is
pinned on its own: status first, the outbox, what a refusal leaves in status.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest

from modeldeploy import constants as c
from modeldeploy import metrics
from modeldeploy.model.egress import EgressPolicy
from modeldeploy.model.observed import ContainerState, Observed, PodState
from modeldeploy.model.resource import parse_resource
from modeldeploy.model.settings import Settings
from modeldeploy.ports import Memory, Refused, Services
from modeldeploy.reconcile import reconcile_once
from tests.unit.builders import OURS, RS_UID, at, body, deployment, digest, service
from tests.unit.fake_cluster import RecordingCluster, RecordingMeasurer, RecordingNotifier


class Bed:
    """One resource, its API, and the operator's memory of it across reconciles."""

    def __init__(self) -> None:
        versions = {"v1": "registry.example/m:1", "v2": "registry.example/m:2", "v3": "r/m:3"}
        self.api = RecordingCluster.holding(body(versions=versions))
        self.notifier = RecordingNotifier()
        self.services = Services(
            self.api, self.notifier, RecordingMeasurer(), webhook_url="http://hooks.example/x"
        )
        self.memory = Memory()

    def reconcile(self, observed: Observed, seconds: float) -> float | None:
        return reconcile_once(
            self.services, self.api.snapshot(), observed, at(seconds), self.memory
        )

    def serving_v1(self) -> Bed:
        self.reconcile(Observed(), 0)
        self.reconcile(self.v1(), 1)
        self.reconcile(self.v1(), 1.5)  # clears the outbox
        assert self.api.body["status"]["lastGoodVersion"] == "v1"
        assert self.api.body["status"]["outbox"] == []
        self.api.writes.clear()
        self.api.events.clear()
        return self

    def v1(self) -> Observed:
        return self.serving("v1")

    def serving(self, version: str) -> Observed:
        resource = parse_resource(self.api.body)
        return Observed(deployment=deployment(resource, version), service=service(resource))

    def crashing_v2(self) -> Observed:
        resource = parse_resource(self.api.body)
        crash = PodState(
            name="m-2-a",
            owner="m",
            template_hash=digest(resource, "v2"),
            created_at=at(10),
            controller_uid=RS_UID,
            containers=(ContainerState(name="model", waiting_reason="CrashLoopBackOff"),),
        )
        return Observed(
            deployment=deployment(resource, "v2", ready=0, old=2),
            service=service(resource),
            pods=(crash,),
            replica_sets=OURS,
        )

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.api.writes]

    def condition(self, type_: str) -> tuple[str, str]:
        found = next(k for k in self.api.body["status"]["conditions"] if k["type"] == type_)
        return found["status"], found["reason"]


def test_a_failure_is_written_to_status_before_the_conditional_revert() -> None:
    bed = Bed().serving_v1()
    bed.api.edit_spec(activeVersion="v2")
    bed.reconcile(bed.crashing_v2(), 10)
    assert bed.kinds()[:2] == ["status", "spec"]
    status = bed.api.body["status"]
    assert status["versions"][-1]["state"] == "Failed"
    assert [n["reason"] for n in status["outbox"]] == ["RolloutStarted", "RolloutFailed"]
    assert bed.api.body["spec"]["activeVersion"] == "v1"
    assert [e.reason for e in bed.api.events] == ["RolloutStarted", "RolloutFailed"]
    assert ("m", "RolloutFailed") in bed.notifier.sent


def test_rolled_back_is_said_once_the_spec_is_seen_to_name_the_target() -> None:
    bed = Bed().serving_v1()
    bed.api.edit_spec(activeVersion="v2")
    bed.reconcile(bed.crashing_v2(), 10)
    assert bed.condition(c.ROLLED_BACK)[0] == "False"
    bed.reconcile(bed.v1(), 11)
    assert bed.condition(c.ROLLED_BACK) == ("True", "CrashLoopBackOff")
    assert len(bed.api.body["status"]["reverts"]) == 1
    assert "RolledBack" in [e.reason for e in bed.api.events]


def test_delivered_notices_leave_the_outbox_and_nothing_more_is_written() -> None:
    bed = Bed().serving_v1()
    bed.api.edit_spec(activeVersion="v2")
    bed.reconcile(bed.crashing_v2(), 10)
    bed.reconcile(bed.v1(), 11)
    bed.reconcile(bed.v1(), 12)
    bed.reconcile(bed.v1(), 13)
    assert bed.api.body["status"]["outbox"] == []
    bed.api.writes.clear()
    bed.reconcile(bed.v1(), 14)
    assert bed.api.writes == []


def test_after_a_restart_owed_notices_are_delivered_again_never_lost() -> None:
    bed = Bed().serving_v1()
    bed.api.edit_spec(activeVersion="v2")
    bed.reconcile(bed.crashing_v2(), 10)
    bed.memory = Memory()  # the operator restarted before the outbox was cleared
    bed.api.events.clear()
    bed.reconcile(bed.v1(), 11)
    reasons = [e.reason for e in bed.api.events]
    assert reasons[:2] == ["RolloutStarted", "RolloutFailed"]  # at least once
    assert "RolledBack" in reasons


def test_a_user_edit_landing_first_wins_and_no_revert_is_announced() -> None:
    bed = Bed().serving_v1()
    bed.api.edit_spec(activeVersion="v2")
    bed.api.before_spec_change = lambda: bed.api.edit_spec(activeVersion="v3")
    bed.reconcile(bed.crashing_v2(), 10)
    assert bed.kinds()[:2] == ["status", "spec refused"]
    assert bed.api.body["spec"]["activeVersion"] == "v3"
    bed.reconcile(bed.v1(), 11)
    reasons = [e.reason for e in bed.api.events]
    assert "RolledBack" not in reasons
    assert "RevertSkipped" in reasons
    assert bed.api.body["status"].get("reverts", []) == []
    assert bed.condition(c.ROLLED_BACK)[0] == "False"


def test_a_fix_of_the_failed_version_landing_first_is_never_reverted_over() -> None:
    # The user fixes v2's image before the revert lands: the spec still names v2, at a
    # newer generation. The revert was decided on the old spec: it must not apply.
    bed = Bed().serving_v1()
    bed.api.edit_spec(activeVersion="v2")

    def fix_v2() -> None:
        versions = bed.api.body["spec"]["versions"]
        fixed = [
            dict(v, image="registry.example/m:2-fixed") if v["name"] == "v2" else v
            for v in versions
        ]
        bed.api.edit_spec(versions=fixed)

    bed.api.before_spec_change = fix_v2
    bed.reconcile(bed.crashing_v2(), 10)
    assert bed.kinds()[:2] == ["status", "spec refused"]
    assert bed.api.body["spec"]["activeVersion"] == "v2"
    bed.reconcile(bed.v1(), 11)
    assert "RevertSkipped" in [e.reason for e in bed.api.events]
    rollout = bed.api.body["status"]["rollout"]
    assert (rollout["version"], rollout["outcome"]) == ("v2", "Progressing")  # the fix rolls out


def test_a_retry_write_never_overwrites_a_version_chosen_after_the_request() -> None:
    bed = Bed().serving_v1()
    bed.api.annotate(c.ANNOTATION_RETRY, "v2")
    bed.api.before_spec_change = lambda: bed.api.edit_spec(activeVersion="v3")
    bed.reconcile(bed.v1(), 10)
    assert bed.api.body["spec"]["activeVersion"] == "v3"  # the later choice stands
    bed.reconcile(bed.v1(), 11)  # and stays: the retry is consumed, not made again
    assert bed.api.body["spec"]["activeVersion"] == "v3"
    assert c.ANNOTATION_RETRY not in bed.api.body["metadata"].get("annotations", {})
    assert "RetrySkipped" in [e.reason for e in bed.api.events]


def test_a_denied_revert_stalls_with_the_refusers_words_and_backs_off() -> None:
    bed = Bed().serving_v1()
    bed.api.edit_spec(activeVersion="v2")
    bed.api.refuse["spec"] = Refused(422, "ValidatingAdmissionPolicy 'freeze' denied request")
    bed.reconcile(bed.crashing_v2(), 10)
    assert bed.api.body["spec"]["activeVersion"] == "v2"
    requeue = bed.reconcile(bed.crashing_v2(), 10.5)
    assert bed.condition(c.STALLED) == ("True", "RevertDenied")
    stalled = next(k for k in bed.api.body["status"]["conditions"] if k["type"] == "Stalled")
    assert "ValidatingAdmissionPolicy 'freeze' denied request" in stalled["message"]
    assert bed.condition(c.ROLLED_BACK)[0] == "False"
    assert requeue is not None
    assert 0 < requeue <= 5
    refused_before = bed.kinds().count("refused")
    bed.reconcile(bed.crashing_v2(), 11)  # within the backoff: no new attempt
    assert bed.kinds().count("refused") == refused_before
    del bed.api.refuse["spec"]
    bed.reconcile(bed.crashing_v2(), 10 + 6)  # after it: tried again, and it lands
    assert bed.api.body["spec"]["activeVersion"] == "v1"


def test_a_child_the_api_refuses_stalls_with_invalid_spec_until_the_spec_changes() -> None:
    bed = Bed()
    bed.api.refuse["Deployment"] = Refused(
        422, 'Deployment.apps "m" is invalid: spec.template.spec.containers[0].ports: bad'
    )
    bed.reconcile(Observed(), 0)
    bed.reconcile(Observed(), 1)
    assert bed.condition(c.STALLED) == ("True", "InvalidSpec")
    stalled = next(k for k in bed.api.body["status"]["conditions"] if k["type"] == "Stalled")
    assert "the API server refused the Deployment (HTTP 422)" in stalled["message"]
    assert [e.reason for e in bed.api.events].count("InvalidSpec") == 1
    del bed.api.refuse["Deployment"]
    bed.api.edit_spec(replicas=3)  # the user fixes the spec: a new generation
    bed.reconcile(Observed(), 2)
    assert bed.condition(c.STALLED)[0] == "False"
    assert "Deployment" in bed.api.children


def test_a_failed_apply_does_not_keep_an_annotation_from_being_consumed() -> None:
    """An outage of one child's apply is raised (the reconcile is retried), but the
    writes after it still run: an ignored retry annotation is consumed, so the retries
    do not owe its Warning again and again (found by the e2e fuzzer, tests/e2e)."""
    bed = Bed()
    bed.api.annotate(c.ANNOTATION_RETRY, "nope")
    bed.api.refuse["Deployment"] = ConnectionResetError("connection reset by peer")
    for seconds in (0, 0.5, 1):
        with pytest.raises(ConnectionResetError):
            bed.reconcile(Observed(), seconds)
    assert c.ANNOTATION_RETRY not in bed.api.body["metadata"].get("annotations", {})
    assert "Service" in bed.api.children
    assert [e.reason for e in bed.api.events].count(c.EVENT_RETRY) == 1
    del bed.api.refuse["Deployment"]
    bed.reconcile(Observed(), 2)
    assert "Deployment" in bed.api.children


def test_a_refused_status_write_is_said_in_an_event_and_nothing_else_is_written() -> None:
    bed = Bed()
    bed.api.refuse["status"] = Refused(422, "status.rollout.startedAt: Invalid value")
    requeue = bed.reconcile(Observed(), 0)
    assert bed.kinds() == ["refused", "event"]
    assert bed.api.events[0].reason == "StatusRefused"
    assert requeue is not None
    bed.reconcile(Observed(), 1)
    assert [e.reason for e in bed.api.events] == ["StatusRefused"]  # once


def test_a_stale_view_writes_nothing_else() -> None:
    bed = Bed().serving_v1()
    bed.api.edit_spec(activeVersion="v2")
    stale = bed.api.snapshot()
    bed.api.annotate("someone", "else")  # the object moves on before the status write
    reconcile_once(bed.services, stale, bed.crashing_v2(), at(10), bed.memory)
    assert bed.kinds() == ["stale status"]
    assert bed.api.body["spec"]["activeVersion"] == "v2"


def with_webhook(bed: Bed, webhook: dict[str, Any], allowed: tuple[str, ...] = ()) -> Bed:
    bed.api.body["spec"]["notifications"] = {"webhook": webhook}
    hooks = [(None, prefix) for prefix in allowed]
    policy = EgressPolicy.of(webhooks=hooks, webhook=bed.services.webhook_url)
    bed.services = replace(bed.services, settings=Settings(egress=policy))
    return bed


def test_a_webhook_url_the_admin_did_not_allow_gets_nothing_and_is_said() -> None:
    bed = with_webhook(Bed(), {"url": "http://169.254.169.254/latest/meta-data/"})
    bed.reconcile(Observed(), 0)
    bed.reconcile(bed.v1(), 1)
    assert bed.condition(c.WEBHOOK_READY) == ("False", "WebhookRefused")
    assert all("169.254.169.254" not in url for url in bed.notifier.urls)
    assert [e.reason for e in bed.api.events].count("WebhookRefused") == 1


def test_a_webhook_url_from_a_secret_is_used_when_allowed_and_said_when_missing() -> None:
    secret = {"urlFrom": {"secretKeyRef": {"name": "slack", "key": "url"}}}
    bed = with_webhook(Bed(), secret, allowed=("https://hooks.slack.com/services/",))
    bed.reconcile(Observed(), 0)
    bed.reconcile(bed.v1(), 1)  # RolloutSucceeded is owed: the Secret is read, and missing
    bed.reconcile(bed.v1(), 1.5)
    assert bed.condition(c.WEBHOOK_READY) == ("False", "WebhookRefused")
    message = next(
        k["message"] for k in bed.api.body["status"]["conditions"] if k["type"] == "WebhookReady"
    )
    assert "Secret slack, key url: no such Secret or key" in message
    bed.api.secrets[("slack", "url")] = "https://hooks.slack.com/services/T1/B2/secret"
    bed.reconcile(bed.v1(), 2)  # within the backoff: not read again yet
    assert bed.condition(c.WEBHOOK_READY)[0] == "False"
    bed.reconcile(bed.v1(), 8)  # read again, and now usable
    bed.reconcile(bed.v1(), 8.5)
    assert bed.condition(c.WEBHOOK_READY) == ("True", "WebhookAllowed")
    bed.api.edit_spec(activeVersion="v3")
    bed.reconcile(bed.v1(), 9)
    bed.reconcile(bed.serving("v3"), 10)  # RolloutSucceeded goes to both webhooks
    assert {"https://hooks.slack.com/services/T1/B2/secret", "http://hooks.example/x"} <= set(
        bed.notifier.urls
    )


def test_a_body_our_own_status_write_replaced_is_not_decided_on_again() -> None:
    """The cache lags behind our writes: reconciling the body a write replaced would
    patch a status that conflicts and post the Events again (docs/architecture.md)."""
    bed = Bed()
    before = bed.api.snapshot()
    bed.reconcile(Observed(), 0)
    assert bed.api.writes, "the first reconcile writes status and children"
    bed.api.writes.clear()
    requeue = reconcile_once(bed.services, before, bed.v1(), at(1), bed.memory)
    assert bed.api.writes == []
    assert requeue is not None and requeue > 0  # looked at again if the watch stays silent
    bed.reconcile(bed.v1(), 1)  # the body the write made is decided on as usual
    assert bed.api.body["status"]["lastGoodVersion"] == "v1"


def test_the_bodies_our_status_write_and_revert_replaced_are_not_decided_on_again() -> None:
    bed = Bed().serving_v1()
    bed.api.edit_spec(activeVersion="v2")
    released = bed.api.snapshot()
    bed.reconcile(bed.crashing_v2(), 10)  # status (Failed), then the revert
    assert bed.api.body["spec"]["activeVersion"] == "v1"
    failed_not_reverted = bed.api.after_status
    assert failed_not_reverted is not None
    bed.api.writes.clear()
    bed.api.events.clear()
    for lagging in (released, failed_not_reverted):
        reconcile_once(bed.services, lagging, bed.crashing_v2(), at(11), bed.memory)
    assert bed.api.writes == []
    assert bed.api.events == []


def test_an_event_delivered_at_a_time_finer_than_status_keeps_is_not_posted_again() -> None:
    """Status keeps milliseconds; the clock has microseconds. The delivered notice and the
    one read back from status must be the same, or each Event is posted twice (409)."""
    bed = Bed()
    bed.reconcile(Observed(), 0.000_123_4)
    assert [e.reason for e in bed.api.events] == ["RolloutStarted"]
    bed.reconcile(Observed(), 0.5)
    assert [e.reason for e in bed.api.events] == ["RolloutStarted"]
    assert bed.api.body["status"]["outbox"] == []


def rolling_out(bed: Bed, ready: int) -> Observed:
    resource = parse_resource(bed.api.body)
    return Observed(deployment=deployment(resource, "v1", ready=ready), service=service(resource))


def test_progress_alone_is_written_at_most_every_few_seconds_and_not_lost() -> None:
    bed = Bed()
    bed.api.body["spec"]["replicas"] = 3
    bed.reconcile(Observed(), 0)  # the rollout starts: written
    bed.reconcile(rolling_out(bed, 0), 0.2)  # the RolloutStarted notice leaves the outbox
    bed.api.writes.clear()
    requeue = bed.reconcile(rolling_out(bed, 1), 0.4)
    assert bed.kinds() == []  # 1/3 ready: only progress, 0.2 s after the last write
    assert requeue is not None
    assert 0 < requeue <= 5
    bed.reconcile(rolling_out(bed, 1), 0.2 + 5)  # when it is due, it is written
    assert bed.kinds() == ["status"]
    assert bed.api.body["status"]["readiness"] == "1/3"


def test_a_change_beyond_progress_is_written_at_once_with_the_progress_that_waited() -> None:
    bed = Bed()
    bed.api.body["spec"]["replicas"] = 3
    bed.reconcile(Observed(), 0)
    bed.reconcile(rolling_out(bed, 0), 0.2)
    bed.reconcile(rolling_out(bed, 2), 0.3)  # waits
    bed.api.writes.clear()
    bed.reconcile(rolling_out(bed, 3), 0.4)  # Ready: a condition changes
    assert bed.kinds()[0] == "status"
    assert [e.reason for e in bed.api.events][-1] == "RolloutSucceeded"
    assert bed.condition(c.READY)[0] == "True"
    assert bed.api.body["status"]["readiness"] == "3/3"


# ------------------------------------------- notifications: at least once, for a day

HOOK = "http://hooks.example/x"  # the Bed's operator-wide webhook


def test_a_notice_stays_owed_until_the_receiver_answers_2xx_backing_off_meanwhile() -> None:
    bed = Bed().serving_v1()
    bed.notifier.down[HOOK] = "HTTP 503"
    bed.api.edit_spec(activeVersion="v2")
    bed.reconcile(bed.crashing_v2(), 10)
    tried_at: list[float] = []  # when RolloutFailed was sent to the receiver
    for tick in range(1, 400):  # ten minutes of reconciles, every 1.5 s
        seconds = 10 + tick * 1.5
        before = len(bed.notifier.attempts)
        bed.reconcile(bed.v1(), seconds)
        if any(a[0] == "RolloutFailed" for a in bed.notifier.attempts[before:]):
            tried_at.append(seconds)
    owed = [n["reason"] for n in bed.api.body["status"]["outbox"]]
    assert "RolloutFailed" in owed and "RolledBack" in owed  # never marked delivered
    gaps = [later - earlier for earlier, later in itertools.pairwise(tried_at)]
    assert gaps == sorted(gaps)  # backing off
    assert max(gaps) <= 300 + 1.5  # capped
    assert bed.condition(c.WEBHOOK_READY) == ("False", "WebhookUndelivered")
    message = next(
        k["message"] for k in bed.api.body["status"]["conditions"] if k["type"] == "WebhookReady"
    )
    assert "hooks.example:80" in message and "HTTP 503" in message
    assert "/x" not in message  # a URL may be a credential: host and port only
    del bed.notifier.down[HOOK]  # the receiver is back
    for tick in range(1, 400):
        bed.reconcile(bed.v1(), 610 + tick)
    assert bed.api.body["status"]["outbox"] == []
    assert ("m", "RolloutFailed") in bed.notifier.sent and ("m", "RolledBack") in bed.notifier.sent
    assert all(k["type"] != "WebhookReady" for k in bed.api.body["status"]["conditions"])


def test_a_restart_while_a_notice_is_owed_sends_it_again() -> None:
    bed = Bed().serving_v1()
    bed.notifier.down[HOOK] = "no answer within the deadline"
    bed.api.edit_spec(activeVersion="v2")
    bed.reconcile(bed.crashing_v2(), 10)
    bed.reconcile(bed.v1(), 11)
    bed.memory = Memory()  # the operator restarted: all it owes is in status
    del bed.notifier.down[HOOK]
    bed.reconcile(bed.v1(), 12)
    bed.reconcile(bed.v1(), 13)
    assert ("m", "RolloutFailed") in bed.notifier.sent
    assert bed.api.body["status"]["outbox"] == []


def test_a_notice_owed_for_a_day_is_given_up_on_saying_so() -> None:
    bed = Bed().serving_v1()
    bed.notifier.down[HOOK] = "HTTP 500"
    bed.api.edit_spec(activeVersion="v2")
    bed.reconcile(bed.crashing_v2(), 10)
    bed.reconcile(bed.v1(), 11)
    dropped = metrics.NOTIFICATIONS_DROPPED._value.get()
    bed.reconcile(bed.v1(), 10 + 24 * 3600 - 5)
    assert [n["reason"] for n in bed.api.body["status"]["outbox"]].count("RolloutFailed") == 1
    bed.reconcile(bed.v1(), 11 + 24 * 3600)
    owed = [n["reason"] for n in bed.api.body["status"]["outbox"]]
    assert "RolloutFailed" not in owed and "RolledBack" not in owed
    said = [e for e in bed.api.events if e.reason == "NotificationDropped"]
    assert len(said) >= 2 and all(e.type == "Warning" for e in said)
    assert "HTTP 500" in said[0].message
    assert metrics.NOTIFICATIONS_DROPPED._value.get() - dropped >= 2


def test_a_full_receiver_queue_keeps_the_notice_owed_and_another_receiver_gets_it() -> None:
    secret = {"url": "https://hooks.slack.com/services/T1/B2/x"}
    bed = with_webhook(Bed(), secret, allowed=("https://hooks.slack.com/services/",))
    bed.serving_v1()
    bed.notifier.full.add(HOOK)  # the operator-wide receiver's queue is full
    bed.api.edit_spec(activeVersion="v2")
    bed.reconcile(bed.crashing_v2(), 10)
    assert "https://hooks.slack.com/services/T1/B2/x" in bed.notifier.urls  # not delayed
    for tick in range(1, 20):
        bed.reconcile(bed.v1(), 10 + tick)
    assert "RolloutFailed" in [n["reason"] for n in bed.api.body["status"]["outbox"]]
    bed.notifier.full.clear()
    for tick in range(20, 40):
        bed.reconcile(bed.v1(), 10 + tick)
    assert HOOK in bed.notifier.urls
    assert bed.api.body["status"]["outbox"] == []


def test_a_full_outbox_gives_up_on_the_oldest_saying_so() -> None:
    bed = Bed().serving_v1()
    bed.notifier.down[HOOK] = "HTTP 502"
    dropped = metrics.NOTIFICATIONS_DROPPED._value.get()
    for n in range(40):  # each release owes a RolloutSucceeded nobody can take
        bed.api.edit_spec(activeVersion="v3" if n % 2 else "v1")
        bed.reconcile(bed.serving("v3" if n % 2 else "v1"), 20 + n * 10)
        bed.reconcile(bed.serving("v3" if n % 2 else "v1"), 25 + n * 10)
    assert len(bed.api.body["status"]["outbox"]) <= 32
    said = [e for e in bed.api.events if e.reason == "NotificationDropped"]
    assert said and said[0].type == "Warning" and "more than 32" in said[0].message
    assert metrics.NOTIFICATIONS_DROPPED._value.get() > dropped
