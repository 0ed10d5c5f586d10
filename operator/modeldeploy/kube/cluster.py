"""The write protocol of a reconcile over the API: children, status, spec, Events.

Part of the `kube` package, between the pure core and the kopf handlers: it applies
rendered children, writes status with an optimistic lock, makes the conditional spec
change, and posts Events. Every call here is synchronous; callers run it off the
event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from modeldeploy import constants as c
from modeldeploy.core.plan import Event, PodGate, SpecChange, event_id
from modeldeploy.kube.api import KubeApi
from modeldeploy.kube.client import DEADLINE, api_message, refusals
from modeldeploy.model.observed import ChildState, parse_child
from modeldeploy.model.resource import Resource, released
from modeldeploy.model.spec import JSON
from modeldeploy.model.times import format_time
from modeldeploy.ports import Refused

logger = logging.getLogger(__name__)

_APPLY = "application/apply-patch+yaml"


class KubeCluster(KubeApi):
    """Typed writes for one ModelDeployment's children, status and Events, over the API.

    Implements `modeldeploy.ports.Cluster`; the plugin uses its reads and patches
    too. Every write carries field manager `modeldeploy` and every call a deadline; a
    refusal (4xx other than a failed precondition) becomes `Refused` with the API's
    own message, a transient error (429, 5xx, no answer) stays an ApiException. With a
    `fence`, every write asks it just before the call and is refused (`Fenced`) when it
    says no: a leader that could not renew its Lease writes nothing more.
    """

    _nodes: Nodes | None = None

    @property
    def policy(self) -> Any:
        """PodDisruptionBudgets (spec.disruption)."""
        return kubernetes.client.PolicyV1Api(self.api)

    def too_large(self, requests: tuple[tuple[str, str], ...]) -> str | None:
        """Why no node could hold a pod asking `requests` even empty, or None."""
        if self._nodes is None:
            self._nodes = Nodes(self.core)
        return self._nodes.too_large(requests)

    # ------------------------------------------------------------------ children

    def apply(self, manifest: JSON) -> None:
        """Server-side apply as our field manager: creates, or repairs drift in our fields."""
        meta = manifest["metadata"]
        kind = manifest["kind"]
        call = {
            "Deployment": self.apps.patch_namespaced_deployment,
            "Service": self.core.patch_namespaced_service,
            "PodDisruptionBudget": self.policy.patch_namespaced_pod_disruption_budget,
        }[kind]
        with refusals():
            self._write(
                call,
                meta["name"],
                meta["namespace"],
                manifest,
                field_manager=c.MANAGER,
                force=True,
                _content_type=_APPLY,
            )
        logger.info("applied %s %s/%s", kind, meta["namespace"], meta["name"])

    def read_child(self, kind: str, resource: Resource, name: str) -> ChildState | None:
        """The child of `kind` named `name` in `resource`'s namespace, whoever made it."""
        read = {
            "Deployment": self.apps.read_namespaced_deployment,
            "Service": self.core.read_namespaced_service,
            "PodDisruptionBudget": self.policy.read_namespaced_pod_disruption_budget,
        }[kind]
        try:
            child = read(name, resource.namespace, _request_timeout=DEADLINE)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return parse_child(self.api.sanitize_for_serialization(child))

    def delete_child(self, kind: str, resource: Resource, name: str) -> None:
        """Delete a child we own; one already gone is fine."""
        delete = {
            "Deployment": self.apps.delete_namespaced_deployment,
            "PodDisruptionBudget": self.policy.delete_namespaced_pod_disruption_budget,
        }[kind]
        try:
            with refusals():
                self._write(delete, name, resource.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
        logger.info("deleted %s %s/%s", kind, resource.namespace, name)

    def set_pod_gate(self, namespace: str, gate: PodGate) -> None:
        """The pod's readiness gate condition (c.CONDITION_VALIDATED), by a strategic
        merge of status.conditions (merged by type: the kubelet's own are left alone)."""
        condition: JSON = {
            "type": c.CONDITION_VALIDATED,
            "status": "True" if gate.passed else "False",
            "reason": gate.reason,
            "message": gate.message[:1024],
            "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        try:
            with refusals():
                self._write(
                    self.core.patch_namespaced_pod_status,
                    gate.pod,
                    namespace,
                    {"status": {"conditions": [condition]}},
                    field_manager=c.MANAGER,
                )
        except ApiException as error:
            if error.status != 404:
                raise
            return
        logger.info(
            "readiness gate of pod %s/%s: %s (%s)", namespace, gate.pod, gate.passed, gate.reason
        )

    # ------------------------------------------------------------------ the CR

    def replace_status(self, resource: Resource, resource_version: str, status: JSON) -> str | None:
        """Write the whole status if the object is still at `resource_version`; the
        resourceVersion the write made.

        None when it moved on: our view was stale, and the watch is about to
        deliver the newer object, which is reconciled afresh.
        """
        patch: list[JSON] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
            {"op": "add", "path": "/status", "value": status},
        ]
        written = self.patched(resource.namespace, resource.name, patch, status=True)
        if written is None:
            logger.debug("status of %s/%s is stale", resource.namespace, resource.name)
            return None
        return str(written["metadata"]["resourceVersion"])

    def change_spec(self, resource: Resource, change: SpecChange) -> bool:
        """The conditional spec write: JSON-patch `test`s let a user's edit win.

        False when the spec is no longer the one the decision was about; `Refused`
        when it still is and the API (a ValidatingAdmissionPolicy, a webhook) said no.
        """
        patch = change.ops()
        applied = self.patch(resource.namespace, resource.name, patch)
        where = f"{resource.namespace}/{resource.name}"
        if not applied:
            logger.info("spec change of %s not applied: the spec moved on", where)
        elif change.set_version is not None:
            logger.info(
                "set spec.activeVersion of %s: %s -> %s",
                where,
                change.expect_version,
                change.set_version,
            )
        return applied

    def release_active_version(self, resource: Resource) -> None:
        """Take spec.activeVersion out of our managedFields entries, so a later writer
        (Helm, Flux, kubectl apply --server-side) never conflicts with a revert that is
        over. Guarded by resourceVersion; a stale view leaves it for the next look."""
        raw = self.custom.get_namespaced_custom_object(
            c.GROUP,
            c.VERSION,
            resource.namespace,
            c.PLURAL,
            resource.name,
            _request_timeout=DEADLINE,
        )
        meta = dict(raw["metadata"])  # type: ignore[index]
        fields = released(meta.get("managedFields") or [], c.MANAGER)
        patch: list[JSON] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]},
            {"op": "replace", "path": "/metadata/managedFields", "value": fields},
        ]
        if self.patch(resource.namespace, resource.name, patch):
            logger.info("released spec.activeVersion of %s/%s", resource.namespace, resource.name)

    def post_event(self, resource: Resource, event: Event) -> bool:
        """An Event about `resource`; True once it exists. Its name comes from the event's
        identity, so posting an owed Event again after a restart finds it there (409)."""
        now = datetime.now(UTC)
        body: JSON = {
            "metadata": {"name": event_name(resource, event), "namespace": resource.namespace},
            "involvedObject": {
                "apiVersion": c.API_VERSION,
                "kind": c.KIND,
                "name": resource.name,
                "namespace": resource.namespace,
                "uid": resource.uid,
            },
            "type": event.type,
            "reason": event.reason,
            "message": event.message[:1024],
            "source": {"component": c.MANAGER},
            "reportingComponent": c.MANAGER,
            "reportingInstance": self.instance,
            "firstTimestamp": format_time(now),
            "lastTimestamp": format_time(now),
            "count": 1,
        }
        try:
            self._write(
                self.core.create_namespaced_event,
                resource.namespace,
                body,
                field_manager=c.MANAGER,
            )
        except ApiException as error:
            if error.status == 409:
                return True  # posted before a restart: delivered already
            logger.warning("could not post event %s: %s", event.reason, api_message(error))
            return False
        except urllib3.exceptions.HTTPError as error:
            logger.warning("could not post event %s: %s", event.reason, error)
            return False
        return True


