"""Inference requests to the reference model server, as the demo and the tests send them.

`InferenceLoad` sends one request after another through a Service while a version
rolls out: every answer names the version that served it, so its counts per version
and its failures say whether serving stayed whole. Standard library only.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from testbed.support import Background

# A large night-time purchase far from home: the model's self-check, scored as fraud.
PROBE = {"inputs": [{"name": "features", "datatype": "FP64", "shape": [1, 3], "data": [3, 1, 2.5]}]}


def infer(url: str, timeout: float = 3) -> tuple[int, dict[str, Any]]:
    """One inference request with PROBE: the HTTP status (0 if none came) and the answer."""
    # JSON said so: MLServer refuses urllib's default form content type (422).
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=json.dumps(PROBE).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), dict(json.loads(response.read()))
    except urllib.error.HTTPError as error:
        return error.code, {}
    except (urllib.error.URLError, OSError):
        return 0, {}


class InferenceLoad(Background):
    """Inference requests to `url`, one after another, for the length of a `with` block."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.answered: dict[str, int] = {}  # model version -> requests it answered
        self.failures: list[str] = []
        # (monotonic time the answer came, the version that answered or "" if none did)
        self.timeline: list[tuple[float, str]] = []

    def _run(self) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            status, answer = infer(self.url)
            if status == 200:
                version = answer["model_version"]
                self.answered[version] = self.answered.get(version, 0) + 1
            else:
                version = ""
                self.failures.append(f"{time.monotonic() - started:.2f}s: status {status}")
            self.timeline.append((time.monotonic(), version))
            self._stopping.wait(0.02)

    @property
    def requests(self) -> int:
        return sum(self.answered.values()) + len(self.failures)

    def answers_after(self, version: str, since: float) -> list[float]:
        """When `version` answered after `since` (monotonic times)."""
        return [at for at, answered in self.timeline if answered == version and at > since]


class LongRequests(Background):
    """Long inference requests to `url` (the slowinfer image takes about 10 s each), a new
    one started every `every` seconds whatever the others do, so many are in flight at
    any moment: what a roll must not cut. `finish` stops starting them and waits for the
    last answers."""

    def __init__(self, url: str, every: float = 0.5, timeout: float = 60) -> None:
        super().__init__()
        self.url, self.every, self.timeout = url, every, timeout
        self.answered: dict[str, int] = {}  # model version -> requests it answered
        self.failures: list[str] = []
        self.longest = 0.0  # seconds, the slowest answer
        self._lock = threading.Lock()
        self._sent: list[threading.Thread] = []

    def _run(self) -> None:
        while not self._stopping.is_set():
            sent = threading.Thread(target=self._one, daemon=True)
            sent.start()
            self._sent.append(sent)
            self._stopping.wait(self.every)

    def _one(self) -> None:
        started = time.monotonic()
        status, answer = infer(self.url, timeout=self.timeout)
        took = time.monotonic() - started
        with self._lock:
            self.longest = max(self.longest, took)
            if status == 200:
                version = answer["model_version"]
                self.answered[version] = self.answered.get(version, 0) + 1
            else:
                self.failures.append(f"{took:.2f}s after it was sent: status {status}")

    def finish(self) -> None:
        """Start no more requests; wait for every one sent to end (answered or not)."""
        self._stop()
        for sent in list(self._sent):
            sent.join(self.timeout + 5)

    @property
    def requests(self) -> int:
        """Requests ended so far."""
        with self._lock:
            return sum(self.answered.values()) + len(self.failures)

    @property
    def in_flight(self) -> int:
        return sum(1 for sent in self._sent if sent.is_alive())
