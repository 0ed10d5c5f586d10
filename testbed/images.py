"""Container images for the real node, built without Docker or a registry.

A Debian root filesystem from debootstrap (built once, cached), the reference model
server (the modelserver package) and one model file per variant become plain tar
layers, assembled into one OCI image archive that `ctr images import` loads into
containerd. The pod sandbox ("pause") image comes from the small Go program build.sh
compiles.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from testbed.modelserver import train
from testbed.processes import CACHE, TestbedError, log

REGISTRY = "modeldeploy.local"
MODEL_SERVER = f"{REGISTRY}/fraud-server"
PAUSE = f"{REGISTRY}/pause:1"
SERVER_PACKAGE = Path(train.__file__).parent  # copied into the images as /srv/modelserver
SERVER_PORT = 8080

SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-prometheus-client")
# What a serving image never reads: package lists and caches, documentation, translations.
STRIPPED = (
    "var/cache/apt",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
)

# The model server's image variants, by tag: how each one's model file differs from
# the trained model. "corrupt" is the trained file cut in half (the server exits 1);
# "wronganswers" has the trained weights and bias negated (`reversed_model`).
VARIANTS: dict[str, dict[str, float]] = {
    "good": {},
    "corrupt": {},
    "slowload": {"load_seconds": 20},  # a slow model load that must not count as failure
    "memhog": {"load_megabytes": 512},  # OOMKilled under a memory limit below that
    "badanswers": {"error_rate": 0.5},  # Ready, but every other inference fails
    "wronganswers": {},  # loads, Ready, answers 200: every prediction reversed
}
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
FIXED_MTIME = 315532800  # 1980-01-01: layers we write are the same bytes on every build


def model_server_image(variant: str) -> str:
    return f"{MODEL_SERVER}:{variant}"


@dataclass(frozen=True)
class Blob:
    """A content-addressed file of the archive: layer, config or manifest."""

    digest: str  # "sha256:..."
    size: int
    path: Path

    def descriptor(self, media_type: str) -> dict[str, object]:
        return {"mediaType": media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Image:
    name: str
    layers: tuple[Blob, ...]
    entrypoint: tuple[str, ...]
    env: tuple[str, ...] = ()
    user: str = "65534:65534"


def architecture() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def blob_of(path: Path) -> Blob:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(1 << 20):
            digest.update(chunk)
    return Blob(f"sha256:{digest.hexdigest()}", path.stat().st_size, path)


def write_blob(folder: Path, data: bytes) -> Blob:
    path = folder / hashlib.sha256(data).hexdigest()
    path.write_bytes(data)
    return blob_of(path)


def files_layer(folder: Path, files: dict[str, tuple[bytes, int]]) -> Blob:
    """A layer holding `files` (path in the image -> content, mode), parents included."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        folders = sorted({str(p) for path in files for p in Path(path).parents if str(p) != "."})
        for name in folders:
            entry = tarfile.TarInfo(name)
            entry.type, entry.mode, entry.mtime = tarfile.DIRTYPE, 0o755, FIXED_MTIME
            tar.addfile(entry)
        for name, (content, mode) in sorted(files.items()):
            add_bytes(tar, name, content, mode)
    return write_blob(folder, buffer.getvalue())


def rootfs_layer(packages: tuple[str, ...] = PACKAGES) -> Path:
    """A Debian base layer (debootstrap minbase + `packages`), built once and cached."""
    recipe = json.dumps([SUITE, MIRROR, packages, STRIPPED, architecture()]).encode()
    layer = CACHE / f"rootfs-{SUITE}-{hashlib.sha256(recipe).hexdigest()[:12]}.tar"
    if layer.exists():
        return layer
    # realnode.preflight has checked for root and debootstrap.
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="rootfs-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        log(f"debootstrap {SUITE} with {', '.join(packages)} (once; about a minute) ...")
        result = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(packages)}",
                SUITE,
                str(rootfs),
                MIRROR,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise TestbedError(f"debootstrap failed:\n{result.stdout[-2000:]}{result.stderr}")
        for path in STRIPPED:
            shutil.rmtree(rootfs / path, ignore_errors=True)
        partial = Path(scratch) / "layer.tar"
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            for entry in sorted(rootfs.iterdir()):
                # The runtime mounts /dev, /proc and /sys; their contents stay out.
                recurse = entry.name not in ("dev", "proc", "sys")
                tar.add(entry, arcname=entry.name, recursive=recurse)
        partial.replace(layer)
    log(f"base layer built in {time.monotonic() - started:.0f} s: {layer}")
    return layer


def server_sources() -> list[Path]:
    return sorted(SERVER_PACKAGE.glob("*.py"))


def reversed_model(model: train.Model) -> train.Model:
    """The model with its weights and bias negated: a score p becomes 1 - p. Its own
    self-check expects the reversed verdict, as a badly trained model's own test would,
    so it loads and turns Ready; only an answer checked against the truth shows it."""
    check = model["self_check"]
    return {
        **model,
        "weights": [-w for w in model["weights"]],
        "bias": -model["bias"],
        "self_check": {**check, "expect_fraud": not check["expect_fraud"]},
    }


