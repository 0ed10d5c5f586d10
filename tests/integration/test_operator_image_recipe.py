"""deploy/Dockerfile and the test bed's Docker-free build (testbed/operator_image.py) agree.

Docker cannot run on the test machines, so the Dockerfile is never built here: this
test reads it and checks it against the builder's own constants, which the e2e
tests do build and run. Same Debian suite and packages, same lock file and build
constraints, same pip (Debian's python3 -m pip) with the same arguments, same
sources, same user, environment and entrypoint.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from testbed import images, operator_image
from testbed.processes import ROOT

DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(keyword, arguments) of each instruction, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, args in instructions():
        if keyword == "FROM":
            found.append([])
        found[-1].append((keyword, args))
    return found


def commands(stage: list[tuple[str, str]]) -> list[list[str]]:
    """Each shell command of the stage's RUN instructions, split into words."""
    return [
        shlex.split(command.replace("$(uname -m)", "{machine}"))
        for keyword, args in stage
        if keyword == "RUN"
        for command in args.split("&&")
    ]


def copies(stage: list[tuple[str, str]]) -> list[list[str]]:
    return [args.split() for keyword, args in stage if keyword == "COPY"]


def test_both_stages_start_from_debian_of_the_builders_suite() -> None:
    assert [stage[0][1].split()[0] for stage in stages()] == [f"debian:{images.SUITE}-slim"] * 2


def test_the_image_has_the_builders_debian_packages() -> None:
    installs = [c for c in commands(stages()[-1]) if c[:2] == ["apt-get", "install"]]
    assert len(installs) == 1
    assert [word for word in installs[0][2:] if not word.startswith("-")] == list(
        operator_image.BASE_PACKAGES
    )


def pip_commands() -> list[tuple[dict[str, str], list[str]]]:
    """The build stage's pip runs: (environment assignments, pip's arguments)."""
    found = []
    for words in commands(stages()[0]):
        env = dict(word.split("=", 1) for word in words if re.match(r"^[A-Z_]+=", word))
        rest = words[len(env) :]
        if rest[:3] == ["python3", "-m", "pip"]:
            found.append((env, rest[3:]))
    return found


def test_pip_is_debians_and_runs_with_the_builders_arguments() -> None:
    (build,) = [c for c in commands(stages()[0]) if c[:2] == ["apt-get", "install"]]
    assert "python3-pip" in build  # Debian's pip under Debian's /usr/bin/python3
    assert operator_image.PIP == ("/usr/bin/python3", "-m", "pip")
    destinations = {
        Path(source).name: Path(dest)
        for *sources, dest in copies(stages()[0])
        for source in sources
    }
    lock = destinations["requirements.lock"] / "requirements.lock"
    constraints = destinations["build-constraints.txt"] / "build-constraints.txt"
    source = destinations["pyproject.toml"].parent
    wheels = "/build/wheels"
    expected = [
        ({}, fill(operator_image.DEPS_INSTALL, deps=operator_image.DEPS, lock=lock)),
        (
            {"PIP_CONSTRAINT": str(constraints)},
            fill(operator_image.APP_WHEEL, wheels=wheels, source=source),
        ),
        ({}, fill(operator_image.APP_INSTALL, app=operator_image.APP, wheels=wheels)),
    ]
    assert pip_commands() == expected


def fill(template: tuple[str, ...], **paths: object) -> list[str]:
    return [arg.format(machine="{machine}", **paths) for arg in template]


def test_the_same_files_go_in() -> None:
    sources = {tuple(copy) for copy in copies(stages()[0])}
    lock_files = (operator_image.LOCK, operator_image.BUILD_CONSTRAINTS)
    assert (*(str(f.relative_to(ROOT)) for f in lock_files), "/build/") in sources
    for name in operator_image.SOURCES:
        assert (name, f"/build/src/{name}") in sources
    ignored = DOCKERIGNORE.read_text().split()
    for pattern in operator_image.IGNORED:
        assert f"**/{pattern}" in ignored


def test_the_user_environment_and_entrypoint_are_the_builders() -> None:
    final = stages()[-1]
    run = " ".join(" ".join(c) for c in commands(final))
    assert f"echo {operator_image.PASSWD_LINE} >> /etc/passwd" in run
    assert f"echo {operator_image.GROUP_LINE} >> /etc/group" in run
    values = dict(final)
    assert values["USER"] == operator_image.USER
    assert sorted(shlex.split(values["ENV"])) == sorted(operator_image.ENV)
    assert json.loads(values["ENTRYPOINT"]) == list(operator_image.ENTRYPOINT)
    assert ("--from=build", operator_image.DEPS.rsplit("/", 1)[0], "/opt/modeldeploy") in {
        tuple(copy) for copy in copies(final)
    }


@pytest.mark.parametrize("path", [operator_image.DEPS, operator_image.APP])
def test_the_python_path_names_both_install_folders(path: str) -> None:
    (python_path,) = [e for e in operator_image.ENV if e.startswith("PYTHONPATH=")]
    assert path in python_path.removeprefix("PYTHONPATH=").split(":")
