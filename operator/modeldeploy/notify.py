"""Webhook notifications for RolloutFailed, RolledBack and RolloutSucceeded: one attempt
at a time, in a bounded queue per receiver.

Sits beside the kube layer, below the handlers. Each job is one POST with a
whole-request deadline, on a small pool of workers with one lane per receiver (host
and port), so a dead or slow receiver holds one worker and never delays a revert or
another receiver's notices. A receiver's queue is bounded: past `per_receiver` jobs
waiting, `notify` refuses the job and the notice simply stays owed in status. Whether
and when to try again is the reconcile's decision (reconcile.py: at least once, with
capped backoff, for a day); this module only says how each attempt went.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from modeldeploy import constants as c
from modeldeploy import faults, outbound
from modeldeploy.core.plan import Event, event_id
from modeldeploy.lanes import Lanes
from modeldeploy.model.egress import EgressPolicy, Purpose, receiver
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import JSON, Spec
from modeldeploy.model.times import format_time

logger = logging.getLogger(__name__)

NOTIFIED = c.WEBHOOK_EVENTS
ICONS = {
    c.EVENT_ROLLOUT_FAILED: ":x:",
    c.EVENT_ROLLED_BACK: ":rewind:",
    c.EVENT_ROLLOUT_SUCCEEDED: ":white_check_mark:",
}
PER_RECEIVER = 100  # jobs waiting for one receiver; more wait in status, not in memory
# Called once an attempt ended: None when the receiver answered 2xx, else why not.
Done = Callable[[str | None], None]


def payload(resource: Resource, event: Event, now: datetime) -> JSON:
    """The JSON body: structured fields, plus `text` for Slack-compatible receivers."""
    where = f"{resource.namespace}/{resource.name}"
    spec = resource.spec if isinstance(resource.spec, Spec) else None
    return {
        "text": f"{ICONS.get(event.reason, '')} modeldeploy {where}: {event.reason}: "
        f"{event.message}".strip(),
        "id": event_id(resource.uid, event) if event.key else None,
        "event": event.reason,
        "type": event.type,
        "message": event.message,
        "namespace": resource.namespace,
        "name": resource.name,
        "activeVersion": spec.active_version if spec else None,
        "servingVersion": resource.status.serving_version,
        "lastGoodVersion": resource.status.last_good_version,
        "time": format_time(now),
    }


class Notifier:
    """Sends webhook payloads, one attempt per job, each within a whole deadline."""

    def __init__(
        self,
        policy: EgressPolicy,
        deadline_s: float = 3.0,
        per_receiver: int = PER_RECEIVER,
        workers: int = 4,
    ) -> None:
        self.policy = policy
        self.deadline_s = deadline_s
        self.per_receiver = per_receiver
        self._waiting: dict[str, int] = {}  # jobs queued or running, by receiver
        self._lock = threading.Lock()
        self._lanes = Lanes(workers=workers, name="webhook")

    def notify(self, resource: Resource, event: Event, url: str, done: Done) -> bool:
        """Queue one attempt to deliver `event` to `url` (allowed already); never blocks.
        False when that receiver's queue is full: the caller tries again later."""
        host = receiver(url)
        with self._lock:
            if self._waiting.get(host, 0) >= self.per_receiver:
                return False
            self._waiting[host] = self._waiting.get(host, 0) + 1
        body = payload(resource, event, datetime.now(UTC))
        scope = self.policy.scope(Purpose.WEBHOOK, resource.namespace)
        job = functools.partial(self._attempt, url, host, body, scope, done)
        self._lanes.submit(host, job)
        return True

    def _attempt(
        self, url: str, host: str, body: JSON, scope: outbound.Allowed, done: Done
    ) -> None:
        error: str | None = "the attempt did not finish"
        try:
            error = self._post(url, scope, json.dumps(body).encode())
            if error is None:
                faults.point(f"webhook:{body['event']}")
            else:  # never the URL: it may be a credential
                logger.warning("webhook %s to %s failed: %s", body["event"], host, error)
        finally:
            with self._lock:
                self._waiting[host] -= 1
                if not self._waiting[host]:
                    del self._waiting[host]
            done(error)

    def _post(self, url: str, scope: outbound.Allowed, data: bytes) -> str | None:
        headers = {"Content-Type": "application/json"}
        try:
            answer = outbound.request("POST", url, self.deadline_s, scope, data, headers)
        except outbound.OutboundError as error:
            return str(error)
        return None if 200 <= answer.status < 300 else f"HTTP {answer.status}"

    def close(self) -> None:
        self._lanes.close()
