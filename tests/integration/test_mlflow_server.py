"""A real MLflow tracking server (testbed/mlflow.py) and the registry calls the operator makes.

Each call is made over plain REST, as the operator will make it, and its answer is
checked: the version a name and number or an alias resolve to, aliases moving, tags
set and removed, and the errors for what does not exist. The server is killed and
started again on the same port and store; with the basic-auth app, credentials are
checked for real. docs/registry-findings.md writes the same shapes down.
"""

from __future__ import annotations

import dataclasses
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.mlflow import (
    ADMIN,
    Answer,
    BasicAuth,
    MlflowServer,
    Registry,
    RegistryError,
    tags,
)

MODEL = "fraud"
STATE = "modeldeploy.io/state"
GRANT = "/api/3.0/mlflow/users/permissions/grant"  # the auth app's own API is 3.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with MlflowServer(tmp_path_factory.mktemp("mlflow")) as running:
        yield running


@pytest.fixture(scope="module")
def registry(server: MlflowServer) -> Registry:
    return Registry(server.url)


def local_source(run: dict[str, object]) -> str:
    """A local artifact path inside the run's artifact folder, as the server requires."""
    info = run["info"]
    assert isinstance(info, dict)
    return f"{info['artifact_uri']}/model"


def run_id(run: dict[str, object]) -> str:
    info = run["info"]
    assert isinstance(info, dict)
    return str(info["run_id"])


def test_versions_resolve_by_number_and_by_alias(registry: Registry) -> None:
    model = registry.create_registered_model(MODEL)
    assert model["name"] == MODEL
    run = registry.create_run()
    first = registry.create_model_version(MODEL, local_source(run), run_id(run))
    assert (first["name"], first["version"]) == (MODEL, "1")
    assert first["source"] == local_source(run)
    assert first["run_id"] == run_id(run)
    assert first["status"] == "READY"

    second_run = registry.create_run()
    second = registry.create_model_version(MODEL, local_source(second_run), run_id(second_run))
    assert second["version"] == "2"

    registry.set_alias(MODEL, "champion", "2")
    by_alias = registry.get_model_version_by_alias(MODEL, "champion")
    assert (by_alias["version"], by_alias["source"]) == ("2", local_source(second_run))
    assert by_alias["run_id"] == run_id(second_run)
    assert by_alias["aliases"] == ["champion"]

    # Moving an alias takes it from the version that had it.
    registry.set_alias(MODEL, "champion", "1")
    assert registry.get_model_version_by_alias(MODEL, "champion")["version"] == "1"
    assert "aliases" not in registry.get_model_version(MODEL, "2")
    assert registry.get_model_version(MODEL, "1")["aliases"] == ["champion"]
    assert registry.get_registered_model(MODEL)["aliases"] == [
        {"alias": "champion", "version": "1"}
    ]

    registry.delete_alias(MODEL, "champion")
    assert "aliases" not in registry.get_model_version(MODEL, "1")


def test_a_registered_model_version_is_a_source(registry: Registry) -> None:
    name = "fraud-models-source"
    registry.create_registered_model(name)
    run = registry.create_run()
    registry.create_model_version(name, local_source(run), run_id(run))
    again = registry.create_model_version(name, f"models:/{name}/1")
    # The server keeps the models:/ source and takes the run from the version it names.
    assert (again["version"], again["source"]) == ("2", f"models:/{name}/1")
    assert again["run_id"] == run_id(run)


def test_version_tags_are_set_and_removed(registry: Registry) -> None:
    name = "fraud-tags"
    registry.create_registered_model(name)
    run = registry.create_run()
    registry.create_model_version(name, local_source(run), run_id(run))

    registry.set_model_version_tag(name, "1", STATE, "failed")
    registry.set_model_version_tag(name, "1", "modeldeploy.io/reason", "CrashLoop: exit 1")
    assert tags(registry.get_model_version(name, "1")) == {
        STATE: "failed",
        "modeldeploy.io/reason": "CrashLoop: exit 1",
    }
    registry.set_model_version_tag(name, "1", STATE, "serving")  # a tag is overwritten
    assert tags(registry.get_model_version(name, "1"))[STATE] == "serving"

    registry.delete_model_version_tag(name, "1", STATE)
    assert tags(registry.get_model_version(name, "1")) == {
        "modeldeploy.io/reason": "CrashLoop: exit 1"
    }


