"""Owed Events and webhook notices, out of the status outbox: at least once (B10).

Part of the reconcile, after the status write that holds what is owed: each Event is
posted, each notice sent to the receivers allowed for its namespace, one attempt per
reconcile with a per-receiver backoff; what was delivered is kept in `Memory` so the
next decision prunes it from the outbox. Imports neither kopf nor kubernetes.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from datetime import datetime

from modeldeploy import constants as c
from modeldeploy import faults
from modeldeploy.core.egress_check import WEBHOOK_TARGET
from modeldeploy.core.plan import Event
from modeldeploy.core.revert import retry_delay_s, retry_due
from modeldeploy.model.egress import receiver
from modeldeploy.model.observed import RefusalKey
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import Spec
from modeldeploy.model.status import Notice, RegistryWrite
from modeldeploy.model.times import format_time
from modeldeploy.ports import Cluster, Hook, Memory, Refused, Services

logger = logging.getLogger(__name__)

DRAIN_S = 0.5  # after delivering, look again this soon to clear the outbox
EVENT_RETRY_S = 5.0


def notice_id(notice: Notice) -> str:
    """A stable identity for an owed notice: it names its Event and is the webhook's `id`."""
    return f"{notice.reason}/{format_time(notice.at)}/{notice.message}"


HOOK_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
QUEUE_FULL_RETRY_S = 5.0  # a receiver's queue was full: look again this soon


def hook_backoff_s(attempts: int) -> float:
    return HOOK_BACKOFF_S[min(attempts, len(HOOK_BACKOFF_S)) - 1]


def deliver(
    services: Services,
    resource: Resource,
    notices: tuple[Notice, ...],
    memory: Memory,
    wake: Callable[[], None],
    now: datetime,
) -> float | None:
    """Post each owed Event, then send it to each webhook until every one answered 2xx;
    the next reconcile clears what was delivered from the outbox."""
    requeue: float | None = None
    urls: tuple[str, ...] | None = None  # looked up once, and only if a notice needs them
    for notice in notices:
        with memory.lock:
            if notice.key in memory.delivered:
                continue
            posted = notice.key in memory.posted
        event = Event(notice.type, notice.reason, notice.message, key=notice_id(notice))
        if not posted:
            if not services.cluster.post_event(resource, event):
                requeue = sooner(requeue, EVENT_RETRY_S)
                continue
            faults.point(f"event:{notice.reason}")
        if urls is None and notice.reason in c.WEBHOOK_EVENTS:
            urls = webhook_urls(services, resource, memory, now)
        targets = urls if notice.reason in c.WEBHOOK_EVENTS else ()
        requeue = sooner(
            requeue, _send_hooks(services, resource, notice, event, targets, memory, wake, now)
        )
    return requeue


def _send_hooks(
    services: Services,
    resource: Resource,
    notice: Notice,
    event: Event,
    urls: tuple[str, ...] | None,
    memory: Memory,
    wake: Callable[[], None],
    now: datetime,
) -> float | None:
    """Queue an attempt to each URL that has not answered 2xx and is due (backing off
    after failures); the notice is delivered once every URL answered."""
    memory.want(notice.key, frozenset(urls or ()))
    with memory.lock:
        pending = [url for url in urls or () if (notice.key, url) not in memory.hooks_done]
    requeue: float | None = DRAIN_S if not pending else None
    for url in pending:
        hook = (notice.key, url)
        with memory.lock:
            if hook in memory.hooks_sending:
                continue
            failed = memory.hooks_failed.get(hook)
            if failed is not None:
                left = hook_backoff_s(failed.count) - (now - failed.last_at).total_seconds()
                if left > 0:
                    requeue = sooner(requeue, left)
                    continue
            memory.hooks_sending.add(hook)

        def done(error: str | None, hook: Hook = hook, url: str = url) -> None:
            # Dated when it was queued: the backoff counts from the attempt's start.
            memory.attempted(hook, receiver(url), error, now)
            wake()

        if not services.notifier.notify(resource, event, url, done):
            with memory.lock:
                memory.hooks_sending.discard(hook)
            requeue = sooner(requeue, QUEUE_FULL_RETRY_S)
    return requeue


