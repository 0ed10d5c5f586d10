"""Stand-ins for leader election's unit tests: a Lease with the API server's optimistic
concurrency, and a clock only the test moves."""

from __future__ import annotations

import copy

from modeldeploy.model.spec import JSON


class MemoryLease:
    """One Lease: a write must name the current resourceVersion, as the API server demands."""

    def __init__(self) -> None:
        self.version = 0
        self.spec: JSON | None = None
        self.unreachable = False

    def read(self, timeout: float) -> tuple[str, JSON] | None:
        if self.unreachable:
            raise ConnectionError("API server unreachable")
        return None if self.spec is None else (str(self.version), copy.deepcopy(self.spec))

    def create(self, spec: JSON, timeout: float) -> str | None:
        if self.spec is not None:
            return None
        return self._store(spec)

    def replace(self, resource_version: str, spec: JSON, timeout: float) -> str | None:
        if self.unreachable:
            raise ConnectionError("API server unreachable")
        if self.spec is None or resource_version != str(self.version):
            return None
        return self._store(spec)

    def _store(self, spec: JSON) -> str:
        self.spec = copy.deepcopy(spec)
        self.version += 1
        return str(self.version)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
