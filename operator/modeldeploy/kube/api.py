"""Reads by name and fenced writes over one API client: the base of `KubeCluster`.

Part of the `kube` package. Everything here works on one object named by the
caller: a ModelDeployment (get, JSON patch), a Secret's key, a snapshot ConfigMap,
plus the metadata-only LIST the caches resync from. Every write goes through
`_write`, which asks the leader fence first, and carries field manager `modeldeploy`.
"""

from __future__ import annotations

import base64
import logging
import socket
from collections.abc import Callable
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from modeldeploy import constants as c
from modeldeploy.core.plan import pointer, preconditions_hold
from modeldeploy.kube.client import (
    DEADLINE,
    WRITE_DEADLINE,
    failed_precondition,
    refusals,
    request_json,
)
from modeldeploy.model.spec import JSON
from modeldeploy.ports import Identity, Refused

logger = logging.getLogger(__name__)

JSON_PATCH = "application/json-patch+json"
_METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
_LIST_TIMEOUT = 30.0  # seconds, connect to answer: a hung LIST must not hold up a resync


class Fenced(Exception):
    """A write refused before it was sent: this process may not write (it does not lead)."""


class KubeApi:
    """One API client's reads and fenced writes (see the module's doc)."""

    def __init__(
        self,
        api: Any | None = None,
        fence: Callable[[], bool] | None = None,
        instance: str | None = None,
        write_deadline: float = WRITE_DEADLINE,
    ) -> None:
        self.api = api or kubernetes.client.ApiClient()
        self.write_deadline = write_deadline
        self.apps = kubernetes.client.AppsV1Api(self.api)
        self.core = kubernetes.client.CoreV1Api(self.api)
        self.custom = kubernetes.client.CustomObjectsApi(self.api)
        self.instance = instance or socket.gethostname()
        self.fence = fence

    def _write(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Every write goes through here: the fence is asked right before each one, and
        each is one request (never retried by the client) that ends within the write
        deadline, connect to last byte."""
        if self.fence is not None and not self.fence():
            raise Fenced(f"not the leader: {getattr(call, '__name__', 'write')} refused")
        return call(*args, **kwargs, _request_timeout=self.write_deadline)

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
        return self.patched(namespace, name, patch) is not None

    def patched(
        self, namespace: str, name: str, patch: list[JSON], status: bool = False
    ) -> JSON | None:
        """A JSON patch of a ModelDeployment (of its status subresource with `status`):
        the object it made, or None when a precondition no longer holds (a `test`
        failed, a `remove` found nothing, the object is gone); `Refused` for a refusal.

        Since 1.33 the API server answers a failed `test` with a bare 422, the words of
        any invalid request, so a 422 is told apart by reading the object again: if
        every precondition still holds, it was a refusal (admission, validation)."""
        call = (
            self.custom.patch_namespaced_custom_object_status
            if status
            else self.custom.patch_namespaced_custom_object
        )
        try:
            with refusals():
                written = self._write(
                    call,
                    c.GROUP,
                    c.VERSION,
                    namespace,
                    c.PLURAL,
                    name,
                    patch,
                    field_manager=c.MANAGER,
                    _content_type=JSON_PATCH,
                )
        except ApiException as error:
            if failed_precondition(error):
                return None
            raise
        except Refused as refusal:
            if refusal.code != 422 or self._preconditions_hold(namespace, name, patch):
                raise
            return None
        made: JSON = dict(written)
        return made

    def select_version(self, body: JSON, version: str) -> bool:
        """Set spec.activeVersion while the spec is still the one `body` shows (its
        generation and active version); False when it changed meanwhile."""
        meta = body["metadata"]
        patch: list[JSON] = [
            {"op": "test", "path": "/metadata/generation", "value": meta["generation"]},
            {"op": "test", "path": "/spec/activeVersion", "value": body["spec"]["activeVersion"]},
            {"op": "replace", "path": "/spec/activeVersion", "value": version},
        ]
        return self.patch(meta["namespace"], meta["name"], patch)

    def annotate(self, body: JSON, key: str, value: str) -> bool:
        """Add an annotation while the object is still at `body`'s resourceVersion, so an
        annotation someone added meanwhile is never wiped; False when it moved on."""
        meta = body["metadata"]
        patch: list[JSON] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]}
        ]
        if not meta.get("annotations"):
            patch.append({"op": "add", "path": "/metadata/annotations", "value": {}})
        patch.append({"op": "add", "path": pointer("metadata", "annotations", key), "value": value})
        return self.patch(meta["namespace"], meta["name"], patch)

    def _preconditions_hold(self, namespace: str, name: str, patch: list[JSON]) -> bool:
        try:
            current = self.get(namespace, name)
        except LookupError:
            return False
        return preconditions_hold(current, patch)

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
                )
        except ApiException as error:
            if error.status != 404:
                raise
        logger.info("deleted snapshot ConfigMap %s/%s", namespace, name)

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