def webhook_urls(
    services: Services, resource: Resource, memory: Memory, now: datetime
) -> tuple[str, ...]:
    """Where this resource's notifications go: its webhook (its URL, or the URL in its
    Secret), if the admin allows it, and the operator-wide one. A Secret that cannot be
    read or holds a refused URL is remembered, so the next decision says it."""
    urls = [services.webhook_url] if services.webhook_url else []
    hook = resource.spec.webhook if isinstance(resource.spec, Spec) else None
    if hook is None:
        return tuple(urls)
    if hook.url is not None:
        allowed = (
            services.settings.egress.why_not(hook.url, WEBHOOK_TARGET, resource.namespace) is None
        )
        return tuple([hook.url, *urls] if allowed else urls)
    name, key = hook.secret_name or "", hook.secret_key or ""
    where = f"the webhook URL in Secret {name}, key {key}"
    try:
        url = services.cluster.read_secret_key(resource.namespace, name, key)
    except Refused as error:
        memory.refused(
            RefusalKey.WEBHOOK,
            resource.generation,
            Refused(error.code, f"{where}: {error.message}"),
            now,
        )
        return tuple(urls)
    why = (
        "no such Secret or key"
        if url is None
        else services.settings.egress.why_not(url, WEBHOOK_TARGET, resource.namespace)
    )
    if why is not None:
        memory.refused(RefusalKey.WEBHOOK, resource.generation, Refused(0, f"{where}: {why}"), now)
        return tuple(urls)
    memory.refusals.pop(RefusalKey.WEBHOOK, None)
    assert url is not None
    return (url, *urls)


def recheck_webhook(
    services: Services, resource: Resource, memory: Memory, now: datetime
) -> float | None:
    """A webhook Secret that could not be used is looked at again, backing off, so a
    fixed Secret clears WebhookReady=False without waiting for the next rollout."""
    refusal = memory.refusals.get(RefusalKey.WEBHOOK)
    if refusal is None:
        return None
    if retry_due(refusal, now):
        webhook_urls(services, resource, memory, now)
        if RefusalKey.WEBHOOK not in memory.refusals:
            return DRAIN_S  # say it in status
        refusal = memory.refusals[RefusalKey.WEBHOOK]
    left = retry_delay_s(refusal) - (now - refusal.at).total_seconds()
    return max(left, 0.05)


def sooner(first: float | None, second: float | None) -> float | None:
    return min((s for s in (first, second) if s is not None), default=None)


# ------------------------------------------------------------- the registry's writes


def write_registry(
    services: Services,
    resource: Resource,
    writes: tuple[RegistryWrite, ...],
    memory: Memory,
    now: datetime,
) -> float | None:
    """Make the writes status owes the registry, oldest first (the alias ends on the
    latest version that serves); after one gets no answer, stop and back off. A write
    the registry refuses (no such model version any more, no EDIT permission) is given
    up on, saying so in a Warning Event: trying again would not change its answer. A
    credentials Secret that is missing or incomplete keeps them owed, like an outage."""
    spec = resource.spec
    client = services.registry
    if not isinstance(spec, Spec) or spec.registry is None or client is None:
        return None
    due = [w for w in writes if w.key not in memory.registry_written]
    if not due:
        return None
    left = memory.registry_due_in(now)
    if left > 0:
        return left
    authorization, problem = registry_credentials(
        services.cluster, resource.namespace, spec.registry.credentials_secret
    )
    for owed in due:
        error, unanswered = (
            (problem, True)  # a Secret can be fixed: kept owed, tried again with backoff
            if problem is not None
            else client.write(resource.namespace, spec.registry.tracking_uri, authorization, owed)
        )
        if unanswered:
            logger.warning(
                "registry write for %s/%s (%s %s) not answered: %s",
                resource.namespace,
                resource.name,
                owed.model,
                owed.model_version,
                error,
            )
            return memory.registry_answered(False, error, now)
        memory.registry_answered(True, None, now)
        if error is not None:
            said = (
                f"the registry refused marking {owed.model} version {owed.model_version} "
                f"{owed.state}: {error}"
            )
            services.cluster.post_event(resource, Event("Warning", "RegistryWriteRefused", said))
        with memory.lock:
            memory.registry_written.add(owed.key)
    return DRAIN_S  # look again soon: the next decision drops what was written


def registry_credentials(
    cluster: Cluster, namespace: str, secret: str | None
) -> tuple[str | None, str | None]:
    """The Authorization header from spec.registry.mlflow.credentialsSecret (key `token`:
    a bearer token; keys `username` and `password`: basic auth), or why there is none.
    The values are never logged nor written anywhere but the header."""
    if secret is None:
        return None, None
    try:
        token = cluster.read_secret_key(namespace, secret, "token")
        if token:
            return f"Bearer {token.strip()}", None
        user = cluster.read_secret_key(namespace, secret, "username")
        password = cluster.read_secret_key(namespace, secret, "password")
    except Refused as error:
        return None, f"the API server refused reading Secret {secret} (HTTP {error.code})"
    if user and password:
        pair = base64.b64encode(f"{user}:{password}".encode()).decode()
        return f"Basic {pair}", None
    return None, (
        f"Secret {secret} in namespace {namespace} is missing, or holds neither the key "
        "token nor the keys username and password"
    )