def not_found(answer: Answer, message: str) -> None:
    assert (answer.status, answer.error_code) == (404, "RESOURCE_DOES_NOT_EXIST"), answer
    assert answer.body["message"] == message


def invalid(answer: Answer, message: str) -> None:
    assert (answer.status, answer.error_code) == (400, "INVALID_PARAMETER_VALUE"), answer
    assert answer.body["message"] == message


def test_what_does_not_exist_is_named_in_the_error(registry: Registry) -> None:
    name = "fraud-errors"
    registry.create_registered_model(name)
    run = registry.create_run()
    registry.create_model_version(name, local_source(run), run_id(run))
    get = f"{Registry.PREFIX}/model-versions/get"
    alias = f"{Registry.PREFIX}/registered-models/alias"

    not_found(
        registry.call("GET", get, query={"name": "no-such-model", "version": "1"}),
        "Model Version (name=no-such-model, version=1) not found",
    )
    not_found(
        registry.call("GET", get, query={"name": name, "version": "7"}),
        f"Model Version (name={name}, version=7) not found",
    )
    # An unknown alias of a known model is a 400, not a 404; of an unknown model, a 404.
    invalid(
        registry.call("GET", alias, query={"name": name, "alias": "production"}),
        "Registered model alias production not found.",
    )
    not_found(
        registry.call("GET", alias, query={"name": "no-such-model", "alias": "production"}),
        "Registered Model with name=no-such-model not found",
    )
    not_found(
        registry.call("POST", alias, body={"name": name, "alias": "production", "version": "7"}),
        f"Model Version (name={name}, version=7) not found",
    )
    # Versions are strings in JSON; numbers in aliases are reserved.
    invalid(
        registry.call("GET", get, query={"name": name, "version": "champion"}),
        "Parameter 'version' must be an integer, got 'champion'.",
    )
    answer = registry.call("POST", alias, body={"name": name, "alias": "x", "version": 1})
    assert (answer.status, answer.error_code) == (400, "INVALID_PARAMETER_VALUE")
    invalid(
        registry.call("POST", alias, body={"name": name, "alias": "v3", "version": "1"}),
        "Version alias name 'v3' is reserved.",
    )
    invalid(
        registry.call("POST", alias, body={"name": name, "alias": "latest", "version": "1"}),
        "'latest' alias name (case insensitive) is reserved.",
    )
    # DELETE reads its parameters from a JSON body only, and is idempotent.
    invalid(
        registry.call("DELETE", alias, query={"name": name, "alias": "production"}),
        "Missing value for required parameter 'name'. "
        "See the API docs for more information about request parameters.",
    )
    registry.delete_alias(name, "production")
    registry.delete_model_version_tag(name, "1", STATE)
    # A local source must lie in the artifact folder of the run named with it.
    answer = registry.call(
        "POST",
        f"{Registry.PREFIX}/model-versions/create",
        body={"name": name, "source": "/etc", "run_id": run_id(run)},
    )
    assert (answer.status, answer.error_code) == (400, "INVALID_PARAMETER_VALUE")
    assert answer.body["message"].startswith("Invalid model version source: '/etc'.")
    with pytest.raises(RegistryError) as raised:
        registry.create_registered_model(name)
    assert (raised.value.answer.status, raised.value.answer.error_code) == (
        400,
        "RESOURCE_ALREADY_EXISTS",
    )


