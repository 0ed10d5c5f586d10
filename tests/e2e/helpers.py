"""Helpers for e2e tests: polling with deadlines, resource builders, API shortcuts.

Tests never sleep-and-hope: every wait polls a predicate against the real API
server until a deadline and fails with what it was waiting for.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, Self, TypeVar

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "modeldeploy.io", "v1alpha1", "modeldeployments"
T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except ApiException as error:
            last = f"API error {error.status} {error.reason}"
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def model_deployment(
    name: str,
    versions: dict[str, str],
    active: str,
    replicas: int = 2,
    resources: dict[str, Any] | None = None,
    **rollout: Any,
) -> dict[str, Any]:
    """A ModelDeployment manifest; `versions` maps version name to image."""
    entries: list[dict[str, Any]] = []
    for version, image in versions.items():
        entry: dict[str, Any] = {
            "name": version,
            "image": image,
            "modelUri": f"s3://models/{name}/{version}",
        }
        if resources and version in resources:
            entry["resources"] = resources[version]
        entries.append(entry)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "activeVersion": active,
            "replicas": replicas,
            "versions": entries,
            "rollout": rollout,
        },
    }


class Kube:
    def __init__(self) -> None:
        self.api = kubernetes.client.ApiClient()
        self.core = kubernetes.client.CoreV1Api(self.api)
        self.apps = kubernetes.client.AppsV1Api(self.api)
        self.custom = kubernetes.client.CustomObjectsApi(self.api)

    def service_account_exists(self, namespace: str, name: str) -> bool:
        try:
            self.core.read_namespaced_service_account(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

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

    def select(self, namespace: str, name: str, version: str) -> None:
        """What a user's `kubectl patch`/`edit` of spec.activeVersion does."""
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, {"spec": {"activeVersion": version}}
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


class Background:
    """Runs `_run` in a daemon thread for the length of a `with` block."""

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop()
        self._thread.join(timeout=10)

    def _stop(self) -> None:
        self._stopping.set()

    def _run(self) -> None:
        raise NotImplementedError


class BackgroundWatch(Background):
    """A Background whose `_run` reads `self._watch`; leaving the block stops the watch."""

    def __init__(self) -> None:
        super().__init__()
        self._watch = kubernetes.watch.Watch()

    def _stop(self) -> None:
        self._watch.stop()


class ReadyPodSampler(BackgroundWatch):
    """Counts Ready serving pods from a pod watch, for the whole test (capacity check).

    `minimum` is the lowest count seen once the count first reached `replicas`.
    """

    def __init__(self, kube: Kube, namespace: str, name: str, replicas: int) -> None:
        super().__init__()
        self.kube, self.namespace, self.name, self.replicas = kube, namespace, name, replicas
        self.ready: dict[str, bool] = {}
        self.minimum: int | None = None
        self.samples = 0

    def _run(self) -> None:
        stream = self._watch.stream(
            self.kube.core.list_namespaced_pod,
            self.namespace,
            label_selector=f"modeldeploy.io/name={self.name}",
            timeout_seconds=600,
        )
        # The stream is cut when the test stops the watch.
        with contextlib.suppress(urllib3.exceptions.ProtocolError):
            self._consume(stream)

    def _consume(self, stream: Any) -> None:
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
    wait_for(lambda: kube.status(namespace, name).get("lastGoodVersion") == "v1", 60, "v1 good")
    release_and_await_revert(kube, namespace, name)


def release_and_await_revert(
    kube: Kube, namespace: str, name: str, *, failed_within: float = 60
) -> None:
    """Select v2; wait until the operator marked it Failed and put v1 back."""
    kube.select(namespace, name, "v2")
    wait_for(
        lambda: kube.ledger(namespace, name).get("v2", {}).get("state") == "Failed",
        failed_within,
        "v2 to be marked Failed",
    )
    wait_for(lambda: reverted_to(kube, namespace, name, "v1"), 60, "the revert to v1")


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
