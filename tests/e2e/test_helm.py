"""The Helm chart on the test bed with Helm 4: install, upgrade, a revert, uninstall.

The release runs the operator's own image on the real node, namespace-scoped to the
test's namespace (a Role there, nothing cluster-wide), so it never acts on other
tests' resources. The CRD is removed first so that the install must create it from
the chart's crds/; uninstalling removes everything the release made but the CRD,
which Helm never deletes.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

import testbed.cluster
from testbed import operator_image, realnode
from testbed.processes import ROOT
from testbed.support import OPERATOR_STARTED, build_tool
from tests.e2e.helpers import Kube, model_deployment, release_and_await_revert, wait_for

CHART = ROOT / "deploy" / "helm" / "modeldeploy"
RELEASE, FULLNAME = "md", "md-modeldeploy"
CRD = "modeldeployments.modeldeploy.io"
RecordProperty = Callable[[str, object], None]


@pytest.fixture(scope="module")
def helm() -> Path:
    """Helm 4 from its pinned Go module (make integration and make e2e build it first)."""
    return build_tool("helm")


def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(map(str, command)), capture_output=True, text=True, check=False)


def values(namespace: str) -> dict[str, Any]:
    repository, tag = operator_image.IMAGE.rsplit(":", 1)
    return {
        "image": {"repository": repository, "tag": tag},
        "scope": "namespace",  # watches the release's namespace: the test's
        **realnode.POD_PLACEMENT,
    }


def missing(read: Callable[[], Any]) -> bool:
    try:
        read()
    except kubernetes.client.ApiException as error:
        return bool(error.status == 404)
    return False


@pytest.fixture
def crd_from_the_chart(cluster: Path) -> Iterator[None]:
    """No CRD before the test, so the install must create it; the session's after it."""
    deleted = run("kubectl", "delete", "crd", CRD, "--ignore-not-found", "--timeout=120s")
    assert deleted.returncode == 0, deleted.stderr
    try:
        yield
    finally:
        testbed.cluster.install_crd()


def crd_managers() -> list[str]:
    """The field managers of the CRD (an error if it does not exist)."""
    got = run("kubectl", "get", "crd", CRD, "--show-managed-fields", "-o", "json")
    assert got.returncode == 0, got.stderr
    return [entry["manager"] for entry in json.loads(got.stdout)["metadata"]["managedFields"]]


def operator_pods(kube: Kube, namespace: str) -> list[Any]:
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/name=modeldeploy"
    return list(kube.core.list_namespaced_pod(namespace, label_selector=selector).items)


def pod_logs(kube: Kube, namespace: str) -> str:
    return "".join(
        kube.core.read_namespaced_pod_log(pod.metadata.name, namespace)
        for pod in operator_pods(kube, namespace)
        if pod.status.phase == "Running"
    )


def test_helm_installs_upgrades_and_uninstalls_the_operator(
    kube: Kube,
    namespace: str,
    real_node: str,
    helm: Path,
    crd_from_the_chart: None,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    record_property: RecordProperty,
) -> None:
    request.node.operator_log = lambda: pod_logs(kube, namespace)
    settings = tmp_path / "values.yaml"
    settings.write_text(yaml.safe_dump(values(namespace)))
    release = ("-n", namespace, "-f", settings, "--wait", "--timeout=3m")

    started = time.monotonic()
    installed = run(helm, "install", RELEASE, CHART, *release)
    assert installed.returncode == 0, installed.stderr
    record_property("figure: helm install --wait (s)", round(time.monotonic() - started, 1))
    assert "helm" in crd_managers()  # the CRD came from the chart's crds/
    (pod,) = operator_pods(kube, namespace)
    assert pod.spec.node_name == real_node
    assert f"--namespace={namespace}" in pod.spec.containers[0].args
    assert kube.rbac.read_namespaced_role(FULLNAME, namespace).rules
    assert missing(lambda: kube.rbac.read_cluster_role(FULLNAME))  # nothing cluster-wide
    wait_for(lambda: OPERATOR_STARTED.decode() in pod_logs(kube, namespace), 60, "its start")

    # The namespace-scoped Role is all it needs to revert a bad release.
    name = "helm-installed"
    images = {"v1": "registry.example/m:1", "v2": "registry.example/m:2-crashloop"}
    kube.create(namespace, model_deployment(name, images, "v1"))
    wait_for(lambda: kube.status(namespace, name).get("lastGoodVersion") == "v1", 90, "v1 good")
    release_and_await_revert(kube, namespace, name)
    assert f"applied Deployment {namespace}/{name}" in pod_logs(kube, namespace)

    upgraded = run(helm, "upgrade", RELEASE, CHART, *release, "--set", "workers=4")
    assert upgraded.returncode == 0, upgraded.stderr
    status = json.loads(run(helm, "status", RELEASE, "-n", namespace, "-o", "json").stdout)
    assert (status["version"], status["info"]["status"]) == (2, "deployed")
    wait_for(
        lambda: [
            p
            for p in operator_pods(kube, namespace)
            if "--workers=4" in p.spec.containers[0].args
            and any(c.ready for c in p.status.container_statuses or ())
        ],
        120,
        "the upgraded operator pod, Ready",
    )
    wait_for(lambda: len(operator_pods(kube, namespace)) == 1, 120, "the old pod gone")

    uninstalled = run(helm, "uninstall", RELEASE, "-n", namespace, "--wait", "--timeout=3m")
    assert uninstalled.returncode == 0, uninstalled.stderr
    assert missing(lambda: kube.apps.read_namespaced_deployment(FULLNAME, namespace))
    assert missing(lambda: kube.core.read_namespaced_service_account(FULLNAME, namespace))
    assert missing(lambda: kube.rbac.read_namespaced_role(FULLNAME, namespace))
    assert missing(lambda: kube.rbac.read_namespaced_role_binding(FULLNAME, namespace))
    wait_for(lambda: not operator_pods(kube, namespace), 120, "the operator pod gone")
    assert "helm" in crd_managers()  # Helm never deletes what crds/ installed
    assert kube.get(namespace, name)["spec"]["activeVersion"] == "v1"  # nor the resources
