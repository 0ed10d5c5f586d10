"""Seldon's MLServer serving a scikit-learn model, as real-node images built without Docker.

`modeldeploy.local/mlserver-sklearn:VARIANT`, one OCI archive for all variants, layers
bottom up:

1. Debian bookworm with python3 (images.rootfs_layer; the operator image's base, so
   one cached layer serves both);
2. MLServer and mlserver-sklearn with all they pull in, pinned with hashes in
   testbed/mlserver_runtime/requirements.lock, installed by Debian's pip at
   /opt/mlserver/deps (`python3 -m testbed.lock mlserver` regenerates the lock);
3. the package testbed/mlserver_runtime at /opt/mlserver/runtime: the entrypoint,
   the slow runtime, the training script;
4. the variant's model folder /models/fraud: model.joblib and model-settings.json.

The model is trained while building, inside the image's own root filesystem (its
Python, scikit-learn and joblib; rootfs.py runs it), on the reference model server's
seeded data: a logistic regression on the fraud model's three features. The variants:

- good: that model;
- corrupt: its file cut in half. MLServer fails to load it, stops its servers and exits
  (with code 0: a restart loop, CrashLoopBackOff, exit 0 "Completed");
- wronganswers: its coefficients negated. Loads, Ready, answers 200, every predicted
  class flipped and every probability p answered as 1 - p;
- slowload: the good model behind a runtime whose load() first waits 20 s: MLServer is
  up and live at once and not ready until then, as with a big model's load;
- slowinfer: each inference waits 10 s before answering: a request in flight when a
  pod is told to stop.

The image runs as 10001:10001 (no account: any non-root uid works) with a read-only
root filesystem; MLServer writes nothing outside /tmp. The archive is cached under
~/.cache/modeldeploy by the content of everything it is built from.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testbed import images, operator_image, packages, rootfs
from testbed.modelserver import train
from testbed.processes import CACHE, ROOT, TestbedError, log

IMAGE = f"{images.REGISTRY}/mlserver-sklearn"
# The image's own code (the package mlserver_runtime at /opt/mlserver/runtime) and lock.
RUNTIME = ROOT / "testbed" / "mlserver_runtime"
REQUIREMENTS = RUNTIME / "requirements.in"
LOCK = RUNTIME / "requirements.lock"
BASE_PACKAGES = operator_image.BASE_PACKAGES  # the same base layer as the operator's image
DEPS, RUNTIME_AT = "/opt/mlserver/deps", "/opt/mlserver/runtime"
MODEL_FOLDER = "/models/fraud"  # the repository /models holds one model
HTTP_PORT, GRPC_PORT, METRICS_PORT = 8080, 8081, 8082  # MLServer's defaults, kept
USER = "10001:10001"
ENTRYPOINT = ("/usr/bin/python3", "-m", "mlserver_runtime.entrypoint")
ENV = (
    operator_image.PATH,
    f"PYTHONPATH={RUNTIME_AT}:{DEPS}",
    "PYTHONUNBUFFERED=1",
    "PYTHONDONTWRITEBYTECODE=1",  # the root filesystem is read-only
    # One process: inference in the server's own, so that a stopping server finishes the
    # requests in flight (with a worker process, MLServer's default, it cancels them).
    "MLSERVER_PARALLEL_WORKERS=0",
    # Where MLServer writes when workers are turned on again: its defaults are
    # folders of the working directory, here the read-only /.
    "MLSERVER_METRICS_DIR=/tmp/mlserver-metrics",
    "MLSERVER_ENVIRONMENTS_DIR=/tmp/mlserver-envs",
)

# Bookworm's glibc is 2.36: any manylinux wheel up to manylinux_2_36 runs there. pip takes
# each --platform literally, so every one is listed (manylinux2014 is manylinux_2_17).
PLATFORMS = (
    *(f"manylinux_2_{minor}_{{machine}}" for minor in range(36, 16, -1)),
    "manylinux2014_{machine}",
)
WHEEL_TAGS = (
    *(arg for platform in PLATFORMS for arg in ("--platform", platform)),
    "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
)  # fmt: skip
DEPS_INSTALL = (
    "install", "--root-user-action=ignore", "--require-hashes", "--only-binary=:all:",
    "--no-compile", *WHEEL_TAGS, "--target", "{deps}", "--requirement", "{lock}",
)  # fmt: skip

# From sources alone MLServer imports for 13-18 s on a loaded 2-core machine, from
# bytecode for 3-8 s, and a read-only root filesystem keeps nothing it compiles. So the
# image's own Python compiles it once at build time; unchecked-hash: an image's files
# never change, and the bytecode holds whatever times the layer gives its sources.
COMPILE = (
    "/usr/bin/python3", "-m", "compileall", "-q", "-j0", "--invalidation-mode",
    "unchecked-hash", DEPS, RUNTIME_AT,
)  # fmt: skip
TRAIN = ("/usr/bin/python3", "-m", "mlserver_runtime.train", "/build")

SKLEARN = "mlserver_sklearn.SKLearnModel"
SLOW = "mlserver_runtime.slow.SlowSKLearnModel"
# Each variant: its model file (as train.py names it; "corrupt" cuts model.joblib in
# half) and its model-settings.json, which leaves the name, version and URI to the
# environment (entrypoint.py).
VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "good": ("model.joblib", {"implementation": SKLEARN}),
    "corrupt": ("model.joblib", {"implementation": SKLEARN}),
    "wronganswers": ("wronganswers.joblib", {"implementation": SKLEARN}),
    "slowload": (
        "model.joblib",
        {"implementation": SLOW, "parameters": {"extra": {"load_seconds": 20}}},
    ),
    "slowinfer": (
        "model.joblib",
        {"implementation": SLOW, "parameters": {"extra": {"infer_seconds": 10}}},
    ),
}


def image_name(variant: str) -> str:
    return f"{IMAGE}:{variant}"


def runtime_sources() -> list[Path]:
    return sorted(RUNTIME.glob("*.py"))


def dataset() -> dict[str, object]:
    """The reference model server's training and held-out data (testbed/modelserver/train.py)."""
    rows, held_out = train.dataset(2000), train.dataset(1000, seed=11)
    return {
        "features": list(train.FEATURES),
        "rows": [x for x, _ in rows],
        "labels": [y for _, y in rows],
        "held_out_rows": [x for x, _ in held_out],
        "held_out_labels": [y for _, y in held_out],
    }


