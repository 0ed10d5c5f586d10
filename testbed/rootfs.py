"""An image's root filesystem run on this machine, without a container runtime (needs root).

What containerd does for a container, in small: each layer unpacked into its own folder,
the folders stacked with overlayfs (read-only unless a folder takes the writes), /proc,
a small /dev with a /dev/shm, a tmpfs at /tmp for scratch (a pod's emptyDir), then the
command run in it by chroot as the given user. Everything is mounted in a private mount
namespace and a new PID namespace (`unshare`): the command is PID 1 there, as in a
container, and the mounts go away with it. The network is the host's.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from testbed.processes import TestbedError

# Runs as PID 1 of the new namespaces, with: root, lower folders (top first, ':'-joined),
# upper and work folders ('' for a read-only root), user, then the command.
MOUNT_AND_RUN = r"""
set -eu
root=$1 lower=$2 upper=$3 work=$4 user=$5
shift 5
if [ -n "$upper" ]; then
    mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$root"
else
    mount -t overlay overlay -o "ro,lowerdir=$lower" "$root"
fi
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t tmpfs -o nosuid,mode=755 tmpfs "$root/dev"
for device in null zero full random urandom tty; do
    touch "$root/dev/$device"
    mount --bind "/dev/$device" "$root/dev/$device"
done
mkdir "$root/dev/shm"
mount -t tmpfs -o nosuid,nodev,mode=1777 shm "$root/dev/shm"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
mount -t tmpfs -o nosuid,nodev,mode=1777 scratch "$root/tmp"
exec chroot --userspec="$user" "$root" "$@"
"""


def unpack(layer: Path, into: Path) -> Path:
    """A layer tar unpacked into the folder `into` (made), owners and modes kept."""
    into.mkdir(parents=True)
    result = subprocess.run(
        ["tar", "--numeric-owner", "-C", str(into), "-xf", str(layer)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise TestbedError(f"unpacking {layer} failed: {result.stderr}")
    return into


def image_parts(archive: Path, name: str, into: Path) -> tuple[list[Path], dict[str, Any]]:
    """The image `name` of an OCI archive (images.write_archive): each of its layers
    unpacked into a folder of `into` named by digest (once; images share them), bottom
    first, and its config (Entrypoint, Env, User, WorkingDir)."""
    with tarfile.open(archive) as tar:

        def read(member: str) -> Any:
            data = tar.extractfile(member)
            if data is None:
                raise TestbedError(f"{archive} has no {member}")
            return json.load(data)

        def blob(digest: str) -> str:
            return f"blobs/sha256/{digest.removeprefix('sha256:')}"

        entries = read("index.json")["manifests"]
        found = [m for m in entries if m["annotations"]["io.containerd.image.name"] == name]
        if not found:
            raise TestbedError(f"{archive} has no image {name}")
        manifest = read(blob(found[0]["digest"]))
        config = read(blob(manifest["config"]["digest"]))["config"]
        folders = []
        for layer in manifest["layers"]:
            folder = into / layer["digest"].removeprefix("sha256:")
            if not folder.exists():
                member = tar.extractfile(blob(layer["digest"]))
                if member is None:
                    raise TestbedError(f"{archive} has no layer {layer['digest']}")
                partial = into / "layer.tar"
                with partial.open("wb") as out:
                    while chunk := member.read(1 << 20):
                        out.write(chunk)
                unpack(partial, folder)
                partial.unlink()
            folders.append(folder)
    return folders, config


def command(
    layers: list[Path],
    argv: list[str],
    mountpoint: Path,
    user: str,
    upper: Path | None = None,
) -> list[str]:
    """The command line that runs `argv` on `layers` (bottom first) stacked at the empty
    folder `mountpoint`, as `user` ("uid:gid"). Read-only unless `upper` is given: then
    writes land there (and its sibling `upper`.work is overlayfs's work folder). Its
    environment is the one it is started with: give it the image's."""
    if upper is None and len(layers) < 2:
        raise TestbedError("overlayfs stacks a read-only root from two folders or more")
    work = upper.with_name(f"{upper.name}.work") if upper is not None else None
    if work is not None:
        work.mkdir(exist_ok=True)
    return [
        *("unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child"),
        *("sh", "-c", MOUNT_AND_RUN, "rootfs"),
        str(mountpoint),
        ":".join(str(folder) for folder in reversed(layers)),
        "" if upper is None else str(upper),
        "" if work is None else str(work),
        user,
        *argv,
    ]
