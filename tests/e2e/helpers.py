"""Helpers for e2e tests: polling with deadlines, resource builders, API shortcuts.

Tests never sleep-and-hope: every wait polls a predicate against the real API
server until a deadline and fails with what it was waiting for.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Literal, TypeVar

import kubernetes
import urllib3
import yaml
from kubernetes.client.exceptions import ApiException

from modeldeploy.constants import GROUP, PLURAL, VERSION
from testbed import support
from testbed.manifests import model_deployment
from testbed.support import BackgroundWatch

__all__ = ["model_deployment"]  # the one builder (testbed/manifests.py), for the e2e tests

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T | Literal[False] | None],
    timeout: float,
    what: str,
    interval: float = 0.2,
) -> T:
    """support.wait_for, an API error counting as "not yet" (the object may be on its way)."""
    return support.wait_for(predicate, timeout, what, tolerate=(ApiException,), interval=interval)


class Kube:
    """The Kubernetes client's APIs, typed Any on purpose: its models type every field
    Optional, and a test reads what the API server filled in (or fails if it did not)."""

    def __init__(self) -> None:
        self.api = kubernetes.client.ApiClient()
        self.core: Any = kubernetes.client.CoreV1Api(self.api)
        self.apps: Any = kubernetes.client.AppsV1Api(self.api)
        self.custom: Any = kubernetes.client.CustomObjectsApi(self.api)
        self.rbac: Any = kubernetes.client.RbacAuthorizationV1Api(self.api)
        self.discovery: Any = kubernetes.client.DiscoveryV1Api(self.api)

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body
        )
        return created

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        body: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name
        )
        return body

    def select(self, namespace: str, name: str, version: str, **rollout: Any) -> None:
        """What a user's `kubectl patch`/`edit` of spec.activeVersion does, with any
        spec.rollout fields changed in the same patch."""
        spec: dict[str, Any] = {"activeVersion": version}
        if rollout:
            spec["rollout"] = rollout
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, {"spec": spec}
        )

    def wait_good(self, namespace: str, name: str, version: str, timeout: float = 90) -> None:
        """Wait for `version` to be the last good one; on timeout, say what the status
        showed instead."""
        self.wait_saying(
            namespace,
            name,
            lambda: self.status(namespace, name).get("lastGoodVersion") == version,
            timeout,
            f"{version} to be the last good version of {namespace}/{name}",
        )

    def wait_saying(
        self, namespace: str, name: str, predicate: Callable[[], object], timeout: float, what: str
    ) -> None:
        """`wait_for`, and on timeout what the resource's status showed (a bare False is
        no help in a CI log)."""
        try:
            wait_for(predicate, timeout, what)
        except support.WaitTimeout as error:
            raise support.WaitTimeout(f"{error}; {self.said(namespace, name)}") from error

    def said(self, namespace: str, name: str) -> str:
        """What the resource's status shows, for a timeout's message (a bare False is no
        help in a CI log)."""
        body = self.get(namespace, name)
        status = body.get("status") or {}
        conditions = [
            (c["type"], c["status"], c.get("reason"), c.get("message"))
            for c in status.get("conditions") or ()
        ]
        return (
            f"spec names {body['spec'].get('activeVersion')}, serving "
            f"{status.get('servingVersion')}, phase {status.get('phase')}, rollout "
            f"{status.get('rollout')}, conditions {conditions}"
        )

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.get(namespace, name).get("status") or {})

    def condition(self, namespace: str, name: str, type_: str) -> dict[str, Any]:
        for condition in self.status(namespace, name).get("conditions") or ():
            if condition["type"] == type_:
                return dict(condition)
        return {}

    def ledger(self, namespace: str, name: str) -> dict[str, dict[str, Any]]:
        return {v["name"]: v for v in self.status(namespace, name).get("versions") or ()}

    def events(self, namespace: str, name: str) -> list[tuple[str, str, str]]:
        events = self.core.list_namespaced_event(
            namespace,
            field_selector=f"involvedObject.name={name},involvedObject.kind=ModelDeployment",
        )
        return [(e.type, e.reason, e.message) for e in events.items]

    def event_reasons(self, namespace: str, name: str) -> list[str]:
        return [reason for _, reason, _ in self.events(namespace, name)]

    def delivered(self, namespace: str, name: str, reason: str, timeout: float = 60) -> int:
        """How many `reason` Events there are, once there is one. Events go out after the
        status write that owes them (docs/architecture.md), so a test that has just seen
        the status must wait for the Event, not read it in the same instant."""
        return wait_for(
            lambda: self.event_reasons(namespace, name).count(reason),
            timeout,
            f"a {reason} Event about {namespace}/{name}",
        )

    def deployment_or_none(self, namespace: str, name: str) -> Any:
        try:
            return self.apps.read_namespaced_deployment(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def service_or_none(self, namespace: str, name: str) -> Any:
        try:
            return self.core.read_namespaced_service(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise


class KubeWatch(BackgroundWatch[kubernetes.watch.Watch]):
    """A BackgroundWatch over the Kubernetes client's watch; `_read` reads `self._watch`."""

    def __init__(self) -> None:
        # Stopping the watch cuts its connection: the stream ends with a ProtocolError.
        super().__init__(kubernetes.watch.Watch(), cut=(urllib3.exceptions.ProtocolError,))  # type: ignore[no-untyped-call]


