"""The only module that talks to the Kubernetes API through the `kubernetes` client.

Sits between the pure core and the kopf handlers: it applies rendered children,
writes status with an optimistic lock, makes the conditional spec change, and
posts Events. Every call here is synchronous; callers run it off the event loop.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from modeldeploy import constants as c
from modeldeploy.core.plan import Event, SpecChange, event_id
from modeldeploy.model.observed import ChildState, parse_child
from modeldeploy.model.resource import Resource, released
from modeldeploy.model.spec import JSON
from modeldeploy.model.times import format_time
from modeldeploy.reconcile import Refused

logger = logging.getLogger(__name__)

_APPLY = "application/apply-patch+yaml"
_JSON_PATCH = "application/json-patch+json"
DEADLINE = (5.0, 30.0)  # seconds to connect, then to wait for each answer
_METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
_LIST_TIMEOUT = (5.0, 30.0)  # (connect, read) seconds: a hung LIST must not hold up a resync
Identity = tuple[str, str, str]  # (namespace, name, uid) of one object
_SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def current_namespace() -> str:
    """The namespace of the kubeconfig's current context, as kubectl would use."""
    try:
        _, context = kubernetes.config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
    except (kubernetes.config.ConfigException, OSError):
        return "default"
    return str((context or {}).get("context", {}).get("namespace") or "default")


class ConfigError(Exception):
    """No way to reach a cluster: not in a pod, and no usable kubeconfig."""


def load_config(connections: int | None = None) -> None:
    """In a pod: the ServiceAccount; elsewhere: $KUBECONFIG or ~/.kube/config.

    `connections`: HTTP connections kept per API server, one per concurrent caller;
    fewer and urllib3 opens and drops a connection for each extra request.
    """
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        try:
            kubernetes.config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except (kubernetes.config.ConfigException, OSError) as error:
            raise ConfigError(
                f"no in-cluster credentials and no usable kubeconfig "
                f"(KUBECONFIG or ~/.kube/config): {error}"
            ) from None
    if connections is not None:
        configuration.connection_pool_maxsize = max(connections, 4)
    kubernetes.client.Configuration.set_default(configuration)


class Fenced(Exception):
    """A write refused before it was sent: this process may not write (it does not lead)."""


