"""The only package that talks to the Kubernetes API through the `kubernetes` client.

`client` loads credentials and turns the API's answers into our errors; `api` reads
by name and writes behind the leader fence; `cluster` is a reconcile's write protocol
(children, status, spec, Events); `leases` is leader election's Lease.
"""

from modeldeploy.kube.api import Fenced, KubeApi
from modeldeploy.kube.client import (
    DEADLINE,
    WRITE_DEADLINE,
    ApiUnavailable,
    ConfigError,
    api_errors,
    api_message,
    current_namespace,
    load_config,
    pod_namespace,
    refusals,
    request_json,
)
from modeldeploy.kube.cluster import KubeCluster, event_name
from modeldeploy.kube.leases import KubeLeases

__all__ = [
    "DEADLINE",
    "WRITE_DEADLINE",
    "ApiUnavailable",
    "ConfigError",
    "Fenced",
    "KubeApi",
    "KubeCluster",
    "KubeLeases",
    "api_errors",
    "api_message",
    "current_namespace",
    "event_name",
    "load_config",
    "pod_namespace",
    "refusals",
    "request_json",
]
