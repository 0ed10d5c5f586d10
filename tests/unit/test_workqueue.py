"""The work queue: bursts coalesce, one reconcile per key at a time, deadlines keep the earliest."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Hashable
from typing import Any

from modeldeploy.workqueue import WorkQueue


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coroutine)


def test_a_burst_of_adds_for_one_key_costs_one_reconcile() -> None:
    calls: list[Hashable] = []

    async def scenario() -> None:
        async def handler(key: Hashable) -> None:
            calls.append(key)

        queue = WorkQueue(handler, workers=2)
        for _ in range(50):
            queue.add("a")
        queue.start()
        while not queue.idle():
            await asyncio.sleep(0.01)
        await queue.stop()

    run(scenario())
    assert calls == ["a"]


def test_an_add_during_a_reconcile_runs_it_again_afterwards_never_concurrently() -> None:
    running = 0
    overlaps = 0
    calls = 0

    async def scenario() -> None:
        release = asyncio.Event()

        async def handler(key: Hashable) -> None:
            nonlocal running, overlaps, calls
            running += 1
            overlaps = max(overlaps, running)
            calls += 1
            if calls == 1:
                await release.wait()
            running -= 1

        queue = WorkQueue(handler, workers=4)
        queue.start()
        queue.add("a")
        await asyncio.sleep(0.05)
        queue.add("a")  # arrives while the first reconcile still runs
        queue.add("a")
        release.set()
        await asyncio.sleep(0.05)
        while not queue.idle():
            await asyncio.sleep(0.01)
        await queue.stop()

    run(scenario())
    assert (calls, overlaps) == (2, 1)


def test_a_requeue_deadline_keeps_the_earliest_wake_up() -> None:
    seen: list[float] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def handler(key: Hashable) -> None:
            seen.append(loop.time() - start)

        queue = WorkQueue(handler, workers=1)
        queue.start()
        queue.add("a", delay=0.3)
        queue.add("a", delay=0.1)  # earlier: replaces the 0.3 s timer
        queue.add("a", delay=0.5)  # later: the 0.1 s timer stays
        await asyncio.sleep(0.7)
        await queue.stop()

    run(scenario())
    assert len(seen) == 1
    assert 0.09 <= seen[0] < 0.3


def test_a_failing_reconcile_is_retried_with_backoff() -> None:
    attempts = 0

    async def scenario() -> None:
        async def handler(key: Hashable) -> None:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                raise RuntimeError("API server hiccup")

        queue = WorkQueue(handler, workers=1)
        queue.start()
        queue.add("a")
        for _ in range(200):
            if attempts >= 2:
                break
            await asyncio.sleep(0.01)
        await queue.stop()

    run(scenario())
    assert attempts == 2


def test_the_handlers_requeue_answer_schedules_the_next_reconcile() -> None:
    calls = 0

    async def scenario() -> None:
        async def handler(key: Hashable) -> float | None:
            nonlocal calls
            calls += 1
            return 0.05 if calls == 1 else None

        queue = WorkQueue(handler, workers=1)
        queue.start()
        queue.add("a")
        for _ in range(100):
            if calls >= 2:
                break
            await asyncio.sleep(0.01)
        await queue.stop()

    run(scenario())
    assert calls == 2


def test_a_paused_queue_collects_keys_and_hands_them_out_once_resumed() -> None:
    calls: list[Hashable] = []

    async def scenario() -> None:
        async def handler(key: Hashable) -> None:
            calls.append(key)

        queue = WorkQueue(handler, workers=2)
        queue.start()
        queue.pause()
        for key in ("a", "b", "a"):
            queue.add(key)
        await asyncio.sleep(0.1)
        assert calls == []
        assert queue.stalled_for() == 0  # a follower waits by design, it is not stuck
        queue.resume()
        while not queue.idle():
            await asyncio.sleep(0.01)
        await queue.stop()

    run(scenario())
    assert sorted(map(str, calls)) == ["a", "b"]


def test_stalled_for_counts_from_the_oldest_wait_and_a_failure_is_progress() -> None:
    async def scenario() -> None:
        stuck = asyncio.Event()

        async def handler(key: Hashable) -> None:
            if key == "stuck":
                await stuck.wait()
            raise RuntimeError("API server refused")

        queue = WorkQueue(handler, workers=1)
        queue.start()
        assert queue.stalled_for() == 0  # idle
        queue.add("stuck")
        await asyncio.sleep(0.2)
        assert queue.stalled_for() >= 0.2
        stuck.set()  # the reconcile ends (with an error): progress
        await asyncio.sleep(0.05)
        assert queue.stalled_for() < 0.2
        await queue.stop()

    run(scenario())
