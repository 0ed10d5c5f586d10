"""MLflow's model registry (docs/registry.md) against a real MLflow server, on kwok pods.

A real MLflow 3.18 server (testbed/mlflow.py) holds a registered model with versions
whose sources are storage locations, and aliases. The operator runs on its own
ServiceAccount with deploy/base/rbac.yaml (the credentials Secret is read with `get`
alone) and the registry allowed by --allowed-registry. What it resolved is read back
from status.registry and from the Deployment's MODEL_URI.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

import testbed.cluster
from modeldeploy import constants as c
from testbed.mlflow import ADMIN, MlflowServer, Registry, tags
from testbed.support import OperatorProcess
from tests.e2e.conftest import on_its_service_account
from tests.e2e.helpers import (
    Kube,
    model_deployment,
    plugin,
    ready,
    release_and_await_revert,
    rendered,
    reverted_to,
    wait_for,
)

NAME = "fraud"
STATE, REASON = f"{c.GROUP}/state", f"{c.GROUP}/reason"
CRASHING = "registry.example/m:2-crashloop"  # kwok runs it crash-looping


@pytest.fixture(autouse=True)
def crd_with_registry(cluster: Path) -> Iterator[None]:
    """This tree's CRD, applied again before each test: a shared test bed's CRD is
    whichever checkout's session applied it last, and one without spec.registry prunes
    the references away. Said after the test if that happened meanwhile."""
    testbed.cluster.install_crd()
    yield
    crd: Any = kubernetes.client.ApiextensionsV1Api().read_custom_resource_definition(
        f"{c.PLURAL}.{c.GROUP}"
    )
    spec = crd.spec.versions[0].schema.open_apiv3_schema.properties["spec"]
    if "registry" not in spec.properties:
        pytest.fail("the CRD was replaced by one without spec.registry during this test")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with MlflowServer(tmp_path_factory.mktemp("mlflow")) as running:
        yield running


@pytest.fixture
def registry(server: MlflowServer) -> Registry:
    return Registry(server.url)


@pytest.fixture
def model(registry: Registry) -> dict[str, str]:
    """A registered model of this test's own: version 1 from a run (a file:// source
    in its artifacts), versions 2 and 3 in object storage; alias champion on 2."""
    name = f"fraud-{uuid.uuid4().hex[:6]}"
    registry.create_registered_model(name)
    run = registry.create_run()
    info = run["info"]
    first = registry.create_model_version(name, f"{info['artifact_uri']}/model", info["run_id"])
    registry.create_model_version(name, f"s3://models/{name}/2")
    registry.create_model_version(name, f"s3://models/{name}/3")
    registry.set_alias(name, "champion", "2")
    return {
        "name": name,
        "run": str(info["run_id"]),
        "1": str(first["source"]),
        "2": f"s3://models/{name}/2",
        "3": f"s3://models/{name}/3",
    }


@pytest.fixture
def operator_on_rbac(
    kube: Kube, namespace: str, stopped_operator: OperatorProcess, tmp_path: Path, server: Any
) -> OperatorProcess:
    """The operator on deploy/rbac.yaml's rights alone, the test's registry allowed."""
    on_its_service_account(kube, stopped_operator, tmp_path)
    stopped_operator.start(f"--allowed-registry={server.url}/")
    return stopped_operator


def registered(
    server: MlflowServer, references: dict[str, dict[str, str]], active: str = "v1"
) -> dict[str, Any]:
    """A ModelDeployment whose versions name registry references, with no modelUri."""
    images = {version: f"registry.example/m:{version}" for version in references}
    body = model_deployment(NAME, images, active, model_uris=False)
    for entry in body["spec"]["versions"]:
        entry["registry"] = references[entry["name"]]
    body["spec"]["registry"] = {
        "mlflow": {"trackingURI": server.url, "credentialsSecret": "mlflow-credentials"}
    }
    return body


def put_credentials(kube: Kube, namespace: str) -> None:
    """Basic-auth credentials: this server runs without the auth app and ignores them;
    reading them is what the operator's RBAC is shown to allow."""
    kube.core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "mlflow-credentials"},
            "stringData": {"username": "modeldeploy", "password": "not-checked-here"},
        },
    )


def model_uri(kube: Kube, namespace: str) -> str | None:
    template = kube.apps.read_namespaced_deployment(NAME, namespace).spec.template
    (container,) = template.spec.containers
    return {e.name: e.value for e in container.env or ()}.get("MODEL_URI")


