"""The test bed's processes and state: where they live, how they start, wait and stop.

Every component runs in its own session with its pid and log under the state folder
(`.cluster/` by default), so `down` stops exactly what `up` started. Also the admin
client for the API server, which the start-up steps use before any venv exists.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from testbed.support import WaitTimeout, wait_for

ROOT = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("MODELDEPLOY_CLUSTER_DIR", ROOT / ".cluster"))
CACHE = Path(os.environ.get("MODELDEPLOY_CACHE", Path.home() / ".cache" / "modeldeploy"))
KUBECONFIG = STATE / "kubeconfig"
TOKEN = "modeldeploy-testbed-admin"  # loopback-only cluster
START_TIMEOUT_S = 90
_started: dict[str, subprocess.Popen[bytes]] = {}  # what this process started, by name


class TestbedError(Exception):
    """A component failed to build, start or become ready."""


def log(message: str) -> None:
    print(f"testbed: {message}", file=sys.stderr, flush=True)


def pid_file(name: str) -> Path:
    return STATE / "pids" / f"{name}.pid"


def log_file(name: str) -> Path:
    return STATE / "logs" / f"{name}.log"


def log_tail(name: str, lines: int = 25) -> str:
    try:
        return "\n".join(log_file(name).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def running_pid(name: str) -> int | None:
    """The pid of our component `name` if it is alive and still the process we started."""
    try:
        pid = int(pid_file(name).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid if str(STATE).encode() in cmdline else None


def start(name: str, argv: list[str], cwd: Path | None = None) -> None:
    with log_file(name).open("wb") as out:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file(name).write_text(str(process.pid))
    _started[name] = process


def alive(name: str) -> bool:
    # A process we just forked may not have exec'd yet, so ask Popen first.
    if name in _started:
        return _started[name].poll() is None
    return running_pid(name) is not None


def stop(name: str, grace_s: float = 10) -> bool:
    """Stop component `name` and its session (SIGTERM, then SIGKILL); False if not running."""
    pid = running_pid(name)
    if pid is not None:
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while running_pid(name) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if running_pid(name) is not None:
            os.killpg(pid, signal.SIGKILL)
    pid_file(name).unlink(missing_ok=True)
    process = _started.pop(name, None)
    if process is not None:  # our own child: reap it
        process.wait(timeout=grace_s)
    return pid is not None


def wait_for_component(
    what: str, check: Callable[[], bool], component: str, timeout: float
) -> None:
    """Poll `check` while `component` runs; if it exits or time runs out, TestbedError."""

    def ready() -> bool:
        if not alive(component):
            raise TestbedError(
                f"{component} exited while waiting for {what}:\n{log_tail(component)}"
            )
        return check()

    try:
        wait_for(ready, timeout, what, tolerate=(OSError, ValueError))  # not answering yet
    except WaitTimeout as error:
        raise TestbedError(f"{error}\n{log_tail(component)}") from None


def server() -> str:
    return str(json.loads((STATE / "endpoint.json").read_text())["server"])


def api(method: str, path: str, body: object | None = None) -> object:
    """One request to the API server as the test bed's admin; the decoded JSON answer."""
    return json.loads(admin_request(method, path, body, timeout=10)[1] or b"null")


def api_ready() -> bool:
    return admin_request("GET", "/readyz", None, timeout=2)[0] == 200


def admin_request(method: str, path: str, body: object | None, timeout: float) -> tuple[int, bytes]:
    """The status and body of one request to the API server as the test bed's admin."""
    context = ssl.create_default_context(cafile=str(STATE / "certs" / "apiserver.crt"))
    content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
    request = urllib.request.Request(
        server() + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type},
    )
    with urllib.request.urlopen(request, context=context, timeout=timeout) as response:
        return int(response.status), response.read()


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


def write_kubeconfig(path: Path, user: str, token: str) -> None:
    """A kubeconfig for the test bed's API server, authenticating with `token`."""
    ca = STATE / "certs" / "apiserver.crt"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "modeldeploy-testbed",
                "clusters": [
                    {
                        "name": "modeldeploy-testbed",
                        "cluster": {"server": server(), "certificate-authority": str(ca)},
                    }
                ],
                "users": [{"name": user, "user": {"token": token}}],
                "contexts": [
                    {
                        "name": "modeldeploy-testbed",
                        "context": {"cluster": "modeldeploy-testbed", "user": user},
                    }
                ],
            },
            indent=2,
        )
    )