class KubeCluster:
    """Typed writes for one ModelDeployment's children, status and Events, over the API.

    Implements `modeldeploy.reconcile.Cluster`; the plugin uses its reads and patches
    too. Every write carries field manager `modeldeploy` and every call a deadline; a
    refusal (4xx other than a failed precondition) becomes `Refused` with the API's
    own message, a transient error (429, 5xx, no answer) stays an ApiException. With a
    `fence`, every write asks it just before the call and is refused (`Fenced`) when it
    says no: a leader that could not renew its Lease writes nothing more.
    """

    def __init__(
        self,
        api: Any | None = None,
        fence: Callable[[], bool] | None = None,
        instance: str | None = None,
    ) -> None:
        self.api = api or kubernetes.client.ApiClient()
        self.apps = kubernetes.client.AppsV1Api(self.api)
        self.core = kubernetes.client.CoreV1Api(self.api)
        self.custom = kubernetes.client.CustomObjectsApi(self.api)
        self.instance = instance or socket.gethostname()
        self.fence = fence

    def _write(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Every write goes through here, so the fence is asked right before each one."""
        if self.fence is not None and not self.fence():
            raise Fenced(f"not the leader: {getattr(call, '__name__', 'write')} refused")
        return call(*args, **kwargs)

    # ------------------------------------------------------------------ children

    def apply(self, manifest: JSON) -> None:
        """Server-side apply as our field manager: creates, or repairs drift in our fields."""
        meta = manifest["metadata"]
        kind = manifest["kind"]
        call = {
            "Deployment": self.apps.patch_namespaced_deployment,
            "Service": self.core.patch_namespaced_service,
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
                _request_timeout=DEADLINE,
            )
        logger.info("applied %s %s/%s", kind, meta["namespace"], meta["name"])

    def read_child(self, kind: str, resource: Resource, name: str) -> ChildState | None:
        """The Deployment or Service `name` in `resource`'s namespace, whoever made it."""
        read = {
            "Deployment": self.apps.read_namespaced_deployment,
            "Service": self.core.read_namespaced_service,
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
        delete = {"Deployment": self.apps.delete_namespaced_deployment}[kind]
        try:
            with refusals():
                self._write(delete, name, resource.namespace, _request_timeout=DEADLINE)
        except ApiException as error:
            if error.status != 404:
                raise
        logger.info("deleted %s %s/%s", kind, resource.namespace, name)

    # ------------------------------------------------------------------ the CR

    def replace_status(self, resource: Resource, resource_version: str, status: JSON) -> bool:
        """Write the whole status if the object is still at `resource_version`.

        False when it moved on: our view was stale, and the watch is about to
        deliver the newer object, which is reconciled afresh.
        """
        patch: list[JSON] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
            {"op": "add", "path": "/status", "value": status},
        ]
        try:
            with refusals():
                self._write(
                    self.custom.patch_namespaced_custom_object_status,
                    c.GROUP,
                    c.VERSION,
                    resource.namespace,
                    c.PLURAL,
                    resource.name,
                    patch,
                    field_manager=c.MANAGER,
                    _content_type=_JSON_PATCH,
                    _request_timeout=DEADLINE,
                )
        except ApiException as error:
            if not _failed_precondition(error):
                raise
        except Refused as refusal:
            if not self._moved_on(resource, resource_version, refusal):
                raise
        else:
            return True
        logger.debug("status of %s/%s is stale", resource.namespace, resource.name)
        return False

    def _moved_on(self, resource: Resource, resource_version: str, refusal: Refused) -> bool:
        """Whether a 422 answering a patch guarded by `resource_version` was its `test`
        failing: since 1.33 the API server says only "the server rejected our request due
        to an error in our request" for that, so ask for the object's version instead."""
        if refusal.code != 422:
            return False
        try:
            current = self.get(resource.namespace, resource.name)
        except LookupError:
            return True
        return bool(current["metadata"].get("resourceVersion") != resource_version)

    def change_spec(self, resource: Resource, change: SpecChange) -> bool:
        """The conditional spec write: JSON-patch `test`s let a user's edit win.

        False when the spec is no longer the one the decision was about; `Refused`
        when it still is and the API (a ValidatingAdmissionPolicy, a webhook) said no.
        """
        patch: list[JSON] = []
        if change.expect_generation is not None:
            patch.append(
                {"op": "test", "path": "/metadata/generation", "value": change.expect_generation}
            )
        if change.expect_version is not None:
            patch.append(
                {"op": "test", "path": "/spec/activeVersion", "value": change.expect_version}
            )
        if change.set_version is not None:
            patch.append(
                {"op": "replace", "path": "/spec/activeVersion", "value": change.set_version}
            )
        for wanted, annotation in (
            (change.remove_retry, c.ANNOTATION_RETRY),
            (change.remove_refresh, c.ANNOTATION_REFRESH_CONFIG),
        ):
            if wanted:
                key = annotation.replace("~", "~0").replace("/", "~1")
                patch.append({"op": "remove", "path": f"/metadata/annotations/{key}"})
        try:
            applied = self.patch(resource.namespace, resource.name, patch)
        except Refused:
            if self._moved(resource, change):
                applied = False
            else:
                raise
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

    def _moved(self, resource: Resource, change: SpecChange) -> bool:
        """Whether the spec is no longer what `change` was decided on (a user's edit)."""
        try:
            body = self.get(resource.namespace, resource.name)
        except LookupError:
            return True
        spec = body.get("spec") or {}
        return bool(
            (
                change.expect_generation is not None
                and body["metadata"].get("generation") != change.expect_generation
            )
            or (
                change.expect_version is not None
                and spec.get("activeVersion") != change.expect_version
            )
            or (
                change.remove_retry
                and c.ANNOTATION_RETRY not in (body["metadata"].get("annotations") or {})
            )
            or (
                change.remove_refresh
                and c.ANNOTATION_REFRESH_CONFIG not in (body["metadata"].get("annotations") or {})
            )
        )

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
        try:
            applied = self.patch(resource.namespace, resource.name, patch)
        except Refused as refusal:
            if not self._moved_on(resource, meta["resourceVersion"], refusal):
                raise
            applied = False
        if applied:
            logger.info("released spec.activeVersion of %s/%s", resource.namespace, resource.name)

    def get(self, namespace: str, name: str) -> JSON:
        """A ModelDeployment; LookupError when there is none of that name."""
        try:
            body = self.custom.get_namespaced_custom_object(
                c.GROUP, c.VERSION, namespace, c.PLURAL, name, _request_timeout=DEADLINE
            )
        except ApiException as error:
            if error.status == 404:
                raise LookupError(
                    f'modeldeployment "{name}" not found in namespace "{namespace}"'
                ) from None
            raise
        found: JSON = dict(body)  # type: ignore[call-overload]
        return found

    def patch(self, namespace: str, name: str, patch: list[JSON]) -> bool:
        """A JSON patch of a ModelDeployment; False when one of its `test`s failed
        (or a `remove` found nothing), `Refused` for any other refusal."""
        try:
            with refusals():
                self._write(
                    self.custom.patch_namespaced_custom_object,
                    c.GROUP,
                    c.VERSION,
                    namespace,
                    c.PLURAL,
                    name,
                    patch,
                    field_manager=c.MANAGER,
                    _content_type=_JSON_PATCH,
                    _request_timeout=DEADLINE,
                )
        except ApiException as error:
            if _failed_precondition(error):
                return False
            raise
        return True

    def read_secret_key(self, namespace: str, name: str, key: str) -> str | None:
        """One value of a Secret, decoded; None when the Secret or key is missing. Only
        `get` by name: the operator never lists or watches Secrets (docs/security.md)."""
        try:
            with refusals():
                secret = self.core.read_namespaced_secret(
                    name, namespace, _request_timeout=DEADLINE
                )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        value = (secret.data or {}).get(key)
        return base64.b64decode(value).decode().strip() if value else None

    # ------------------------------------------------------- configuration snapshots

    def read_config_map(self, namespace: str, name: str) -> JSON | None:
        """A ConfigMap's body (data, binaryData, metadata); None when there is none. Read by
        name only: the operator never lists or watches ConfigMaps."""
        try:
            with refusals():
                found = self.core.read_namespaced_config_map(
                    name, namespace, _request_timeout=DEADLINE
                )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        body: JSON = self.api.sanitize_for_serialization(found)
        return body

    def create_config_map(self, manifest: JSON) -> JSON | None:
        """Create a snapshot; when one of that name exists already, return its body (the
        caller checks it is the same snapshot), else None."""
        meta = manifest["metadata"]
        try:
            with refusals():
                self._write(
                    self.core.create_namespaced_config_map,
                    meta["namespace"],
                    manifest,
                    field_manager=c.MANAGER,
                    _request_timeout=DEADLINE,
                )
        except ApiException as error:  # 409 stays one (refusals() leaves it)
            if error.status != 409:
                raise
            return self.read_config_map(meta["namespace"], meta["name"])
        logger.info("created snapshot ConfigMap %s/%s", meta["namespace"], meta["name"])
        return None

    def delete_config_map(self, namespace: str, name: str) -> None:
        """Delete a snapshot no version needs; one already gone is fine."""
        try:
            with refusals():
                self._write(
                    self.core.delete_namespaced_config_map,
                    name,
                    namespace,
                    _request_timeout=DEADLINE,
                )
        except ApiException as error:
            if error.status != 404:
                raise
        logger.info("deleted snapshot ConfigMap %s/%s", namespace, name)

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
                _request_timeout=DEADLINE,
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

    # ------------------------------------------------------------------ caches

    def list_identities(
        self, api_path: str, plural: str, namespace: str | None, selector: str | None
    ) -> set[Identity]:
        """Who exists now: (namespace, name, uid) of every object, from a metadata-only LIST.

        A consistent read (no resourceVersion), so it is at least as new as anything a
        watch delivered before it was sent.
        """
        scope = f"/namespaces/{namespace}" if namespace else ""
        query = [("labelSelector", selector)] if selector else []
        listed = request_json(
            self.api,
            "GET",
            f"{api_path}{scope}/{plural}",
            query=query,
            accept=_METADATA_LIST,
            timeout=_LIST_TIMEOUT,
        )
        return {
            (m.get("namespace", ""), m["name"], m["uid"])
            for m in (item["metadata"] for item in listed.get("items") or ())
        }


def event_name(resource: Resource, event: Event) -> str:
    """`<resource>.<16 hex>`: the same owed Event gets the same name on every attempt."""
    return f"{resource.name}.{event_id(resource.uid, event)}"


def api_message(error: ApiException) -> str:
    """The API server's own words from an error answer (its Status.message)."""
    try:
        message = json.loads(error.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or error.reason or f"HTTP {error.status}")


def _failed_precondition(error: ApiException) -> bool:
    """409 (resourceVersion moved) or a JSON-patch `test` that no longer holds (422)."""
    if error.status == 409:
        return True
    text = api_message(error).lower()
    return ("test" in text and "failed" in text) or "unable to remove nonexistent key" in text


class ApiUnavailable(Exception):
    """The API server did not answer, or answered 5xx/429: try again later."""


@contextlib.contextmanager
def api_errors() -> Iterator[None]:
    """For callers that never import the client (the plugin): every API error becomes
    `Refused` (the API said no) or `ApiUnavailable` (it could not answer)."""
    try:
        with refusals():
            yield
    except ApiException as error:
        if error.status == 404:
            raise LookupError(api_message(error)) from None
        raise ApiUnavailable(f"HTTP {error.status}: {api_message(error)}") from None
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise ApiUnavailable(str(error) or type(error).__name__) from None


@contextlib.contextmanager
def refusals() -> Iterator[None]:
    """Turns the API's refusals into `Refused`: a 4xx other than 404, 429 and a failed
    precondition (409, a JSON-patch `test`); anything else stays an ApiException."""
    try:
        yield
    except ApiException as error:
        status = int(error.status or 0)
        if 400 <= status < 500 and status not in (404, 429) and not _failed_precondition(error):
            raise Refused(status, api_message(error)) from None
        raise


def request_json(
    api: Any,
    method: str,
    path: str,
    *,
    timeout: tuple[float, float],
    query: list[tuple[str, str]] | None = None,
    body: JSON | None = None,
    accept: str = "application/json",
) -> JSON:
    """One request with the client's credentials and a (connect, read) deadline in seconds;
    the JSON answer, or ApiException if not 2xx."""
    headers = {"Accept": accept}
    if body is not None:
        headers["Content-Type"] = "application/json"
    method, url, headers, body, _ = api.param_serialize(
        method,
        path,
        query_params=query or [],
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(method, url, header_params=headers, body=body, _request_timeout=timeout)
    data = response.read()
    if not 200 <= response.status <= 299:
        raise ApiException(http_resp=response)
    answer: JSON = json.loads(data)
    return answer


class KubeLeases:
    """One coordination.k8s.io/v1 Lease, for leader election (modeldeploy.leader.Leases).

    Each call has a whole-request deadline, `_request_timeout=(connect, read)`: a
    renewal must fail in time, not hang past the renew deadline. Its own connection
    pool, so renewals never queue behind reconciles.
    """

    def __init__(self, namespace: str, name: str, timeout: float, api: Any | None = None) -> None:
        self.api = api or kubernetes.client.ApiClient()
        self.namespace, self.name = namespace, name
        self.timeout = (timeout, timeout)
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"

    def read(self) -> tuple[str, JSON] | None:
        try:
            lease = request_json(self.api, "GET", f"{self.path}/{self.name}", timeout=self.timeout)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return str(lease["metadata"]["resourceVersion"]), dict(lease.get("spec") or {})

    def create(self, spec: JSON) -> str | None:
        body: JSON = {"metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}
        return self._written("POST", self.path, body)

    def replace(self, resource_version: str, spec: JSON) -> str | None:
        body: JSON = {
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": resource_version,  # optimistic: 409 if it moved on
            },
            "spec": spec,
        }
        return self._written("PUT", f"{self.path}/{self.name}", body)

    def _written(self, method: str, path: str, body: JSON) -> str | None:
        try:
            lease = request_json(
                self.api,
                method,
                path,
                body=body,
                query=[("fieldManager", c.MANAGER)],
                timeout=self.timeout,
            )
        except ApiException as error:
            if error.status == 409:  # created meanwhile, or no longer at that version
                return None
            raise
        return str(lease["metadata"]["resourceVersion"])


def pod_namespace() -> str | None:
    """The namespace this pod runs in, from its ServiceAccount mount; None outside a pod."""
    try:
        with open(_SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as mounted:
            return mounted.read().strip() or None
    except OSError:
        return None