def records(kube: Kube, namespace: str) -> dict[str, dict[str, Any]]:
    return {r["version"]: r for r in kube.status(namespace, NAME).get("registry") or ()}


def stalled_saying(kube: Kube, namespace: str, said: str) -> dict[str, Any] | None:
    """The Stalled condition, once it is True and its message holds `said`."""
    stalled = kube.condition(namespace, NAME, c.STALLED)
    return (
        stalled if stalled.get("status") == "True" and said in stalled.get("message", "") else None
    )


def annotate(kube: Kube, namespace: str, annotations: dict[str, str]) -> None:
    kube.custom.patch_namespaced_custom_object(
        c.GROUP, c.VERSION, namespace, c.PLURAL, NAME, {"metadata": {"annotations": annotations}}
    )


def test_a_version_resolves_by_number_and_by_alias_once_and_a_refresh_asks_again(
    kube: Kube,
    namespace: str,
    server: MlflowServer,
    registry: Registry,
    model: dict[str, str],
    operator_on_rbac: OperatorProcess,
) -> None:
    put_credentials(kube, namespace)
    name = model["name"]
    body = registered(
        server, {"v1": {"model": name, "version": "1"}, "v2": {"model": name, "alias": "champion"}}
    )
    kube.create(namespace, body)
    kube.wait_good(namespace, NAME, "v1")
    first = records(kube, namespace)["v1"]
    assert (first["model"], first["requestedVersion"], first["modelVersion"]) == (name, "1", "1")
    assert (first["source"], first["runId"]) == (model["1"], model["run"])
    assert model_uri(kube, namespace) == model["1"]

    kube.select(namespace, NAME, "v2")
    kube.wait_good(namespace, NAME, "v2")
    second = records(kube, namespace)["v2"]
    assert (second["alias"], second["modelVersion"], second["source"]) == (
        "champion",
        "2",
        model["2"],
    )
    assert "runId" not in second  # an object-storage source has no run
    assert model_uri(kube, namespace) == model["2"]

    # The alias moves on in the registry: nothing changes for the rolled-out version,
    # not even when a spec change makes the operator look at the resource again.
    registry.set_alias(name, "champion", "3")
    kube.custom.patch_namespaced_custom_object(
        c.GROUP, c.VERSION, namespace, c.PLURAL, NAME, {"spec": {"replicas": 3}}
    )
    wait_for(
        lambda: (
            (s := kube.status(namespace, NAME)).get("observedGeneration")
            == kube.get(namespace, NAME)["metadata"]["generation"]
            and s.get("readyReplicas") == 3
            and ready(kube, namespace, NAME)
        ),
        90,
        "the operator to take in the new replica count",
    )
    assert records(kube, namespace)["v2"] == second
    assert model_uri(kube, namespace) == model["2"]

    # Asked to, it resolves the alias again: the version rolls out with model version 3.
    annotate(kube, namespace, {c.ANNOTATION_REFRESH_REGISTRY: "v2"})
    wait_for(
        lambda: records(kube, namespace)["v2"]["modelVersion"] == "3",
        60,
        "v2's alias to be resolved again",
    )
    wait_for(
        lambda: (
            model_uri(kube, namespace) == model["3"]
            and (s := kube.status(namespace, NAME)).get("lastGoodTemplateHash")
            == s["rollout"]["templateHash"]
            and ready(kube, namespace, NAME)
        ),
        90,
        "v2 to roll out again with model version 3",
    )
    annotations = kube.get(namespace, NAME)["metadata"].get("annotations") or {}
    assert c.ANNOTATION_REFRESH_REGISTRY not in annotations  # consumed
    assert "RegistryVersionResolved" in kube.event_reasons(namespace, NAME)
    assert kube.condition(namespace, NAME, c.REGISTRY_READY)["status"] == "True"

    # The plugin picks a version by the registry version it runs.
    back = plugin("-n", namespace, "rollback", NAME, "--to-registry-version", "1")
    assert back.returncode == 0, back.stderr
    assert kube.get(namespace, NAME)["spec"]["activeVersion"] == "v1"
    kube.wait_good(namespace, NAME, "v1")
    assert model_uri(kube, namespace) == model["1"]