class ReadyPodSampler(KubeWatch):
    """Counts Ready serving pods from a pod watch, for the whole test (capacity check).

    `minimum` is the lowest count seen once the count first reached `replicas`.
    """

    def __init__(self, kube: Kube, namespace: str, name: str, replicas: int) -> None:
        super().__init__()
        self.kube, self.namespace, self.name, self.replicas = kube, namespace, name, replicas
        self.ready: dict[str, bool] = {}
        self.minimum: int | None = None
        self.samples = 0

    def _read(self) -> None:
        stream = self._watch.stream(  # type: ignore[no-untyped-call]
            self.kube.core.list_namespaced_pod,
            self.namespace,
            label_selector=f"modeldeploy.io/name={self.name}",
            timeout_seconds=600,
        )
        for event in stream:
            pod = event["object"]
            ready = (
                event["type"] != "DELETED"
                and pod.metadata.deletion_timestamp is None
                and any(
                    c.type == "Ready" and c.status == "True" for c in pod.status.conditions or ()
                )
            )
            self.ready[pod.metadata.name] = ready
            count = sum(self.ready.values())
            self.samples += 1
            if self.minimum is not None:
                self.minimum = min(self.minimum, count)
            elif count >= self.replicas:
                self.minimum = count


def revert_scenario(kube: Kube, namespace: str, name: str, **extra: Any) -> None:
    """v1 serves; v2 crash-loops; wait until the operator put v1 back."""
    body = model_deployment(
        name, {"v1": "registry.example/m:1", "v2": "registry.example/m:2-crashloop"}, "v1"
    )
    body["spec"].update(extra)
    kube.create(namespace, body)
    kube.wait_good(namespace, name, "v1")
    release_and_await_revert(kube, namespace, name)


def release_and_await_revert(
    kube: Kube,
    namespace: str,
    name: str,
    *,
    failed_within: float = 60,
    good: str = "v1",
    bad: str = "v2",
    **rollout: Any,
) -> None:
    """Select `bad` (with `rollout` fields, e.g. a short readyTimeoutSeconds that would
    fail `good` too on a loaded machine if set from the start); wait until the operator
    marked it Failed and put `good` back."""
    kube.select(namespace, name, bad, **rollout)
    wait_for(
        lambda: kube.ledger(namespace, name).get(bad, {}).get("state") == "Failed",
        failed_within,
        f"{bad} to be marked Failed",
    )
    reverted = functools.partial(reverted_to, kube, namespace, name, good)
    kube.wait_saying(namespace, name, reverted, 60, f"the revert to {good}")


def rendered(kube: Kube, namespace: str, name: str, version: str) -> bool:
    """The operator's Deployment runs `version`'s pod template."""
    deployment = kube.deployment_or_none(namespace, name)
    return bool(
        deployment and deployment.spec.template.metadata.labels["modeldeploy.io/version"] == version
    )


def ready(kube: Kube, namespace: str, name: str) -> bool:
    return kube.condition(namespace, name, "Ready").get("status") == "True"


def reverted_to(kube: Kube, namespace: str, name: str, version: str) -> bool:
    """The spec names `version`, the Deployment serves it, and the resource is Ready."""
    body = kube.get(namespace, name)
    return bool(
        body["spec"]["activeVersion"] == version
        and body.get("status", {}).get("servingVersion") == version
        and ready(kube, namespace, name)
    )


