"""The operator's own image for the real node, built without Docker: deploy/Dockerfile by hand.

Three layers: Debian bookworm with python3 (debootstrap, cached); the operator's user
and the dependencies pinned with hashes in deploy/image/requirements.lock; the
project's wheel. Debian's pip installs both with the argument lists below, which
deploy/Dockerfile runs too (tests/integration/test_operator_image_recipe.py compares
them). The same sources give the same image digest: layers are written by
images.tree_layer, and pip compiles nothing.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tarfile
import tempfile
import time
import tomllib
from pathlib import Path

from testbed import images
from testbed.processes import CACHE, ROOT, TestbedError, log

IMAGE_FOLDER = ROOT / "deploy" / "image"
LOCK = IMAGE_FOLDER / "requirements.lock"
BUILD_CONSTRAINTS = IMAGE_FOLDER / "build-constraints.txt"  # the wheel's build backend, pinned
SOURCES = ("pyproject.toml", "operator")  # what the wheel is built from
IGNORED = ("__pycache__", "*.egg-info", "*.pyc")  # as deploy/Dockerfile.dockerignore
BASE_PACKAGES = ("python3", "ca-certificates")  # the webhooks' TLS needs Debian's CA bundle

DEPS, APP = "/opt/modeldeploy/deps", "/opt/modeldeploy/app"  # where each layer installs
UID = 10001
PASSWD_LINE = f"modeldeploy:x:{UID}:{UID}::/nonexistent:/usr/sbin/nologin"
GROUP_LINE = f"modeldeploy:x:{UID}:"
USER = f"{UID}:{UID}"
ENTRYPOINT = ("python3", "-m", "modeldeploy")
ENV = (
    "PYTHONPATH=/opt/modeldeploy/app:/opt/modeldeploy/deps",
    "PYTHONUNBUFFERED=1",
    "PYTHONDONTWRITEBYTECODE=1",  # the root filesystem is read-only in the pod anyway
)
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # Debian's default

# Debian's own pip (bookworm: 23.0.1) under Debian's python3, here and in the Dockerfile:
# the same installer, and console scripts that start with #!/usr/bin/python3 in both.
PIP = ("/usr/bin/python3", "-m", "pip")
# Placeholders: {machine} is `uname -m`; the others are paths the caller fills in.
# The wheels are chosen for the image's CPython 3.11, whatever Python runs the build.
WHEEL_TAGS = (
    "--platform", "manylinux_2_17_{machine}", "--platform", "manylinux2014_{machine}",
    "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
)  # fmt: skip
DEPS_INSTALL = (
    "install", "--root-user-action=ignore", "--require-hashes", "--only-binary=:all:",
    "--no-compile", *WHEEL_TAGS, "--target", "{deps}", "--requirement", "{lock}",
)  # fmt: skip
APP_WHEEL = ("wheel", "--no-deps", "--wheel-dir", "{wheels}", "{source}")
APP_INSTALL = (
    "install", "--root-user-action=ignore", "--no-deps", "--no-index", "--no-compile",
    "--target", "{app}", "--find-links", "{wheels}", "modeldeploy",
)  # fmt: skip


def version() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return str(project["version"])


IMAGE = f"{images.REGISTRY}/operator:{version()}"


def source_files() -> list[Path]:
    """The files the wheel is built from, sorted, without caches or build leftovers."""
    found = []
    for name in SOURCES:
        path = ROOT / name
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        for candidate in candidates:
            parts = candidate.relative_to(ROOT).parts
            ignored = any(Path(part).match(pattern) for part in parts for pattern in IGNORED)
            if candidate.is_file() and not ignored:
                found.append(candidate)
    return found


def pip(template: tuple[str, ...], env: dict[str, str] | None = None, **paths: Path) -> None:
    args = [arg.format(machine=platform.machine(), **paths) for arg in template]
    env = {**os.environ, **(env or {})}
    result = subprocess.run([*PIP, *args], capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise TestbedError(f"pip {' '.join(args)} failed:\n{result.stdout[-2000:]}{result.stderr}")


def user_files(base: Path) -> dict[str, tuple[bytes, int]]:
    """The base layer's /etc/passwd and /etc/group with the operator's user added."""
    files = {}
    with tarfile.open(base) as tar:
        for name, line in (("etc/passwd", PASSWD_LINE), ("etc/group", GROUP_LINE)):
            member = tar.extractfile(name)
            if member is None:
                raise TestbedError(f"{base} has no {name}")
            files[name] = (member.read() + f"{line}\n".encode(), 0o644)
    return files


def deps_layer(blobs: Path, base: Path, scratch: Path) -> images.Blob:
    deps = scratch / "deps"
    pip(DEPS_INSTALL, deps=deps, lock=LOCK)
    return images.tree_layer(blobs, {DEPS.lstrip("/"): deps}, user_files(base))


def app_layer(blobs: Path, scratch: Path) -> images.Blob:
    source, wheels, app = scratch / "src", scratch / "wheels", scratch / "app"
    for path in source_files():
        copy = source / path.relative_to(ROOT)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
    pip(APP_WHEEL, {"PIP_CONSTRAINT": str(BUILD_CONSTRAINTS)}, wheels=wheels, source=source)
    pip(APP_INSTALL, app=app, wheels=wheels)
    return images.tree_layer(blobs, {APP.lstrip("/"): app}, {})


def image(blobs: Path) -> images.Image:
    base = images.rootfs_layer(BASE_PACKAGES)
    with tempfile.TemporaryDirectory(dir=blobs, prefix="build-") as folder:
        scratch = Path(folder)
        layers = (images.blob_of(base), deps_layer(blobs, base, scratch), app_layer(blobs, scratch))
    return images.Image(IMAGE, layers, ENTRYPOINT, (PATH, *ENV), USER)


def build(out: Path) -> Path:
    """Build the image into the OCI archive `out`, always; the archive's path."""
    started = time.monotonic()
    images.write_archive(out, lambda blobs: [image(blobs)])
    digest = images.manifest_digests(out)[IMAGE]
    log(f"{IMAGE} built in {time.monotonic() - started:.0f} s: {digest}")
    return out


def archive() -> Path:
    """The image's archive for these sources, lock and recipe; built once, then cached."""
    base = images.rootfs_layer(BASE_PACKAGES)  # by name and time: a rebuilt base is new
    recipe = hashlib.sha256(f"{base.name} {base.stat().st_mtime_ns}".encode())
    for path in (Path(__file__), Path(images.__file__), LOCK, BUILD_CONSTRAINTS, *source_files()):
        recipe.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    out = CACHE / f"operator-image-{recipe.hexdigest()[:12]}.tar"
    return out if out.exists() else build(out)
