"""Leader election on a coordination.k8s.io/v1 Lease, by client-go's rules.

Beside the kube layer, below the runtime: `Elector.run` acquires and renews one
Lease through `Leases` (kube.KubeLeases against the API server) and tells the
runtime when this process starts or stops leading; `may_write` is the fence that
every write checks, true only until the renew deadline after the last renewal.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from modeldeploy.model.spec import JSON

logger = logging.getLogger(__name__)

DEFAULT_LEASE_NAME = "modeldeploy-operator"
EXPIRY_MARGIN_S = 0.01  # try just after the expiry, not on it


class Leases(Protocol):
    """One Lease object on the API server (modeldeploy.kube.KubeLeases). Each call is one
    request, never retried, that ends within `timeout` seconds or raises."""

    def read(self, timeout: float) -> tuple[str, JSON] | None:
        """(resourceVersion, spec), or None when there is no Lease yet."""

    def create(self, spec: JSON, timeout: float) -> str | None:
        """The new resourceVersion, or None when another process created it first."""

    def replace(self, resource_version: str, spec: JSON, timeout: float) -> str | None:
        """The new resourceVersion, or None when the Lease is no longer at that version."""


@dataclass(frozen=True)
class Timing:
    """client-go's three durations, in seconds; the flags set them."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ValueError(
                "leader election needs lease duration > renew deadline > retry period > 0, "
                f"not {self.lease_duration:g}s, {self.renew_deadline:g}s, {self.retry_period:g}s"
            )

    @property
    def attempt_deadline(self) -> float:
        """One attempt to acquire or renew (a read and a write) ends within this: two
        attempts fit in the renew deadline."""
        return self.renew_deadline / 2

    @property
    def write_deadline(self) -> float:
        """The longest a fenced write may take, sent to last byte: one sent just before the
        renew deadline still ends before the lease duration, the soonest another process
        can lead. The fence's safety margin."""
        return self.lease_duration - self.renew_deadline


def new_identity() -> str:
    """This process's holderIdentity: the host (the pod's name in a pod) and a random suffix."""
    return f"{socket.gethostname()}_{secrets.token_hex(4)}"


def micro_time(at: datetime) -> str:
    """A Lease's MicroTime (RFC 3339 with microseconds)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Sighting:
    """A Lease record as this process saw it, dated by the local clock (never by its times)."""

    resource_version: str
    holder: str
    duration: float
    seen_at: float  # monotonic time this resourceVersion was first seen here

    def held_by_another(self, identity: str, now: float) -> bool:
        """Someone else holds it and has renewed it within its duration, as far as we can tell."""
        return bool(self.holder) and self.holder != identity and now < self.seen_at + self.duration


def sighting(resource_version: str, spec: JSON, seen_at: float) -> Sighting:
    return Sighting(
        resource_version=resource_version,
        holder=str(spec.get("holderIdentity") or ""),
        duration=float(spec.get("leaseDurationSeconds") or 0),
        seen_at=seen_at,
    )


def claim(identity: str, timing: Timing, previous: JSON | None, now: datetime) -> JSON:
    """The spec we write to acquire or renew: a renewal keeps acquireTime and transitions."""
    stamp = micro_time(now)
    transitions = int((previous or {}).get("leaseTransitions") or 0)
    renewing = previous is not None and previous.get("holderIdentity") == identity
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": math.ceil(timing.lease_duration),
        "acquireTime": (previous or {}).get("acquireTime") if renewing else stamp,
        "renewTime": stamp,
        "leaseTransitions": transitions if renewing or previous is None else transitions + 1,
    }


def release_spec(previous: JSON, now: datetime) -> JSON:
    """client-go's ReleaseOnCancel: no holder and a 1 s duration, so a follower takes it at once."""
    stamp = micro_time(now)
    return {
        "holderIdentity": "",
        "leaseDurationSeconds": 1,
        "acquireTime": stamp,
        "renewTime": stamp,
        "leaseTransitions": int(previous.get("leaseTransitions") or 0),
    }


def brief(error: Exception) -> str:
    """One line about a failed call: its HTTP status if it had one, else its first line."""
    status = getattr(error, "status", None)
    if status is not None:
        return f"HTTP {status} {getattr(error, 'reason', '')}".rstrip()
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


