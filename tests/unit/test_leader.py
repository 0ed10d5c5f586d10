"""Leader election by client-go's rules: expiry by the local clock, the fence, release.

The Lease here is an in-memory one with the API server's optimistic concurrency
(a write at a stale resourceVersion is refused); tests/e2e/test_leadership.py runs
the same election against the real API server.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeldeploy.leader import Elector, Timing, claim, micro_time
from tests.unit.leases import Clock, MemoryLease

TIMING = Timing(lease_duration=15, renew_deadline=10, retry_period=2)
WALL = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


def elector(lease: MemoryLease, clock: Clock, name: str) -> Elector:
    return Elector(lease, name, TIMING, clock=clock, wall=lambda: WALL)


@pytest.mark.parametrize(
    ("duration", "deadline", "retry"),
    [(10, 10, 2), (15, 2, 2), (15, 10, 0), (5, 10, 2), (15, 10, 12)],
)
def test_timing_must_order_duration_deadline_retry(
    duration: float, deadline: float, retry: float
) -> None:
    with pytest.raises(ValueError, match="lease duration > renew deadline > retry period"):
        Timing(lease_duration=duration, renew_deadline=deadline, retry_period=retry)


def test_the_first_comer_creates_the_lease_and_may_write_until_the_renew_deadline() -> None:
    lease, clock = MemoryLease(), Clock()
    a = elector(lease, clock, "a")
    assert not a.may_write()
    assert a.try_acquire_or_renew()
    assert lease.spec is not None
    assert lease.spec["holderIdentity"] == "a"
    assert lease.spec["leaseDurationSeconds"] == 15
    assert lease.spec["leaseTransitions"] == 0
    clock.now += 9.9
    assert a.may_write()
    clock.now += 0.2  # 10.1 s after the renewal was sent: fenced, renewed or not
    assert not a.may_write()


def test_a_renewal_keeps_acquire_time_and_transitions() -> None:
    lease, clock = MemoryLease(), Clock()
    a = elector(lease, clock, "a")
    a.try_acquire_or_renew()
    assert lease.spec is not None
    acquired = lease.spec["acquireTime"]
    clock.now += 2
    later = datetime(2026, 11, 23, 12, 0, 2, tzinfo=UTC)
    renewed = claim("a", TIMING, lease.spec, later)
    assert renewed["acquireTime"] == acquired
    assert renewed["renewTime"] == micro_time(later) == "2026-11-23T12:00:02.000000Z"
    assert renewed["leaseTransitions"] == 0


def test_a_follower_waits_a_full_duration_from_the_last_change_it_saw() -> None:
    lease, clock = MemoryLease(), Clock()
    a, b = elector(lease, clock, "a"), elector(lease, clock, "b")
    a.try_acquire_or_renew()
    for _ in range(20):  # a renews every 2 s; b never gets it
        clock.now += 2
        assert not b.try_acquire_or_renew()
        assert a.try_acquire_or_renew()
    assert not b.may_write()
    # a stops renewing (killed). b saw the last change at its next read, not before:
    clock.now += 2
    assert not b.try_acquire_or_renew()
    clock.now += 14.9
    assert not b.try_acquire_or_renew()
    assert not a.may_write()  # long fenced by now
    clock.now += 0.2
    assert b.try_acquire_or_renew()
    assert b.may_write()
    assert lease.spec is not None
    assert (lease.spec["holderIdentity"], lease.spec["leaseTransitions"]) == ("b", 1)


def test_a_follower_tries_again_right_when_the_lease_it_watches_expires() -> None:
    lease, clock = MemoryLease(), Clock()
    a, b = elector(lease, clock, "a"), elector(lease, clock, "b")
    a.try_acquire_or_renew()
    began = clock.now
    assert not b.try_acquire_or_renew()  # b sees a's Lease now: it expires in 15 s
    assert b.pause(began) == pytest.approx(2.0)  # a retry period: sooner than the expiry
    clock.now += 14.5
    began = clock.now
    assert not b.try_acquire_or_renew()
    assert b.pause(began) == pytest.approx(0.51)  # not the full 2 s: just past the expiry
    clock.now += b.pause(began)
    assert b.try_acquire_or_renew()
    assert a.pause(clock.now - 5) == 0.0  # its attempt is overdue: at once


def test_expiry_is_judged_by_the_local_clock_not_the_lease_times() -> None:
    lease, clock = MemoryLease(), Clock()
    stale = claim("a", TIMING, None, datetime(2020, 1, 1, tzinfo=UTC))  # renewTime long ago
    lease.create(stale, 1.0)
    b = elector(lease, clock, "b")
    assert not b.try_acquire_or_renew()  # first sight: a holds it for 15 s from now
    clock.now += 15.1
    assert b.try_acquire_or_renew()


def test_a_leader_that_finds_another_holder_stops_writing_at_once() -> None:
    lease, clock = MemoryLease(), Clock()
    a, b = elector(lease, clock, "a"), elector(lease, clock, "b")
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    clock.now += 16  # a was stopped (SIGSTOP) past the lease; b takes it
    assert b.try_acquire_or_renew()
    assert not a.may_write()
    assert not a.try_acquire_or_renew()  # a is back: it sees b and does not write
    assert not a.may_write()
    assert lease.spec is not None
    assert lease.spec["holderIdentity"] == "b"


def test_release_clears_the_holder_and_a_follower_takes_over_at_once() -> None:
    lease, clock = MemoryLease(), Clock()
    a, b = elector(lease, clock, "a"), elector(lease, clock, "b")
    a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert a.release()
    assert not a.may_write()
    assert lease.spec is not None
    assert (lease.spec["holderIdentity"], lease.spec["leaseDurationSeconds"]) == ("", 1)
    assert b.try_acquire_or_renew()  # no wait: nobody holds it
    assert not a.release()  # it no longer holds the Lease: nothing to give


def test_an_unreachable_api_server_fences_the_leader_after_the_renew_deadline() -> None:
    lease, clock = MemoryLease(), Clock()
    a = elector(lease, clock, "a")
    a.try_acquire_or_renew()
    lease.unreachable = True
    clock.now += 5
    with pytest.raises(ConnectionError):
        a.try_acquire_or_renew()
    assert a.may_write()
    clock.now += 5
    assert not a.may_write()
    lease.unreachable = False
    assert a.try_acquire_or_renew()  # still its own Lease: it leads again
    assert a.may_write()


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 9.9, 10.0, 14.9, 15.0, 15.1]),
            st.booleans(),  # the attempt reaches the API server
            st.sampled_from([None, 1.0, TIMING.write_deadline]),  # then a write this long
        ),
        min_size=1,
        max_size=30,
    )
)
def test_never_two_processes_may_write_at_once(
    attempts: list[tuple[str, float, bool, float | None]],
) -> None:
    """A write is sent while its process may write and lands up to the write deadline
    later; no other process may write before it landed. Writes take time: a fence that
    closed at the lease duration instead of the renew deadline would let one land after
    a follower took over."""
    lease, clock = MemoryLease(), Clock()
    electors = {name: elector(lease, clock, name) for name in "ab"}
    landing: list[tuple[str, float]] = []  # writes in flight: who, and when they land
    for name, pause, reachable, write_s in attempts:
        clock.now += pause
        landing = [(who, at) for who, at in landing if at >= clock.now]
        lease.unreachable = not reachable
        with contextlib.suppress(ConnectionError):
            electors[name].try_acquire_or_renew()
        writers = [n for n, e in electors.items() if e.may_write()]
        assert len(writers) <= 1, (writers, clock.now)
        for who, _ in landing:
            assert all(w == who for w in writers), (who, writers, clock.now)
        if write_s is not None and electors[name].may_write():
            assert write_s <= TIMING.write_deadline
            landing.append((name, clock.now + write_s))


def test_a_write_sent_just_before_the_fence_closes_lands_before_a_follower_leads() -> None:
    """The fence's margin, step by step: the leader stops renewing and writes while it
    may, each write taking the whole write deadline; the follower tries all the while."""
    lease, clock = MemoryLease(), Clock()
    a, b = elector(lease, clock, "a"), elector(lease, clock, "b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    last_landing = 0.0
    while not b.may_write():
        clock.now += 0.1
        if a.may_write():
            last_landing = clock.now + TIMING.write_deadline
        b.try_acquire_or_renew()
    assert clock.now > last_landing


def test_run_calls_back_on_leading_on_recovery_and_on_losing() -> None:
    lease = MemoryLease()
    fast = Timing(lease_duration=0.6, renew_deadline=0.4, retry_period=0.05)
    events: list[str] = []

    async def scenario() -> None:
        a = Elector(lease, "a", fast)
        task = asyncio.create_task(
            a.run(lambda: events.append("lead"), lambda: events.append("follow"))
        )
        await until(lambda: events == ["lead"])
        lease.unreachable = True  # shorter than the renew deadline: still leading, then catch up
        await asyncio.sleep(0.1)
        lease.unreachable = False
        await until(lambda: events == ["lead", "lead"])
        lease.unreachable = True  # past the renew deadline: following
        await until(lambda: events == ["lead", "lead", "follow"])
        assert not a.may_write()
        task.cancel()
        a.close()

    asyncio.run(scenario())


async def until(predicate: object, timeout: float = 10.0) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)