def test_a_reference_the_registry_does_not_have_stalls_and_what_serves_keeps_serving(
    kube: Kube,
    namespace: str,
    server: MlflowServer,
    model: dict[str, str],
    operator_on_rbac: OperatorProcess,
) -> None:
    put_credentials(kube, namespace)
    name = model["name"]
    missing = f"nope-{uuid.uuid4().hex[:6]}"
    body = registered(
        server,
        {
            "v1": {"model": name, "version": "1"},
            "v2": {"model": missing, "version": "1"},
            "v3": {"model": name, "alias": "production"},
            "v4": {"model": name, "version": "99"},
        },
    )
    kube.create(namespace, body)
    kube.wait_good(namespace, NAME, "v1")
    for version, said in (
        ("v2", f"Model Version (name={missing}, version=1) not found"),
        ("v3", "Registered model alias production not found."),
        ("v4", f"Model Version (name={name}, version=99) not found"),
    ):
        kube.select(namespace, NAME, version)
        stalled = wait_for(
            functools.partial(stalled_saying, kube, namespace, said),
            60,
            f"{version}'s reference to stall the resource",
        )
        assert stalled["reason"] == c.REASON_INVALID_SPEC
        assert rendered(kube, namespace, NAME, "v1")  # what serves keeps serving
        status = kube.status(namespace, NAME)
        assert status.get("servingVersion") == status.get("lastGoodVersion") == "v1"
        assert version not in records(kube, namespace)
        assert kube.ledger(namespace, NAME).get(version, {}).get("state") != "Failed"
    assert model_uri(kube, namespace) == model["1"]


def test_an_unanswering_registry_holds_the_rollout_until_it_is_back(
    kube: Kube,
    namespace: str,
    server: MlflowServer,
    model: dict[str, str],
    operator_on_rbac: OperatorProcess,
) -> None:
    put_credentials(kube, namespace)
    name = model["name"]
    body = registered(
        server, {"v1": {"model": name, "version": "1"}, "v2": {"model": name, "version": "2"}}
    )
    kube.create(namespace, body)
    kube.wait_good(namespace, NAME, "v1")
    server.stop(kill=True)
    try:
        kube.select(namespace, NAME, "v2")
        down = wait_for(
            lambda: (
                (k := kube.condition(namespace, NAME, c.REGISTRY_READY)).get("status") == "False"
                and k
            ),
            60,
            "RegistryReady to say the registry does not answer",
        )
        assert down["reason"] == c.REASON_REGISTRY_UNREACHABLE
        assert kube.condition(namespace, NAME, c.STALLED).get("status") != "True"
        assert rendered(kube, namespace, NAME, "v1")
        assert kube.ledger(namespace, NAME).get("v2", {}).get("state") != "Failed"
    finally:
        server.start()
    kube.wait_good(namespace, NAME, "v2", timeout=150)
    assert records(kube, namespace)["v2"]["source"] == model["2"]
    assert model_uri(kube, namespace) == model["2"]
    assert kube.condition(namespace, NAME, c.REGISTRY_READY)["status"] == "True"


def tagged(registry: Registry, model: str, number: str, state: str) -> dict[str, str] | None:
    """The model version's tags, once its state tag is `state`."""
    found = tags(registry.get_model_version(model, number))
    return found if found.get(STATE) == state else None


def aliased(registry: Registry, model: str, alias: str) -> str | None:
    answer = registry.call(
        "GET", f"{Registry.PREFIX}/registered-models/alias", query={"name": model, "alias": alias}
    )
    return str(answer.body["model_version"]["version"]) if answer.status == 200 else None


def crashing_release(server: MlflowServer, model: str) -> dict[str, Any]:
    """v1 from model version 1; v2, model version 2, crash-loops; alias production."""
    body = registered(
        server, {"v1": {"model": model, "version": "1"}, "v2": {"model": model, "version": "2"}}
    )
    body["spec"]["versions"][1]["image"] = CRASHING
    body["spec"]["registry"]["mlflow"]["alias"] = "production"
    return body


def test_a_reverted_release_is_tagged_failed_and_the_alias_names_what_serves(
    kube: Kube,
    namespace: str,
    server: MlflowServer,
    registry: Registry,
    model: dict[str, str],
    operator_on_rbac: OperatorProcess,
) -> None:
    put_credentials(kube, namespace)
    name = model["name"]
    kube.create(namespace, crashing_release(server, name))
    kube.wait_good(namespace, NAME, "v1")
    wait_for(lambda: tagged(registry, name, "1", "serving"), 60, "version 1 tagged serving")
    wait_for(lambda: aliased(registry, name, "production") == "1", 30, "the alias on 1")
    release_and_await_revert(kube, namespace, NAME)
    failed = wait_for(lambda: tagged(registry, name, "2", "failed"), 60, "version 2 failed")
    ledger = kube.ledger(namespace, NAME)["v2"]
    assert ledger["reason"] in failed[REASON]
    assert failed[f"{c.GROUP}/version"] == "v2"
    serving = wait_for(lambda: tagged(registry, name, "1", "serving"), 60, "1 serving again")
    assert "v2 failed" in serving[REASON]  # the revert's own write
    assert aliased(registry, name, "production") == "1"
    wait_for(lambda: not kube.status(namespace, NAME).get("registryWrites"), 30, "nothing owed")


