"""Leadership and the work queue together: the real `Elector`, `WorkQueue` and
`Controller`, over a Lease whose every call the test answers, with a clock only the
test moves.

What must hold whatever the order of renewals (fast, slow, failed, late), fenced
writes and time: a key is handed to a reconcile only while this process may write;
and a leader that may write does its work, never a queue paused for good behind a
renewal that came back late (docs/operations.md, leader election).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeldeploy.caches import Caches
from modeldeploy.controller import Controller, Stalled
from modeldeploy.kube import Fenced
from modeldeploy.leader import Elector, Timing
from modeldeploy.model.spec import JSON
from modeldeploy.ports import Identity, Key
from tests.unit.leases import Clock, MemoryLease

TIMING = Timing(lease_duration=15, renew_deadline=10, retry_period=2)


@dataclass
class Call:
    """A Lease call the lease thread is blocked in, until the test answers it."""

    timeout: float
    answered: threading.Event = field(default_factory=threading.Event)
    fail: bool = False


class AnsweredLease:
    """A MemoryLease each of whose calls waits for the test's answer (its latency, on the
    test's clock, and whether it reaches the API server). A call given `timeout` fails
    once that much time passed, as the client's own deadline makes it."""

    def __init__(self) -> None:
        self.lease = MemoryLease()
        self.waiting: Call | None = None
        self.arrived = threading.Event()
        self.at_once = False  # answer every call at once (the end of a scenario)

    def _call(self, timeout: float, act: Callable[[], object]) -> object:
        if self.at_once:
            return act()
        call = Call(timeout)
        self.waiting = call
        self.arrived.set()
        call.answered.wait(30)
        if call.fail:
            raise ConnectionError("no answer within the deadline")
        return act()

    def read(self, timeout: float) -> tuple[str, JSON] | None:
        return self._call(timeout, lambda: self.lease.read(timeout))  # type: ignore[return-value]

    def create(self, spec: JSON, timeout: float) -> str | None:
        return self._call(timeout, lambda: self.lease.create(spec, timeout))  # type: ignore[return-value]

    def replace(self, version: str, spec: JSON, timeout: float) -> str | None:
        return self._call(timeout, lambda: self.lease.replace(version, spec, timeout))  # type: ignore[return-value]


class Driven(Elector):
    """The real Elector, attempts driven by the test (`once`) instead of its own loop."""

    async def run(self, leading: Callable[[], None], following: Callable[[], None]) -> None:
        await asyncio.Event().wait()


