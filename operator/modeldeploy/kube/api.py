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
from modeldeploy.kube.client import DEADLINE, failed_precondition, refusals, request_json
from modeldeploy.model.spec import JSON
from modeldeploy.ports import Identity

logger = logging.getLogger(__name__)

JSON_PATCH = "application/json-patch+json"
_METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
_LIST_TIMEOUT = (5.0, 30.0)  # (connect, read) seconds: a hung LIST must not hold up a resync


class Fenced(Exception):
    """A write refused before it was sent: this process may not write (it does not lead)."""


class KubeApi:
    """One API client's reads and fenced writes (see the module's doc)."""

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
                    _content_type=JSON_PATCH,
                    _request_timeout=DEADLINE,
                )
        except ApiException as error:
            if failed_precondition(error):
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
