"""Outages of the test bed's control plane, for tests: the API server down, etcd compacted.

The API server is killed and started again with the very arguments it ran with;
etcd's history is compacted through its own HTTP gateway, so a watch that comes
back with an old resourceVersion gets 410 Gone. Both leave the test bed as they
found it: `wait_recovered` waits until its controllers work again.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from testbed import support
from testbed.cluster import default_service_account_exists
from tests.e2e.helpers import Kube


def _argv(testbed: Any, component: str) -> list[str]:
    pid = testbed.running_pid(component)
    assert pid is not None, f"{component} is not running"
    return [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]


def kill_api_server(testbed: Any) -> list[str]:
    """SIGKILL the API server (a crash, not a graceful stop); its command line, to restart it."""
    argv = _argv(testbed, "kube-apiserver")
    pid = testbed.running_pid("kube-apiserver")
    os.killpg(pid, signal.SIGKILL)
    testbed.stop("kube-apiserver")  # reaps it and forgets its pid file
    return argv


def start_api_server(testbed: Any, argv: list[str]) -> None:
    testbed.start("kube-apiserver", argv)


def answering(testbed: Any, path: str) -> bool:
    """The API server answered one ordinary read (a fresh connection each time)."""
    try:
        testbed.api("GET", path)
    except (OSError, ValueError):
        return False
    return True


def etcd_url(testbed: Any) -> str:
    flag = next(a for a in _argv(testbed, "etcd") if a.startswith("--listen-client-urls="))
    return flag.split("=", 1)[1].split(",")[0]


def compact_etcd(testbed: Any) -> int:
    """Compact etcd's history up to now: no watch can resume from before this revision."""
    url = etcd_url(testbed)

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    head = post("/v3/kv/range", {"key": base64.b64encode(b"\0").decode(), "limit": 1})
    revision = int(head["header"]["revision"])
    post("/v3/kv/compaction", {"revision": str(revision), "physical": True})
    return revision


def wait_recovered(kube: Kube, timeout: float = 180) -> None:
    """After an API server restart the controllers' watches back off for a while: wait until a
    new namespace gets its ServiceAccount again, so the next test starts on a working bed."""
    name = f"recovery-{uuid.uuid4().hex[:6]}"
    kube.core.create_namespace({"metadata": {"name": name}})
    try:
        support.wait_for(
            lambda: default_service_account_exists(name),
            timeout,
            "the bed to recover",
            tolerate=(OSError,),  # 404 until the ServiceAccount exists, refusals while starting
        )
    finally:
        kube.core.delete_namespace(name)