def in_image(layers: list[Path], upper: Path, argv: tuple[str, ...], what: str) -> None:
    """Run `argv` as root on `layers` with the image's environment; writes go to `upper`."""
    mountpoint = upper.with_name("root")
    mountpoint.mkdir(exist_ok=True)
    result = subprocess.run(
        rootfs.command(layers, list(argv), mountpoint, "0:0", upper),
        capture_output=True,
        text=True,
        env=dict(entry.split("=", 1) for entry in ENV),
        check=False,
    )
    if result.returncode != 0:
        raise TestbedError(f"{what} failed:\n{result.stdout}{result.stderr}")


def build_in_image(base: Path, deps: Path, runtime: Path, scratch: Path) -> Path:
    """With the image's own Python: the dependencies' and the runtime's bytecode, added to
    their layers' folders, and the trained models. The folder of train.py's files."""
    build = scratch / "build-layer" / "build"
    build.mkdir(parents=True)
    (build / "dataset.json").write_text(json.dumps(dataset()))
    upper = scratch / "upper"
    upper.mkdir()
    layers = [base, deps, runtime, build.parent]
    in_image(layers, upper, COMPILE, "compiling the image's Python packages")
    in_image(layers, upper, TRAIN, "training the model in the image")
    for layer, at in ((deps, DEPS), (runtime, RUNTIME_AT)):
        shutil.copytree(upper / at.lstrip("/"), layer / at.lstrip("/"), dirs_exist_ok=True)
    return upper / "build"


