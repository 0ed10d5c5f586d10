"""The MLServer images' entrypoint: modeldeploy's environment to MLServer's, then MLServer.

modeldeploy gives a model's container MODEL_NAME (the ModelDeployment's name, which
clients and golden requests put in the path: /v2/models/NAME/infer), MODEL_VERSION
and, when the version names one, MODEL_URI. MLServer reads a single model's name,
version and URI from MLSERVER_MODEL_NAME, MLSERVER_MODEL_VERSION and MLSERVER_MODEL_URI
wherever its model-settings.json leaves them out; the images' model-settings.json sets
only the implementation (and a test variant's parameters), so these three come from
here. An MLSERVER_* variable that is already set (in a version's env, say) is kept.
Without MODEL_URI the model is the one in the image (/models/fraud/model.joblib); a
MODEL_URI must be a path in the container (MLServer reads no remote storage).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

OURS_TO_MLSERVER = {
    "MODEL_NAME": "MLSERVER_MODEL_NAME",
    "MODEL_VERSION": "MLSERVER_MODEL_VERSION",
    "MODEL_URI": "MLSERVER_MODEL_URI",
}
REPOSITORY = "/models"  # one folder per model, each with its model-settings.json


def mlserver_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` with MLServer's variables filled from modeldeploy's."""
    env = dict(environ)
    for ours, theirs in OURS_TO_MLSERVER.items():
        if environ.get(ours) and theirs not in environ:
            env[theirs] = environ[ours]
    return env


def main() -> None:
    os.environ.update(mlserver_environment(os.environ))
    from mlserver.cli import main as mlserver  # noqa: PLC0415 - reads the environment set above

    sys.argv = ["mlserver", "start", REPOSITORY]
    mlserver()


if __name__ == "__main__":
    main()