class ServedEndpointSampler(KubeWatch):
    """Counts the Service's ready endpoints from an EndpointSlice watch: what traffic can
    reach, whichever pods (main or standby) the Service selects. `minimum` as above."""

    def __init__(self, kube: Kube, namespace: str, name: str, replicas: int) -> None:
        super().__init__()
        self.kube, self.namespace, self.name, self.replicas = kube, namespace, name, replicas
        self.slices: dict[str, int] = {}
        self.minimum: int | None = None

    def _read(self) -> None:
        discovery: Any = kubernetes.client.DiscoveryV1Api(self.kube.api)
        stream = self._watch.stream(  # type: ignore[no-untyped-call]
            discovery.list_namespaced_endpoint_slice,
            self.namespace,
            label_selector=f"kubernetes.io/service-name={self.name}",
            timeout_seconds=600,
        )
        for event in stream:
            endpoints = event["object"].endpoints or ()
            ready = sum(1 for e in endpoints if e.conditions and e.conditions.ready)
            self.slices[event["object"].metadata.name] = 0 if event["type"] == "DELETED" else ready
            count = sum(self.slices.values())
            if self.minimum is not None:
                self.minimum = min(self.minimum, count)
            elif count >= self.replicas:
                self.minimum = count


def put_source(kube: Kube, namespace: str, name: str, data: dict[str, str]) -> None:
    body = {"metadata": {"name": name}, "data": data}
    try:
        kube.core.replace_namespaced_config_map(name, namespace, body)
    except kubernetes.client.ApiException as error:
        if error.status != 404:
            raise
        kube.core.create_namespaced_config_map(namespace, body)


class Receiver:
    """A webhook receiver on 127.0.0.1 that records payloads (or hangs, to play dead)."""

    def __init__(self, hang: bool = False) -> None:
        self.payloads: list[dict[str, Any]] = []  # answered 2xx
        self.requests = 0
        self.answer = 204  # what it answers; 503 plays a receiver that is down
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.requests += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if hang:
                    receiver.release.wait(30)
                answer = receiver.answer
                if 200 <= answer < 300:
                    receiver.payloads.append(json.loads(body))
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def events(self) -> list[str]:
        return [p["event"] for p in self.payloads]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric line starting {line_start!r}")


def plugin(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modeldeploy.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


class PolicyDenyingMovesTo:
    """A ValidatingAdmissionPolicy that refuses setting activeVersion to `version`."""

    def __init__(self, namespace: str, version: str) -> None:
        self.name, self.namespace, self.version = f"freeze-{namespace}", namespace, version
        self.documents = [
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicy",
                "metadata": {"name": self.name},
                "spec": {
                    "failurePolicy": "Fail",
                    "matchConstraints": {
                        "resourceRules": [
                            {
                                "apiGroups": [GROUP],
                                "apiVersions": [VERSION],
                                "operations": ["UPDATE"],
                                "resources": [PLURAL],
                            }
                        ]
                    },
                    "validations": [
                        {
                            "expression": f"object.spec.activeVersion != '{version}' || "
                            f"oldObject.spec.activeVersion == '{version}'",
                            "message": "spec.activeVersion is frozen in this namespace",
                        }
                    ],
                },
            },
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": self.name},
                "spec": {
                    "policyName": self.name,
                    "validationActions": ["Deny"],
                    "matchResources": {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": namespace}
                        }
                    },
                },
            },
        ]

    def __enter__(self) -> None:
        text = yaml.safe_dump_all(self.documents)
        subprocess.run(
            ["kubectl", "apply", "-f", "-"], input=text, text=True, check=True, capture_output=True
        )
        # The API server compiles policies asynchronously: wait until it enforces this one.
        probe = model_deployment(
            "policy-probe", {"v1": "registry.example/m:1", "v2": "registry.example/m:3"}, "v2"
        )
        probe["metadata"]["namespace"] = self.namespace
        Kube().create(self.namespace, probe)
        wait_for(self._enforced, 30, "the admission policy to be enforced")

    def _enforced(self) -> bool:
        patch = json.dumps({"spec": {"activeVersion": self.version}})
        result = subprocess.run(
            [
                "kubectl",
                "patch",
                "mdep",
                "policy-probe",
                "-n",
                self.namespace,
                "--type=merge",
                "-p",
                patch,
                "--dry-run=server",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        return result.returncode != 0 and "frozen" in result.stderr

    def __exit__(self, *_: object) -> None:
        for kind in ("validatingadmissionpolicybinding", "validatingadmissionpolicy"):
            subprocess.run(
                ["kubectl", "delete", kind, self.name, "--wait"], check=True, capture_output=True
            )
