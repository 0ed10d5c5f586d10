"""The Lease leader election holds, over the API: read, create, replace.

Part of the `kube` package; `modeldeploy.leader` decides, this only talks.
"""

from __future__ import annotations

from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from modeldeploy import constants as c
from modeldeploy.kube.client import request_json
from modeldeploy.model.spec import JSON


class KubeLeases:
    """One coordination.k8s.io/v1 Lease, for leader election (modeldeploy.leader.Leases).

    Each call is one request, never retried (the client's retries are off:
    kube.load_config), with the deadline the elector gives it for connect, answer and
    body together: a renewal fails in time, it never hangs past the renew deadline.
    Its own connection pool, so renewals never queue behind reconciles.
    """

    def __init__(self, namespace: str, name: str, api: Any | None = None) -> None:
        self.api = api or kubernetes.client.ApiClient()
        self.namespace, self.name = namespace, name
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"

    def read(self, timeout: float) -> tuple[str, JSON] | None:
        try:
            lease = request_json(self.api, "GET", f"{self.path}/{self.name}", timeout=timeout)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return str(lease["metadata"]["resourceVersion"]), dict(lease.get("spec") or {})

    def create(self, spec: JSON, timeout: float) -> str | None:
        body: JSON = {"metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}
        return self._written("POST", self.path, body, timeout)

    def replace(self, resource_version: str, spec: JSON, timeout: float) -> str | None:
        body: JSON = {
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": resource_version,  # optimistic: 409 if it moved on
            },
            "spec": spec,
        }
        return self._written("PUT", f"{self.path}/{self.name}", body, timeout)

    def _written(self, method: str, path: str, body: JSON, timeout: float) -> str | None:
        try:
            lease = request_json(
                self.api,
                method,
                path,
                body=body,
                query=[("fieldManager", c.MANAGER)],
                timeout=timeout,
            )
        except ApiException as error:
            if error.status == 409:  # created meanwhile, or no longer at that version
                return None
            raise
        return str(lease["metadata"]["resourceVersion"])