def event_name(resource: Resource, event: Event) -> str:
    """`<resource>.<16 hex>`: the same owed Event gets the same name on every attempt."""
    return f"{resource.name}.{event_id(resource.uid, event)}"


def _quantity(value: str) -> Decimal:
    """The client's own parser of Kubernetes quantities ("1", "500m", "16Gi"), typed."""
    parsed: Decimal = parse_quantity(value)  # type: ignore[no-untyped-call]
    return parsed


class Nodes:
    """The nodes' allocatable, read when a pod the scheduler found Insufficient must be
    told apart from one no node could ever hold (core/capacity.py). One LIST at most per
    NODES_TTL_S; nodes the operator may not list leave every wait a wait (it logs once)."""

    NODES_TTL_S = 30.0

    def __init__(self, core: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.core = core
        self.clock = clock
        self._largest: dict[str, Decimal] | None = None
        self._read_at: float | None = None
        self._denied = False

    def too_large(self, requests: tuple[tuple[str, str], ...]) -> str | None:
        """Why no node could hold a pod asking `requests` even empty, or None."""
        largest = self._largest_allocatable()
        if largest is None:
            return None
        for resource, quantity in requests:
            asked = _quantity(quantity)
            room = largest.get(resource, Decimal(0))
            if asked > room:
                return f"it asks for {quantity} {resource} and the largest node has {room}"
        return None

    def _largest_allocatable(self) -> dict[str, Decimal] | None:
        now = self.clock()
        if self._read_at is not None and now - self._read_at < self.NODES_TTL_S:
            return self._largest
        self._read_at = now
        try:
            with refusals():
                nodes = self.core.list_node(_request_timeout=DEADLINE).items
        except (ApiException, urllib3.exceptions.HTTPError) as error:
            logger.info("could not list nodes (%s): waits stay waits for now", error)
            return None
        except Refused as error:
            if not self._denied:
                logger.warning(
                    "cannot list nodes (HTTP %s): a version too large for every node "
                    "waits for room until its progress deadline",
                    error.code,
                )
            self._denied = True
            self._largest = None
            return None
        largest: dict[str, Decimal] = {}
        for node in nodes:
            for resource, quantity in ((node.status and node.status.allocatable) or {}).items():
                largest[resource] = max(largest.get(resource, Decimal(0)), _quantity(quantity))
        self._largest = largest
        return largest
