"""The MLServer images' entrypoint hands modeldeploy's environment to MLServer."""

from __future__ import annotations

from testbed.mlserver_runtime.entrypoint import mlserver_environment


def test_modeldeploys_variables_become_mlservers() -> None:
    env = mlserver_environment(
        {"MODEL_NAME": "fraud", "MODEL_VERSION": "v2", "MODEL_URI": "/mnt/model", "PATH": "/bin"}
    )
    assert env["MLSERVER_MODEL_NAME"] == "fraud"
    assert env["MLSERVER_MODEL_VERSION"] == "v2"
    assert env["MLSERVER_MODEL_URI"] == "/mnt/model"
    assert env["MODEL_NAME"] == "fraud" and env["PATH"] == "/bin"  # the rest is kept


def test_an_mlserver_variable_set_explicitly_wins() -> None:
    env = mlserver_environment({"MODEL_NAME": "fraud", "MLSERVER_MODEL_NAME": "other"})
    assert env["MLSERVER_MODEL_NAME"] == "other"


def test_without_a_uri_the_images_own_model_is_served() -> None:
    env = mlserver_environment({"MODEL_NAME": "fraud", "MODEL_URI": ""})
    assert "MLSERVER_MODEL_URI" not in env
    assert "MLSERVER_MODEL_VERSION" not in env