class Elector:
    """Acquires, renews and releases the Lease; `may_write` fences every write."""

    def __init__(
        self,
        leases: Leases,
        identity: str,
        timing: Timing,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.leases = leases
        self.identity = identity
        self.timing = timing
        self._clock = clock
        self._wall = wall
        self._renewed_at: float | None = None  # when the last successful renewal was sent
        self._seen: Sighting | None = None
        self._written: JSON | None = None  # the spec of our last successful write
        self._leading = False  # what `run` last told: leading() or following()
        self._failed = False  # the last attempt failed
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lease")

    def may_write(self) -> bool:
        """True only until the renew deadline after the last renewal: a follower can take the
        Lease no sooner than its duration after seeing that renewal, later than this."""
        renewed = self._renewed_at
        return renewed is not None and self._clock() < renewed + self.timing.renew_deadline

    def try_acquire_or_renew(self) -> bool:
        """One attempt (blocking: API calls), ending within the attempt deadline; True when
        we hold the Lease afresh. Its time is when it was sent: a success that comes
        late opens the fence only for what is left of the renew deadline from then."""
        sent = self._clock()
        ends = sent + self.timing.attempt_deadline
        current = self.leases.read(self._left(ends))
        if current is None:
            spec = claim(self.identity, self.timing, None, self._wall())
            return self._won(sent, spec, self.leases.create(spec, self._left(ends)))
        version, previous = current
        if self._seen is None or self._seen.resource_version != version:
            self._seen = sighting(version, previous, self._clock())
        if self._seen.held_by_another(self.identity, self._clock()):
            self._renewed_at = None  # someone else leads: not one more write from us
            return False
        spec = claim(self.identity, self.timing, previous, self._wall())
        return self._won(sent, spec, self.leases.replace(version, spec, self._left(ends)))

    def _left(self, ends: float) -> float:
        left = ends - self._clock()
        if left <= 0:
            raise TimeoutError("the attempt's deadline passed")
        return left

    def _won(self, sent: float, spec: JSON, version: str | None) -> bool:
        if version is None:
            return False  # another process wrote first; the next attempt reads it
        self._seen = sighting(version, spec, self._clock())
        self._written = spec
        self._renewed_at = sent
        return True

    def release(self) -> bool:
        """Stop writing, then hand the Lease over if we still hold it (blocking: one API call)."""
        self._renewed_at = None
        seen, written = self._seen, self._written
        if seen is None or written is None or seen.holder != self.identity:
            return False
        spec = release_spec(written, self._wall())
        replaced = self.leases.replace(seen.resource_version, spec, self.timing.attempt_deadline)
        return replaced is not None

    async def resign(self) -> bool:
        """`release` on the Lease's own thread, after any renewal still in flight."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.release)

    async def run(self, leading: Callable[[], None], following: Callable[[], None]) -> None:
        """Try every retry period, forever (`once`)."""
        while True:
            began = self._clock()
            await self.once(leading, following)
            await asyncio.sleep(self.pause(began))

    async def once(self, leading: Callable[[], None], following: Callable[[], None]) -> None:
        """One attempt, then what it means: `leading()` when this process may write and
        did not before the attempt, or after failed attempts (the API server may have
        been away: catch up); `following()` when it may no longer write. The fence
        (`may_write`) itself never waits for this: every write asks it."""
        before = self.may_write() and self._leading
        try:
            won = await asyncio.get_running_loop().run_in_executor(
                self._pool, self.try_acquire_or_renew
            )
        except Exception as error:  # an unreachable or refusing API server: try again
            logger.warning(
                "leader election: %s could not reach the lease: %s", self.identity, brief(error)
            )
            won = False
        if won and self.may_write() and (not before or self._failed):
            if not self._leading:
                logger.info("leader election: %s leads", self.identity)
            self._leading = True
            leading()
        elif self._leading and not self.may_write():
            self._leading = False
            logger.warning("leader election: %s lost the lease; following", self.identity)
            following()
        self._failed = not won

    def pause(self, began: float) -> float:
        """Until the next attempt: a retry period after the last one began, or sooner, right
        after the Lease we watch expires, so a takeover waits the duration, not one tick more."""
        now = self._clock()
        pause = max(0.0, began + self.timing.retry_period - now)
        seen = self._seen
        if seen is not None and seen.held_by_another(self.identity, now):
            pause = min(pause, seen.seen_at + seen.duration - now + EXPIRY_MARGIN_S)
        return pause

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