def model_file(variant: str, model: train.Model) -> bytes:
    if variant == "wronganswers":
        model = reversed_model(model)
    content = json.dumps({**model, **VARIANTS[variant]}, indent=2).encode()
    return content[: len(content) // 2] if variant == "corrupt" else content


def images(blobs: Path, pause_binary: Path) -> Iterator[Image]:
    base = blob_of(rootfs_layer())
    server = files_layer(
        blobs,
        {f"srv/modelserver/{path.name}": (path.read_bytes(), 0o644) for path in server_sources()},
    )
    model = train.trained_model()
    env = (
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONPATH=/srv",
        "PYTHONUNBUFFERED=1",
        "MODEL_URI=/models/model.json",
        f"PORT={SERVER_PORT}",
    )
    for variant in VARIANTS:
        weights = files_layer(blobs, {"models/model.json": (model_file(variant, model), 0o644)})
        yield Image(
            model_server_image(variant),
            (base, server, weights),
            ("/usr/bin/python3", "-m", "modelserver.server"),
            env,
        )
    pause = files_layer(blobs, {"pause": (pause_binary.read_bytes(), 0o755)})
    yield Image(PAUSE, (pause,), ("/pause",))


def manifest_of(blobs: Path, image: Image) -> tuple[Blob, Blob]:
    """The image's manifest and config blobs."""
    config = {
        "architecture": architecture(),
        "os": "linux",
        "config": {
            "Entrypoint": list(image.entrypoint),
            "Env": list(image.env),
            "User": image.user,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in image.layers]},
    }
    config_blob = write_blob(blobs, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_blob.descriptor(OCI_CONFIG),
        "layers": [layer.descriptor(OCI_LAYER) for layer in image.layers],
    }
    return write_blob(blobs, json.dumps(manifest, sort_keys=True).encode()), config_blob


def write_archive(out: Path, build: Callable[[Path], Iterable[Image]]) -> None:
    """The images `build` makes (its blobs in the folder it is given) in one OCI
    image-layout tar, each named for containerd."""
    with tempfile.TemporaryDirectory(dir=out.parent, prefix="images-") as scratch:
        blobs = Path(scratch)
        entries, contents = [], {}
        for image in build(blobs):
            manifest, config = manifest_of(blobs, image)
            for blob in (*image.layers, config, manifest):
                contents[blob.digest] = blob.path
            entry = manifest.descriptor(OCI_MANIFEST)
            entry["platform"] = {"architecture": architecture(), "os": "linux"}
            entry["annotations"] = {
                "io.containerd.image.name": image.name,
                "org.opencontainers.image.ref.name": image.name.rsplit(":", 1)[1],
            }
            entries.append(entry)
        index = {"schemaVersion": 2, "manifests": entries}
        partial = out.with_suffix(".partial")
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            add_bytes(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
            add_bytes(tar, "index.json", json.dumps(index).encode())
            for digest, path in sorted(contents.items()):
                tar.add(path, arcname=f"blobs/sha256/{digest.removeprefix('sha256:')}")
        partial.replace(out)


def add_bytes(tar: tarfile.TarFile, name: str, content: bytes, mode: int = 0o644) -> None:
    entry = tarfile.TarInfo(name)
    entry.size, entry.mode, entry.mtime = len(content), mode, FIXED_MTIME
    tar.addfile(entry, io.BytesIO(content))


def archive(pause_binary: Path) -> Path:
    """The images archive for this content of the server, models and pause, built once."""
    recipe = hashlib.sha256(pause_binary.read_bytes())
    for source in (Path(__file__), *server_sources()):
        recipe.update(source.read_bytes())
    out = CACHE / f"images-{recipe.hexdigest()[:12]}.tar"
    if not out.exists():
        started = time.monotonic()
        write_archive(out, lambda blobs: images(blobs, pause_binary))
        log(f"images archive built in {time.monotonic() - started:.0f} s: {out}")
    return out


def tree_layer(folder: Path, trees: dict[str, Path], files: dict[str, tuple[bytes, int]]) -> Blob:
    """A layer holding the folders `trees` (path in the image -> folder here) and `files`.

    Entries are sorted, owned by root, dated FIXED_MTIME, mode 0755 (folders and
    executables) or 0644: the same bytes whenever the content is the same.
    """
    entries: dict[str, Path | tuple[bytes, int] | None] = {}  # None: a folder
    for at, source in trees.items():
        for path in [source, *sorted(source.rglob("*"))]:
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                raise TestbedError(f"{path}: only folders and plain files go into a layer")
            relative = path.relative_to(source)
            entries[at if relative == Path(".") else f"{at}/{relative}"] = (
                None if path.is_dir() else path
            )
    entries.update(files)
    for name in list(entries):
        for parent in Path(name).parents:
            if str(parent) != ".":
                entries.setdefault(str(parent), None)
    partial = folder / "layer.partial"
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(entries.items()):
            if content is None:
                entry = tarfile.TarInfo(name)
                entry.type, entry.mode, entry.mtime = tarfile.DIRTYPE, 0o755, FIXED_MTIME
                tar.addfile(entry)
            elif isinstance(content, Path):
                executable = content.stat().st_mode & 0o111
                add_bytes(tar, name, content.read_bytes(), 0o755 if executable else 0o644)
            else:
                add_bytes(tar, name, *content)
    blob = blob_of(partial)
    path = partial.rename(folder / blob.digest.removeprefix("sha256:"))
    return Blob(blob.digest, blob.size, path)


def manifest_digests(archive: Path) -> dict[str, str]:
    """Each image of an archive `write_archive` wrote, by name: its manifest's digest."""
    with tarfile.open(archive) as tar:
        index = tar.extractfile("index.json")
        assert index is not None
        manifests = json.load(index)["manifests"]
    return {m["annotations"]["io.containerd.image.name"]: m["digest"] for m in manifests}
