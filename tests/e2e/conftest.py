"""Fixtures for tests against the real test bed: the cluster, a namespace, the operator.

The session fixture reuses a running test bed or starts one (and then stops it);
each test gets its own namespace and its own operator process limited to it, so
tests can stop, kill and restart the operator without touching each other.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from tests.e2e.helpers import Kube, wait_for

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "modeldeployment.yaml"


def _load_testbed() -> Any:
    spec = importlib.util.spec_from_file_location(
        "testbed", ROOT / "deploy" / "local-cluster" / "testbed.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


testbed = _load_testbed()


@pytest.fixture(scope="session")
def cluster() -> Iterator[Path]:
    """The test bed's kubeconfig; starts the test bed only if none is running."""
    started = False
    if not testbed.is_up():
        testbed.up()
        started = True
    os.environ["KUBECONFIG"] = str(testbed.KUBECONFIG)
    kubernetes.config.load_kube_config(config_file=str(testbed.KUBECONFIG))
    subprocess.run(
        ["kubectl", "apply", "--server-side", "--force-conflicts", "-f", str(CRD)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            "kubectl",
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/modeldeployments.modeldeploy.io",
        ],
        check=True,
        capture_output=True,
    )
    yield testbed.KUBECONFIG
    if started:
        testbed.down()


@pytest.fixture(scope="session")
def real_node(cluster: Path) -> Iterator[str]:
    """The real node's name; adds it to the test bed if absent (and removes it after).

    If it cannot start, every test that needs it errors with the reason: the kwok
    suite still runs, and nothing passes without having run on a real node.
    """
    started = False
    if not testbed.realnode.is_up():
        try:
            testbed.up(real_node=True)
        except testbed.TestbedError as error:
            pytest.fail(f"the real node could not start on this machine: {error}", pytrace=False)
        started = True
    yield testbed.realnode.NODE
    if started:
        testbed.realnode.down()


@pytest.fixture
def kube(cluster: Path) -> Kube:
    return Kube()


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.core.create_namespace({"metadata": {"name": name}})
    # Pods are refused until the namespace's default ServiceAccount exists.
    wait_for(
        lambda: kube.service_account_exists(name, "default"),
        30,
        "the namespace's default ServiceAccount",
    )
    yield name
    kube.core.delete_namespace(name)


class Operator:
    """The operator as a real process (`python -m modeldeploy`), limited to one namespace."""

    def __init__(self, namespace: str, log_path: Path) -> None:
        self.namespace = namespace
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.extra_args: list[str] = []
        self.env: dict[str, str] = {}

    def start(self, *extra_args: str) -> None:
        """Start it; `extra_args` (e.g. --metrics-port) stay for later restarts."""
        self.extra_args += extra_args
        command = [
            sys.executable,
            "-m",
            "modeldeploy",
            "--namespace",
            self.namespace,
            "--liveness=",
            "--verbose",
            *self.extra_args,
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            )
        wait_for(
            lambda: b"Activity 'configure' succeeded" in self.log_path.read_bytes(),
            30,
            "the operator to start",
        )

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def operator(namespace: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Operator]:
    """A running operator for the test's namespace."""
    running = Operator(namespace, tmp_path / "operator.log")
    running.start()
    request.node.operator_log = running.log
    yield running
    running.stop()


@pytest.fixture
def stopped_operator(
    namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Operator]:
    """An operator the test starts itself, with its own flags or credentials."""
    idle = Operator(namespace, tmp_path / "operator.log")
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
        for name in (*testbed.COMPONENTS, *testbed.realnode.COMPONENTS):
            if testbed.log_file(name).exists():
                report.sections.append((f"{name} log (tail)", testbed.log_tail(name, 15)))
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