def model_files(trained: Path, variant: str) -> dict[str, tuple[bytes, int]]:
    source, settings = VARIANTS[variant]
    model = (trained / source).read_bytes()
    if variant == "corrupt":
        model = model[: len(model) // 2]
    content = json.dumps(settings, indent=2, sort_keys=True).encode() + b"\n"
    folder = MODEL_FOLDER.lstrip("/")
    return {
        f"{folder}/model.joblib": (model, 0o644),
        f"{folder}/model-settings.json": (content, 0o644),
    }


def build_images(blobs: Path) -> list[images.Image]:
    base_tar = images.rootfs_layer(BASE_PACKAGES)
    with tempfile.TemporaryDirectory(dir=blobs, prefix="build-") as folder:
        scratch = Path(folder)
        base = rootfs.unpack(base_tar, scratch / "base")
        deps = scratch / "deps-layer"
        operator_image.pip(DEPS_INSTALL, deps=deps / DEPS.lstrip("/"), lock=LOCK)
        runtime = scratch / "runtime-layer"
        package = runtime / RUNTIME_AT.lstrip("/") / "mlserver_runtime"
        package.mkdir(parents=True)
        for source in runtime_sources():
            shutil.copyfile(source, package / source.name)
        trained = build_in_image(base, deps, runtime, scratch)
        summary = json.loads((trained / "summary.json").read_text())
        log(f"trained in the image: {json.dumps(summary)}")
        shared = (
            images.blob_of(base_tar),
            images.tree_layer(blobs, {DEPS.lstrip("/"): deps / DEPS.lstrip("/")}, {}),
            images.tree_layer(
                blobs, {RUNTIME_AT.lstrip("/"): runtime / RUNTIME_AT.lstrip("/")}, {}
            ),
        )
        return [
            images.Image(
                image_name(variant),
                (*shared, images.files_layer(blobs, model_files(trained, variant))),
                ENTRYPOINT,
                ENV,
                USER,
            )
            for variant in VARIANTS
        ]


def preflight() -> None:
    """What building and running these images here needs, named when it is missing."""
    missing = [p for p in packages.missing("real-node") if p in ("debootstrap", "python3-pip")]
    if missing:
        raise TestbedError(
            f"the MLServer images need Debian packages that are missing: {' '.join(missing)}"
            f" (apt-get install {' '.join(missing)})"
        )
    if os.geteuid() != 0:
        raise TestbedError(
            "the MLServer images need root: debootstrap, and the mounts that run the image's"
            " own Python to train the model"
        )
    if "overlay" not in Path("/proc/filesystems").read_text():
        raise TestbedError("the MLServer images need the overlay filesystem in the kernel")


def archive() -> Path:
    """The images' archive for these sources, lock and recipe; built once, then cached."""
    base = images.rootfs_layer(BASE_PACKAGES)  # by name and time: a rebuilt base is new
    recipe = hashlib.sha256(f"{base.name} {base.stat().st_mtime_ns}".encode())
    sources = (
        Path(__file__),
        *(Path(str(m.__file__)) for m in (images, operator_image, rootfs, train)),
    )
    for path in (*sources, LOCK, *runtime_sources()):
        recipe.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    out = CACHE / f"mlserver-images-{recipe.hexdigest()[:12]}.tar"
    if not out.exists():
        started = time.monotonic()
        images.write_archive(out, build_images)
        size = out.stat().st_size / 2**20
        log(f"{IMAGE} images built in {time.monotonic() - started:.0f} s: {out} ({size:.0f} MiB)")
    return out


def main() -> int:
    """`python3 -m testbed.mlserver_image`: build the images (once) where that can be done,
    and print the archive's path; elsewhere say why not and build nothing."""
    try:
        preflight()
    except TestbedError as error:
        log(f"not building the MLServer images: {error}")
        return 0
    try:
        print(archive())
    except TestbedError as error:
        log(str(error))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
