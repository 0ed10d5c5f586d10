"""The API server's own record of a run: its audit log, read back as requests.

The benchmarks start the test bed's kube-apiserver with an audit log (the flags
`start_testbed` hands to `testbed.cluster.up`).
Every request is then written down by the server with microsecond times: who made
it (user agent), what (verb, resource, subresource, name) and, for pod status and
ModelDeployment writes, the body. That is the clock of the detect-to-revert figures
and the counter of the operator's requests; the observer's watches only cross-check.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import testbed.cluster
from testbed.processes import STATE, api, running_pid
from testbed.support import wait_for

AUDIT_LOG = STATE / "logs" / "audit.log"
POLICY_FILE = Path(tempfile.gettempdir()) / "modeldeploy-bench-audit-policy.json"
# Leases (kwok's node heartbeats) and discovery are noise. Pod status and ModelDeployment
# writes keep their bodies: which pod update first showed a failure, which patch reverted.
POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [
        {"level": "None", "resources": [{"group": "coordination.k8s.io", "resources": ["leases"]}]},
        {"level": "None", "nonResourceURLs": ["/*"]},
        {
            "level": "Request",
            "verbs": ["patch", "update"],
            "resources": [
                {"group": "", "resources": ["pods/status"]},
                {"group": "modeldeploy.io", "resources": ["modeldeployments"]},
            ],
        },
        {"level": "Metadata"},
    ],
}
AUDIT_FLAGS = (
    f"--audit-policy-file={POLICY_FILE}",
    f"--audit-log-path={AUDIT_LOG}",
    "--audit-log-format=json",
    "--audit-log-mode=batch",  # written from a buffer: requests never wait for the file
    "--audit-log-batch-max-wait=1s",
    # 0 is not "never rotate" but the 100 MB default: a 10-minute run crossed it and its
    # reader's mark pointed into a file that was gone. Rotate never, in practice.
    "--audit-log-maxsize=1000000",
)
BENCH_AGENT = "modeldeploy-bench"
# Who made a request, by the user agent's first word. The operator talks through kopf
# (watches, lists) and the Kubernetes client (writes, reads); the benchmarks name
# themselves, so the client's default agent is the operator's alone.
CLIENTS = {
    "kopf": "modeldeploy",
    "OpenAPI-Generator": "modeldeploy",
    BENCH_AGENT: "bench",
    "kubectl": "kubectl",
    "kube-controller-manager": "kube-controller-manager",
    "kube-scheduler": "kube-scheduler",
    "kwok": "kwok",
    "rollouts-controller": "argo-rollouts",
    "argo-rollouts": "argo-rollouts",
}


def audited() -> bool:
    """Whether the running test bed's API server writes our audit log."""
    pid = running_pid("kube-apiserver")
    if pid is None:
        return False
    return f"--audit-log-path={AUDIT_LOG}".encode() in Path(f"/proc/{pid}/cmdline").read_bytes()


def start_testbed() -> bool:
    """The test bed up with the audit log, unless one runs already; whether one did."""
    if testbed.cluster.is_up():
        return True
    # Outside the test bed's state folder, which a start empties; read once, at start.
    POLICY_FILE.write_text(json.dumps(POLICY))
    testbed.cluster.up(apiserver_flags=AUDIT_FLAGS)
    return False


@dataclass(frozen=True)
class Request:
    """One request as the API server recorded it when its response was complete."""

    at: float  # epoch seconds, the server's clock (stageTimestamp, microseconds)
    took_ms: float  # from the request's arrival to its response complete
    client: str
    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str
    code: int
    body: Any  # the request's body where the policy keeps it, else None

    @property
    def kind(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    @property
    def write(self) -> bool:
        return self.verb in {"create", "update", "patch", "delete", "deletecollection"}


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def client_of(agent: str) -> str:
    first = agent.split("/", 1)[0].split(" ", 1)[0]
    return CLIENTS.get(first, first or "unknown")


def parse(line: str) -> Request | None:
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None  # a line cut short at the end of the file: read again later
    ref = event.get("objectRef") or {}
    at = parse_time(event["stageTimestamp"])
    return Request(
        at=at,
        took_ms=(at - parse_time(event["requestReceivedTimestamp"])) * 1000,
        client=client_of(event.get("userAgent", "")),
        verb=event["verb"],
        resource=ref.get("resource", ""),
        subresource=ref.get("subresource", ""),
        namespace=ref.get("namespace", ""),
        name=ref.get("name", ""),
        code=int((event.get("responseStatus") or {}).get("code", 0)),
        body=event.get("requestObject"),
    )


class AuditLog:
    """The audit log from a mark on: `mark()` now, `since(mark)` the requests after it."""

    def __init__(self, path: Path = AUDIT_LOG) -> None:
        self.path = path

    def mark(self) -> int:
        self.flush()
        return self.path.stat().st_size

    def flush(self) -> None:
        """Wait until what the server did so far is in the file.

        A request for an object that does not exist, under a fresh name, is
        recorded after everything before it (the batches keep order).
        """
        marker = f"bench-flush-{uuid.uuid4().hex[:10]}"
        with contextlib.suppress(OSError):  # 404, as intended
            api("GET", f"/api/v1/namespaces/default/configmaps/{marker}")
        wait_for(lambda: self._contains(marker), 30, "the audit log to be written")

    def _contains(self, text: str) -> bool:
        with self.path.open("rb") as log:
            log.seek(max(0, self.path.stat().st_size - 256 * 1024))
            return text.encode() in log.read()

    def since(self, mark: int, namespaces: Iterable[str] | None = None) -> list[Request]:
        """The requests recorded after `mark` (in `namespaces` if given), flushed first."""
        self.flush()
        wanted = set(namespaces) if namespaces is not None else None
        return [
            r
            for r in self._read(mark)
            if r is not None and (wanted is None or r.namespace in wanted)
        ]

    def _read(self, mark: int) -> Iterator[Request | None]:
        with self.path.open("rb") as log:
            log.seek(mark)
            for line in log:
                yield parse(line.decode())


def count(requests: Iterable[Request], client: str, per: int = 1) -> dict[str, float]:
    """`client`'s requests by "verb kind" (e.g. "patch deployments"), divided by `per`."""
    counted = Counter(f"{r.verb} {r.kind}" for r in requests if r.client == client)
    return {key: round(n / per, 3) for key, n in sorted(counted.items())}


def writes(requests: Iterable[Request], client: str) -> int:
    return sum(1 for r in requests if r.client == client and r.write)