def test_a_killed_server_restarts_on_its_port_with_its_data(tmp_path: Path) -> None:
    with MlflowServer(tmp_path) as server:
        registry = Registry(server.url)
        registry.create_registered_model(MODEL)
        run = registry.create_run()
        registry.create_model_version(MODEL, local_source(run), run_id(run))
        registry.set_alias(MODEL, "production", "1")
        registry.set_model_version_tag(MODEL, "1", STATE, "serving")
        url = server.url

        server.stop(kill=True)
        with pytest.raises(urllib.error.URLError):  # nothing listens: refused, not a hang
            registry.call("GET", f"{Registry.PREFIX}/registered-models/get")
        server.start()
        assert server.url == url
        version = registry.get_model_version_by_alias(MODEL, "production")
        assert (version["version"], version["run_id"]) == ("1", run_id(run))
        assert tags(version) == {STATE: "serving"}

        server.restart()  # a clean stop and start keep it all too
        assert tags(registry.get_model_version(MODEL, "1")) == {STATE: "serving"}


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with MlflowServer(tmp_path_factory.mktemp("mlflow-auth"), auth=ADMIN) as running:
        yield running


NOT_AUTHENTICATED = (
    "You are not authenticated. Please see "
    "https://www.mlflow.org/docs/latest/auth/index.html#authenticating-to-mlflow "
    "on how to authenticate."
)


def test_basic_auth_refuses_wrong_credentials(auth_server: MlflowServer) -> None:
    url = auth_server.url
    query = {"name": MODEL, "version": "1"}
    get = f"{Registry.PREFIX}/model-versions/get"
    for client in (
        Registry(url),
        Registry(url, basic=BasicAuth(ADMIN.username, "not-the-password")),
        Registry(url, basic=BasicAuth("nobody", ADMIN.password)),
        Registry(url, token=ADMIN.password),  # the basic-auth app takes no bearer token
    ):
        answer = client.call("GET", get, query=query)
        assert (answer.status, answer.body) == (401, {"text": NOT_AUTHENTICATED})
        assert answer.headers["www-authenticate"] == 'Basic realm="mlflow"'

    admin = Registry(url, basic=ADMIN)
    not_found(
        admin.call("GET", get, query=query), f"Model Version (name={MODEL}, version=1) not found"
    )


def test_basic_auth_admin_writes_and_a_reader_may_not(auth_server: MlflowServer) -> None:
    admin = Registry(auth_server.url, basic=ADMIN)
    admin.create_registered_model(MODEL)
    run = admin.create_run()
    admin.create_model_version(MODEL, local_source(run), run_id(run))
    admin.set_model_version_tag(MODEL, "1", STATE, "serving")
    admin.set_alias(MODEL, "production", "1")
    assert admin.get_model_version_by_alias(MODEL, "production")["version"] == "1"

    reader_login = BasicAuth("modeldeploy-reader", "reader-password-1")
    admin.ok("POST", "users/create", body=dataclasses.asdict(reader_login))
    reader = Registry(auth_server.url, basic=reader_login)
    assert tags(reader.get_model_version(MODEL, "1")) == {STATE: "serving"}  # READ by default
    for method, name, body in (
        (
            "POST",
            "model-versions/set-tag",
            {"name": MODEL, "version": "1", "key": "k", "value": "v"},
        ),
        ("POST", "registered-models/alias", {"name": MODEL, "alias": "x", "version": "1"}),
    ):
        answer = reader.call(method, f"{Registry.PREFIX}/{name}", body=body)
        assert (answer.status, answer.body) == (403, {"text": "Permission denied"})
    # An unknown model is a 403 for a user who may not see it, not a 404.
    answer = reader.call(
        "GET", f"{Registry.PREFIX}/model-versions/get", query={"name": "other", "version": "1"}
    )
    assert (answer.status, answer.body) == (403, {"text": "Permission denied"})

    # Granted EDIT on the model, the same user writes its tags and aliases.
    grant = {
        "username": reader_login.username,
        "resource_type": "registered_model",
        "resource_id": MODEL,
        "permission": "EDIT",
    }
    assert admin.call("POST", GRANT, body=grant).status == 200
    reader.set_model_version_tag(MODEL, "1", STATE, "failed")
    assert tags(admin.get_model_version(MODEL, "1")) == {STATE: "failed"}

    auth_server.stop(kill=True)  # users, grants and models outlive a kill
    auth_server.start()
    reader.set_alias(MODEL, "production", "1")
    assert reader.call(
        "GET", f"{Registry.PREFIX}/model-versions/get", query={"name": MODEL, "version": "1"}
    ).body["model_version"]["aliases"] == ["production"]
