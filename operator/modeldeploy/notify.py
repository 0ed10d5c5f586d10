"""Webhook notifications for RolloutFailed, RolledBack and RolloutSucceeded.

Sits beside the kube layer, below the handlers. Sending happens on a small
thread pool with a timeout and bounded retries, so a dead or slow receiver can
never delay or block a revert; a payload that cannot be delivered is logged.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from modeldeploy import constants as c
from modeldeploy.core.plan import Event
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import JSON, Spec
from modeldeploy.model.times import format_time

logger = logging.getLogger(__name__)

NOTIFIED = frozenset({c.EVENT_ROLLOUT_FAILED, c.EVENT_ROLLED_BACK, c.EVENT_ROLLOUT_SUCCEEDED})
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
    def __init__(
        self, default_url: str | None = None, timeout_s: float = 3.0, attempts: int = 3
    ) -> None:
        self.default_url = default_url
        self.timeout_s = timeout_s
        self.attempts = attempts
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="webhook")

    def notify(self, resource: Resource, event: Event) -> None:
        """Queue the event for the resource's webhook (or the operator-wide one); never blocks."""
        if event.reason not in NOTIFIED:
            return
        spec_url = resource.spec.webhook_url if isinstance(resource.spec, Spec) else None
        for url in {u for u in (spec_url, self.default_url) if u}:
            self._pool.submit(self._send, url, payload(resource, event, datetime.now(UTC)))

    def _send(self, url: str, body: JSON) -> None:
        data = json.dumps(body).encode()
        for attempt in range(1, self.attempts + 1):
            request = urllib.request.Request(  # noqa: S310 - http(s) only, checked at admission
                url, data=data, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s):  # noqa: S310
                    return
            except (urllib.error.URLError, OSError) as error:
                logger.warning(
                    "webhook %s attempt %d/%d failed: %s", url, attempt, self.attempts, error
                )
                if attempt < self.attempts:
                    time.sleep(0.5 * 2 ** (attempt - 1))
        logger.error(
            "webhook %s: gave up on %s for %s/%s",
            url,
            body["event"],
            body["namespace"],
            body["name"],
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