class Bed:
    def __init__(self) -> None:
        self.clock = Clock()
        self.answered = AnsweredLease()
        self.elector = Driven(self.answered, "a", TIMING, clock=self.clock)
        self.handed: list[tuple[Key, bool]] = []  # each key handed out, and may_write then
        self.fenced = 0  # keys handed out while this process may not write

        async def reconcile(key: Key) -> float | None:
            writable = self.elector.may_write()  # as the hand-out found it
            await asyncio.sleep(0)  # a real reconcile waits for its thread
            if not writable:
                self.fenced += 1
                raise Fenced("not the leader")
            self.handed.append((key, True))
            return None

        async def nobody(kind: str) -> set[Identity]:
            return set()

        self.controller = Controller(Caches.empty(), reconcile, nobody, elector=self.elector)

    async def until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        """Real time for the workers (threads, a loaded machine), never the test clock."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not done() and asyncio.get_running_loop().time() < deadline:
            await self.settle()

    async def settle(self) -> None:
        for _ in range(20):
            await asyncio.sleep(0)
        await asyncio.sleep(0.005)
        # A key handed out while fenced ends the scenario at once (the fence refuses it,
        # and a gate that lets it through hands it out again and again).
        assert not self.fenced, "a key was handed out while this process may not write"

    async def attempt(
        self,
        latency: float,
        reaches: bool,
        during: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """One renewal whose calls each take `latency` (on the test clock) and reach the
        API server or not; the queue's workers run while each call is in flight, and so
        does `during`, once the second call's time has passed (the write of a renewal),
        before it is answered."""
        calls = 0
        task = asyncio.create_task(self.elector.once(self.controller.lead, self.controller.follow))
        while True:
            await self.until(lambda: task.done() or self.answered.arrived.is_set())
            if task.done():
                break
            self.answered.arrived.clear()
            call = self.answered.waiting
            assert call is not None
            took = min(latency, call.timeout)
            self.clock.now += took
            await self.settle()  # workers see the clock move while the call is out
            calls += 1
            if during is not None and calls == 2:
                await during()
            call.fail = not reaches or latency > call.timeout
            call.answered.set()
            await asyncio.sleep(0.01)
        await task
        await self.settle()

    def add(self, key: Key) -> None:
        self.controller.queue.add(key)

    async def stop(self) -> None:
        self.answered.at_once = True
        await self.controller.stop()


Step = tuple[str, float, bool]
STEPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("renew"),
            st.sampled_from([0.0, 0.5, 2.0, 4.9, 6.0, 11.0]),  # each call's latency
            st.booleans(),
        ),
        st.tuples(
            st.just("wait"), st.sampled_from([0.5, 2.0, 5.0, 9.9, 10.5, 16.0]), st.just(True)
        ),
        st.tuples(st.just("add"), st.sampled_from([0.0, 1.0, 2.0]), st.just(True)),
    ),
    min_size=1,
    max_size=14,
)


@pytest.mark.timeout(300)
@settings(max_examples=60, deadline=None)
@given(STEPS)
def test_the_queue_hands_out_work_exactly_while_this_process_may_write(steps: list[Step]) -> None:
    async def scenario() -> None:
        bed = Bed()
        bed.controller.start()
        await bed.settle()
        for kind, value, flag in steps:
            if kind == "renew":
                await bed.attempt(value, flag)
            elif kind == "wait":
                bed.clock.now += value
                await bed.settle()
            else:
                bed.add(("ns", f"m{int(value)}"))
                await bed.settle()
        # Whatever came before, a leader that renews on time does its work.
        await bed.attempt(0.0, True)
        bed.add(("ns", "last"))
        handed_before = len(bed.handed)
        await bed.until(lambda: bed.controller.queue.idle() and len(bed.handed) > handed_before)
        assert bed.elector.may_write()
        assert bed.controller.queue.idle(), (steps, "a leader's queue that does no work")
        assert ("ns", "last") in [key for key, _ in bed.handed[handed_before:]]
        await bed.stop()

    asyncio.run(scenario())


def test_a_renewal_back_late_after_the_fence_closed_leaves_the_queue_working() -> None:
    """The review's interleaving: a renewal succeeds; the next one is slow, and while it is
    out the fence closes and a reconcile's write meets it; then the slow one comes back
    (no failed attempt between). The queue must work on, not stay paused for good."""

    async def scenario() -> None:
        bed = Bed()
        release = asyncio.Event()
        wrote: list[bool] = []

        async def reconcile(key: Key) -> float | None:
            await release.wait()  # in flight while the renewal is out
            if not bed.elector.may_write():
                release.clear()
                raise Fenced("not the leader")  # its write met the closed fence
            wrote.append(True)
            return None

        async def nobody(kind: str) -> set[Identity]:
            return set()

        bed.controller = Controller(Caches.empty(), reconcile, nobody, elector=bed.elector)
        bed.controller.start()
        await bed.attempt(0.0, True)  # leads: the fence is open until 10
        bed.add(("ns", "a"))
        await bed.settle()
        bed.clock.now += 6.0

        async def fence_closed_meanwhile() -> None:
            assert not bed.elector.may_write()  # 10.9: closed
            release.set()
            await bed.until(lambda: not release.is_set())  # the write met the fence

        await bed.attempt(2.45, True, during=fence_closed_meanwhile)  # sent at 6, back at 10.9
        assert bed.elector.may_write()  # open again, until 16: no failed attempt between
        release.set()
        await bed.until(lambda: bool(wrote))
        assert wrote, "the leader's queue stayed paused after its renewal came back"
        await bed.stop()

    asyncio.run(scenario())


def test_a_key_added_after_the_fence_closed_waits_for_the_next_renewal() -> None:
    """No renewal came (the elector is busy, or the API server away): the fence closes
    with time alone, before any attempt says so, and the queue hands out nothing."""

    async def scenario() -> None:
        bed = Bed()
        bed.controller.start()
        await bed.attempt(0.0, True)  # leads
        bed.clock.now += TIMING.renew_deadline + 0.5
        bed.add(("ns", "late"))
        for _ in range(20):
            await bed.settle()  # a hand-out now would be refused by the fence: it fails here
        assert ("ns", "late") not in [key for key, _ in bed.handed]
        await bed.attempt(0.0, True)
        await bed.until(lambda: ("ns", "late") in [key for key, _ in bed.handed])
        assert ("ns", "late") in [key for key, _ in bed.handed]
        await bed.stop()

    asyncio.run(scenario())


def test_liveness_fails_when_the_lease_holder_s_queue_stays_paused() -> None:
    async def scenario() -> None:
        bed = Bed()
        bed.controller.stall_timeout = 0.05
        bed.controller.start()
        await bed.attempt(0.0, True)
        assert bed.controller.health()["leading"] is True
        bed.controller.queue.pause()  # a pause that nothing undoes, while holding the Lease
        await asyncio.sleep(0.1)
        with pytest.raises(Stalled, match="holds the Lease and its work queue has been paused"):
            bed.controller.health()
        bed.clock.now += 11  # no longer holding it: a follower's pause is no fault
        assert bed.controller.health()["leading"] is False
        await bed.stop()

    asyncio.run(scenario())


def test_on_sigterm_running_reconciles_end_before_the_lease_is_released() -> None:
    """Stopping pauses the queue, waits for what runs (bounded), then releases the
    Lease: a follower must not lead while this process still writes."""

    async def scenario() -> None:
        bed = Bed()
        order: list[str] = []
        release = asyncio.Event()

        async def slow(key: Key) -> float | None:
            order.append("reconcile began")
            await release.wait()
            order.append("reconcile ended")
            return None

        bed.controller = Controller(
            Caches.empty(), slow, bed.controller._lister, elector=bed.elector
        )
        original = bed.elector.release

        def release_lease() -> bool:
            order.append("lease released")
            return original()

        bed.elector.release = release_lease  # type: ignore[method-assign]
        bed.controller.start()
        await bed.attempt(0.0, True)
        bed.add(("ns", "a"))
        await bed.until(lambda: order == ["reconcile began"])
        stopping = asyncio.create_task(bed.stop())
        await bed.until(lambda: bed.controller.queue.paused_for() > 0)
        await asyncio.sleep(0.2)
        assert order == ["reconcile began"]  # still waiting for it: the Lease is held
        release.set()
        await stopping
        assert order == ["reconcile began", "reconcile ended", "lease released"]
        assert not bed.elector.may_write()

    asyncio.run(scenario())
