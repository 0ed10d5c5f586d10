"""Fixtures for tests against the real test bed: the cluster, a namespace, the operator.

The session fixture reuses a running test bed or starts one (and then stops it);
each test gets its own namespace and its own operator process limited to it, so
tests can stop, kill and restart the operator without touching each other.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

import testbed.cluster
import testbed.resource_metrics
from testbed import mlserver_image, realnode
from testbed.metrics import Exporter, Prometheus
from testbed.processes import KUBECONFIG, ROOT, TestbedError, log_file, log_tail
from testbed.support import OperatorProcess, free_port
from tests.e2e.helpers import Kube

# The slices `make e2e MARK=...` selects (pyproject.toml lists them), by module; realnode
# also goes to every test that asks for the real node.
MARKS = {
    "test_gitops": ("gitops", "slow"),
    "test_helm": ("gitops", "slow"),
    "test_leadership": ("resilience",),
    "test_faults": ("resilience",),
    "test_outages": ("resilience", "slow"),
    "test_security": ("security",),
    "test_fuzz": ("slow",),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for mark in MARKS.get(item.path.stem, ()):
            item.add_marker(getattr(pytest.mark, mark))
        if "real_node" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.realnode)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Path]:
    """The test bed's kubeconfig; starts the test bed only if none is running."""
    started = False
    if not testbed.cluster.is_up():
        testbed.cluster.up()
        started = True
    os.environ["KUBECONFIG"] = str(KUBECONFIG)
    kubernetes.config.load_kube_config(config_file=str(KUBECONFIG))  # type: ignore[no-untyped-call]
    testbed.cluster.install_crd()
    yield KUBECONFIG
    if started:
        testbed.cluster.down()


@pytest.fixture(scope="session")
def real_node(cluster: Path) -> Iterator[str]:
    """The real node's name; adds it to the test bed if absent (and removes it after).

    If it cannot start, every test that needs it errors with the reason: the kwok
    suite still runs, and nothing passes without having run on a real node.
    """
    started = False
    if not realnode.is_up():
        try:
            testbed.cluster.up(real_node=True)
        except TestbedError as error:
            pytest.fail(f"the real node could not start on this machine: {error}", pytrace=False)
        started = True
    yield realnode.NODE
    if started:
        realnode.down()


@pytest.fixture(scope="session")
def mlserver(real_node: str) -> str:
    """The real node with the MLServer images (testbed/mlserver_image.py) in its
    containerd: built once and cached, imported once per node (a no-op when there)."""
    try:
        realnode.import_archive(mlserver_image.archive())
    except TestbedError as error:
        pytest.fail(f"the MLServer images are not on the real node: {error}", pytrace=False)
    return real_node


@pytest.fixture(scope="session")
def resource_metrics(cluster: Path) -> None:
    """The resource metrics API (metrics-server), which `up` starts; started here if it is
    not running (a crash, say). A test bed whose API server predates it cannot serve it:
    the tests that need it then error with the reason, and the rest still run."""
    if not testbed.resource_metrics.is_up():
        try:
            testbed.resource_metrics.up()
        except TestbedError as error:
            pytest.fail(f"no resource metrics API on the test bed: {error}", pytrace=False)


@pytest.fixture
def kube(cluster: Path) -> Kube:
    return Kube()


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    testbed.cluster.create_namespace(name)
    yield name
    kube.core.delete_namespace(name)


def namespaced_operator(namespace: str, log_path: Path) -> OperatorProcess:
    """The operator limited to the test's namespace, logging verbosely for its report."""
    return OperatorProcess(log_path, "--namespace", namespace, "--verbose")


@pytest.fixture
def operator(
    namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[OperatorProcess]:
    """A running operator for the test's namespace."""
    running = namespaced_operator(namespace, tmp_path / "operator.log")
    running.start()
    request.node.operator_log = running.log
    yield running
    running.stop()


@pytest.fixture
def stopped_operator(
    namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[OperatorProcess]:
    """An operator the test starts itself, with its own flags or credentials."""
    idle = namespaced_operator(namespace, tmp_path / "operator.log")
    request.node.operator_log = idle.log
    yield idle
    idle.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On failure, attach the operator's log and the test bed components' log tails."""
    report = yield
    if report.failed and call.when == "call":
        operator_log = getattr(item, "operator_log", None)
        if operator_log is not None:
            report.sections.append(
                ("operator log (tail)", "\n".join(operator_log().splitlines()[-80:]))
            )
        for name in (*testbed.cluster.COMPONENTS, *realnode.COMPONENTS):
            if log_file(name).exists():
                report.sections.append((f"{name} log (tail)", log_tail(name, 15)))
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print what tests measured (record_property "figure: ..."), for the record."""
    figures = [
        (report.nodeid.split("::")[-1], name.removeprefix("figure: "), value)
        for reports in terminalreporter.stats.values()
        for report in reports
        if isinstance(report, pytest.TestReport) and report.when == "call"
        for name, value in report.user_properties
        if name.startswith("figure: ")
    ]
    if figures:
        terminalreporter.section("measured")
        for test, name, value in figures:
            terminalreporter.write_line(f"{test}: {name} = {value}")


@pytest.fixture(scope="session")
def exporter() -> Iterator[Exporter]:
    running = Exporter()
    yield running
    running.server.shutdown()
    running.server.server_close()


@pytest.fixture(scope="session")
def prometheus(exporter: Exporter, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), exporter.address, free_port())
    server.start()
    yield server.url
    server.stop()


def on_its_service_account(kube: Kube, operator: OperatorProcess, tmp_path: Path) -> None:
    """Give `operator` a kubeconfig holding only the token of the ServiceAccount that
    deploy/base/rbac.yaml grants its rights to: it then runs on those rights alone."""
    subprocess.run(
        ["kubectl", "create", "namespace", "modeldeploy-system"], capture_output=True, check=False
    )  # may exist from an earlier test
    subprocess.run(
        ["kubectl", "apply", "-f", str(ROOT / "deploy" / "base" / "rbac.yaml")],
        capture_output=True,
        check=True,
    )
    token = kube.core.create_namespaced_service_account_token(
        "modeldeploy-operator", "modeldeploy-system", {"spec": {"expirationSeconds": 3600}}
    ).status.token
    admin = yaml.safe_load(Path(os.environ["KUBECONFIG"]).read_text())
    admin["users"] = [{"name": "operator", "user": {"token": token}}]
    admin["contexts"][0]["context"]["user"] = "operator"
    config = tmp_path / "operator.kubeconfig"
    config.write_text(yaml.safe_dump(admin))
    operator.env["KUBECONFIG"] = str(config)
