"""Webhook notifications for RolloutFailed, RolledBack and RolloutSucceeded.

Sits beside the kube layer, below the handlers. Sending happens on a small
thread pool with a whole-request deadline and bounded retries, so a dead or slow
receiver can never delay or block a revert; a payload that cannot be delivered is
logged, and the Event stays owed in status until it was sent or given up.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime

from modeldeploy import constants as c
from modeldeploy import faults, metrics, outbound
from modeldeploy.core.plan import Event, event_id
from modeldeploy.lanes import Lanes
from modeldeploy.model.egress import EgressPolicy
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
    """Sends webhook payloads on a small pool, each request within a whole deadline.

    The queue is bounded: past `max_pending` payloads a new one is dropped and
    counted (modeldeploy_webhooks_dropped_total) rather than held in memory.
    """

    def __init__(
        self,
        policy: EgressPolicy,
        deadline_s: float = 3.0,
        attempts: int = 3,
        max_pending: int = 1000,
    ) -> None:
        self.policy = policy
        self.deadline_s = deadline_s
        self.attempts = attempts
        self.max_pending = max_pending
        self._pending = 0
        self._lock = threading.Lock()
        # One lane per receiver host: a slow or hostile one holds one worker, never all.
        self._lanes = Lanes(workers=4, name="webhook")

    def notify(
        self, resource: Resource, event: Event, urls: tuple[str, ...], done: Callable[[], None]
    ) -> bool:
        """Queue `event` for each of `urls` (already allowed and resolved); never blocks.
        `done` runs once every URL was sent or given up; False: nothing to send."""
        if event.reason not in NOTIFIED or not urls:
            return False
        body = payload(resource, event, datetime.now(UTC))
        countdown = _Countdown(len(urls), done)
        for url in urls:
            if not self._reserve():
                metrics.WEBHOOKS_DROPPED.inc()
                logger.error("webhook queue full: dropped %s for %s", event.reason, _where(body))
                countdown.tick()
                continue
            self._lanes.submit(_host(url), functools.partial(self._send, url, body, countdown))
        return True

    def _reserve(self) -> bool:
        with self._lock:
            if self._pending >= self.max_pending:
                return False
            self._pending += 1
            return True

    def _send(self, url: str, body: JSON, countdown: _Countdown) -> None:
        try:
            if self._deliver(url, json.dumps(body).encode()):
                faults.point(f"webhook:{body['event']}")
            else:
                logger.error(
                    "webhook: gave up on %s for %s/%s",
                    body["event"],
                    body["namespace"],
                    body["name"],
                )
        finally:
            with self._lock:
                self._pending -= 1
            countdown.tick()

    def _deliver(self, url: str, data: bytes) -> bool:
        for attempt in range(1, self.attempts + 1):
            try:
                answer = outbound.request(
                    "POST",
                    url,
                    self.deadline_s,
                    self.policy,
                    data,
                    {"Content-Type": "application/json"},
                )
            except outbound.OutboundError as error:
                why = str(error)
            else:
                if 200 <= answer.status < 300:
                    return True
                why = f"HTTP {answer.status}"
            # Never the URL: it may be a credential (a Slack webhook).
            logger.warning(
                "webhook to %s attempt %d/%d failed: %s", _host(url), attempt, self.attempts, why
            )
            if attempt < self.attempts:
                time.sleep(0.5 * 2 ** (attempt - 1))
        return False

    def close(self) -> None:
        self._lanes.close()


def _host(url: str) -> str:
    """The receiver (host:port): its lane, and all a log line says of where it went."""
    return urllib.parse.urlsplit(url).netloc.rpartition("@")[2] or "?"


def _where(body: JSON) -> str:
    return f"{body['namespace']}/{body['name']}"


class _Countdown:
    """Calls `done` once, after `count` ticks (one per URL)."""

    def __init__(self, count: int, done: Callable[[], None]) -> None:
        self._left = count
        self._done = done
        self._lock = threading.Lock()

    def tick(self) -> None:
        with self._lock:
            self._left -= 1
            finished = self._left == 0
        if finished:
            self._done()