def test_a_revert_during_a_registry_outage_lands_at_once_and_the_writes_follow(
    kube: Kube,
    namespace: str,
    server: MlflowServer,
    registry: Registry,
    model: dict[str, str],
    operator_on_rbac: OperatorProcess,
) -> None:
    put_credentials(kube, namespace)
    name = model["name"]
    kube.create(namespace, crashing_release(server, name))
    kube.wait_good(namespace, NAME, "v1")
    wait_for(lambda: aliased(registry, name, "production") == "1", 60, "the alias on 1")
    kube.select(namespace, NAME, "v2")
    wait_for(lambda: "v2" in records(kube, namespace), 60, "v2's model version resolved")
    server.stop(kill=True)
    try:
        wait_for(lambda: reverted_to(kube, namespace, NAME, "v1"), 120, "the revert to v1")
        owed = kube.status(namespace, NAME).get("registryWrites") or ()
        assert ("v2", "failed") in {(w["version"], w["state"]) for w in owed}
        down = wait_for(
            lambda: (
                (k := kube.condition(namespace, NAME, c.REGISTRY_READY)).get("status") == "False"
                and k
            ),
            60,
            "RegistryReady to say the writes wait",
        )
        assert down["reason"] == c.REASON_REGISTRY_UNREACHABLE
    finally:
        server.start()
    wait_for(lambda: tagged(registry, name, "2", "failed"), 120, "version 2 tagged failed")
    wait_for(lambda: tagged(registry, name, "1", "serving"), 60, "version 1 tagged serving")
    assert aliased(registry, name, "production") == "1"
    wait_for(
        lambda: (
            not kube.status(namespace, NAME).get("registryWrites")
            and kube.condition(namespace, NAME, c.REGISTRY_READY).get("status") == "True"
        ),
        60,
        "the owed writes to leave status and RegistryReady to be True",
    )


# ------------------------------------------------------ a registry behind basic auth


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """MLflow's basic-auth app in front of the registry, with a known admin."""
    with MlflowServer(tmp_path_factory.mktemp("mlflow-auth"), auth=ADMIN) as running:
        yield running


def credentials(kube: Kube, namespace: str, password: str) -> None:
    kube.core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "mlflow-credentials"},
            "stringData": {"username": ADMIN.username, "password": password},
        },
    )


def test_a_registry_behind_basic_auth_answers_the_secrets_credentials_and_refuses_others(
    kube: Kube,
    namespace: str,
    auth_server: MlflowServer,
    stopped_operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    """With the Secret's user and password the version resolves and rolls out, and its
    write-back lands; with a wrong password nothing rolls out, and status says the
    registry refused it (401 in MLflow's words), never a silent wait."""
    on_its_service_account(kube, stopped_operator, tmp_path)
    stopped_operator.start(f"--allowed-registry={auth_server.url}/")
    admin = Registry(auth_server.url, basic=ADMIN)
    name = f"fraud-{uuid.uuid4().hex[:6]}"
    admin.create_registered_model(name)
    admin.create_model_version(name, f"s3://models/{name}/1")
    credentials(kube, namespace, "a-wrong-password")
    kube.create(namespace, registered(auth_server, {"v1": {"model": name, "version": "1"}}))
    refused = wait_for(
        lambda: stalled_saying(kube, namespace, "401"), 60, "Stalled with the registry's 401"
    )
    assert "authenticated" in refused["message"], refused
    assert kube.deployment_or_none(namespace, NAME) is None  # nothing rolled out

    kube.core.delete_namespaced_secret("mlflow-credentials", namespace)
    credentials(kube, namespace, ADMIN.password)
    kube.wait_good(namespace, NAME, "v1", timeout=120)  # asked again after its backoff
    assert model_uri(kube, namespace) == f"s3://models/{name}/1"
    wait_for(
        lambda: tags(admin.get_model_version(name, "1")).get(STATE) == "serving",
        60,
        "the write-back with the Secret's credentials",
    )
