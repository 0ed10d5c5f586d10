"""The chaos run: a leader-elected pair under bad releases, leader kills and API outages.

Resources serve v1 on kwok; two operators (--leader-elect, the install's default
timings: lease 15 s, renew deadline 10 s, retry 2 s) share them. For the run's length,
bad releases come at random (a Poisson process, each naming a failure version the
resource never had), the current leader is SIGKILLed every 20-60 s and started again
(it rejoins as the follower), and the API server is killed and started again twice
(5 s down). Then everything is given time to converge and status is audited: every bad
release reverted exactly once, no history entry lost. Not a CI gate: `make bench` runs
the 30-minute run, `make bench-quick` (and so CI) a 2-minute one.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes
import urllib3

from bench.cluster import GOOD, JSON, Bed, log, model_body, serving
from bench.stats import summary
from modeldeploy.constants import GROUP, PLURAL, VERSION
from testbed import processes
from testbed.support import OperatorProcess, WaitTimeout, wait_for

FAILURES = ("crashloop", "pullfail", "oom", "notready")
BAD_PER_RESOURCE = 6  # failure versions each resource holds; one is used per bad release
LEASE = "modeldeploy-operator"
DOWN_S = 5.0  # how long each API server outage lasts
SETTLE_S = 300.0  # after the run: the longest the last reverts may take to land


@dataclass(frozen=True)
class Plan:
    resources: int
    seconds: float
    releases_per_minute: float
    kill_every_s: tuple[float, float] = (20.0, 60.0)
    api_restarts: int = 2


@dataclass
class Journal:
    """What the run did, for the audit: bad releases written, kills, outages."""

    released: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # name -> [(v, t)]
    kills: int = 0
    killed: set[str] = field(default_factory=set)  # holder identities SIGKILLed
    unmapped_leaders: int = 0
    api_restarts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def versions() -> dict[str, str]:
    bad = {
        f"bad{n}": f"registry.example/bench:{n + 2}-{FAILURES[n % len(FAILURES)]}"
        for n in range(BAD_PER_RESOURCE)
    }
    return {"v1": GOOD, **bad}


def run(plan: Plan, logs: Path) -> dict[str, Any]:
    """One chaos run in its own namespace; the audit's figures."""
    bed = Bed("chaos")
    bed.create_namespace()
    names = [f"c{i:03d}" for i in range(plan.resources)]
    for name in names:
        body = model_body(name, versions(), 1, "v1", historyLimit=2 * BAD_PER_RESOURCE + 2)
        body["spec"]["rollout"]["readyTimeoutSeconds"] = 10  # notready fails in 10 s
        bed.create_model(body)
    pair = [
        OperatorProcess(
            logs / f"operator-chaos-{n}.log",
            *("--namespace", bed.namespace, "--leader-elect"),
            f"--leader-elect-namespace={bed.namespace}",
        )
        for n in "ab"
    ]
    for operator in pair:
        operator.start()
    try:
        wait_for(lambda: all_serving(bed, names), 300, f"{len(names)} resources serving v1")
        transitions_before = lease_transitions(bed)
        journal = Journal()
        started = time.monotonic()
        chaos(bed, names, pair, plan, journal)
        log(f"chaos: {time.monotonic() - started:.0f} s of chaos; letting it converge")
        converged = converge(bed, names)
        wait_for(lambda: led(bed, journal), 120, "a live operator to hold the Lease")
        audit = audit_status(bed, names, journal)
        audit.update(
            resources=plan.resources,
            seconds=plan.seconds,
            converged=converged,
            leader_kills=journal.kills,
            leader_kills_unmapped=journal.unmapped_leaders,
            leader_changes=lease_transitions(bed) - transitions_before,
            api_server_restarts=journal.api_restarts,
            config=(
                "two operators, --leader-elect with the default timings (15 s/10 s/2 s); "
                f"bad releases at {plan.releases_per_minute}/min (Poisson), the leader "
                f"SIGKILLed every {plan.kill_every_s[0]:.0f}-{plan.kill_every_s[1]:.0f} s "
                f"and restarted, the API server down {DOWN_S:.0f} s {plan.api_restarts} times"
            ),
        )
        return audit
    finally:
        for operator in pair:
            operator.stop()
        bed.delete_namespace()


def chaos(bed: Bed, names: list[str], pair: list[OperatorProcess], plan: Plan, j: Journal) -> None:
    """Releases, kills and outages side by side until the plan's time is up."""
    stop = threading.Event()
    rng = random.Random(20261123)  # noqa: S311 - a schedule, not a secret
    outages = [plan.seconds * (n + 1) / (plan.api_restarts + 1) for n in range(plan.api_restarts)]
    releases = (stop, release_gap(plan, rng), lambda: release(bed, names, rng, j))
    kills = (stop, lambda: rng.uniform(*plan.kill_every_s), lambda: kill_leader(bed, pair, j))
    threads = [
        threading.Thread(target=every, args=releases),
        threading.Thread(target=every, args=kills),
    ]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    try:
        for at in outages:
            stop.wait(max(0.0, at - (time.monotonic() - started)))
            restart_api_server(j)
        stop.wait(max(0.0, plan.seconds - (time.monotonic() - started)))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    for operator in pair:  # a kill right at the end leaves one down: both run for the audit
        if operator.process is None or operator.process.poll() is not None:
            operator.start(timeout=120)


def release_gap(plan: Plan, rng: random.Random) -> Callable[[], float]:
    return lambda: rng.expovariate(plan.releases_per_minute / 60)


def every(stop: threading.Event, gap: Callable[[], float], action: Callable[[], None]) -> None:
    """`action` after each gap until `stop`; an API error (an outage) skips one turn."""
    while not stop.wait(gap()):
        try:
            action()
        except (kubernetes.client.ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            log(f"chaos: skipped a turn: {type(error).__name__}")


def release(bed: Bed, names: list[str], rng: random.Random, j: Journal) -> None:
    """A bad release of a resource now serving v1 that has a failure version left."""
    with j.lock:
        candidates = [n for n in names if len(j.released.get(n, [])) < BAD_PER_RESOURCE]
    rng.shuffle(candidates)
    for name in candidates[:10]:
        model = bed.get_model(name)
        if not serving(model):
            continue
        with j.lock:
            used = len(j.released.get(name, []))
        version = f"bad{used}"
        bed.custom.patch_namespaced_custom_object(
            *model_path(bed, name),
            [
                {"op": "test", "path": "/spec/activeVersion", "value": "v1"},
                {"op": "replace", "path": "/spec/activeVersion", "value": version},
            ],
            _content_type="application/json-patch+json",
        )
        with j.lock:
            j.released.setdefault(name, []).append((version, time.time()))
        return


def model_path(bed: Bed, name: str) -> tuple[str, str, str, str, str]:
    return GROUP, VERSION, bed.namespace, PLURAL, name


def kill_leader(bed: Bed, pair: list[OperatorProcess], j: Journal) -> None:
    """SIGKILL the operator holding the Lease, then start it again (as the follower)."""
    holder = lease(bed).get("holderIdentity") or ""
    if holder in j.killed:
        return  # the last kill's handover is not over yet
    leader = next((op for op in pair if holder and identity(op) == holder), None)
    if leader is None:
        j.unmapped_leaders += 1
        return
    assert leader.process is not None
    os.kill(leader.process.pid, signal.SIGKILL)
    leader.stop()  # reaps it
    j.kills += 1
    j.killed.add(holder)
    leader.start(timeout=120)


def identity(operator: OperatorProcess) -> str:
    """The holderIdentity this process's latest start led with, if it ever led."""
    found = ""
    for line in operator.log().splitlines():
        if "leader election: " in line and line.endswith(" leads"):
            found = line.rsplit("leader election: ", 1)[1].removesuffix(" leads")
    return found


def restart_api_server(j: Journal) -> None:
    """Kill the API server (a crash), leave it down DOWN_S, start it with its own argv."""
    pid = processes.running_pid("kube-apiserver")
    assert pid is not None, "kube-apiserver is not running"
    argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    os.killpg(pid, signal.SIGKILL)
    processes.stop("kube-apiserver")
    time.sleep(DOWN_S)
    processes.start("kube-apiserver", argv)
    wait_for(answering, 120, "the API server to answer again")
    j.api_restarts += 1
    log(f"chaos: API server restart {j.api_restarts} done")


def answering() -> bool:
    try:
        processes.api("GET", "/api/v1/namespaces/default")
    except (OSError, ValueError):
        return False
    return True


def lease(bed: Bed) -> JSON:
    found = kubernetes.client.CoordinationV1Api(bed.api).read_namespaced_lease(LEASE, bed.namespace)
    spec: JSON = bed.api.sanitize_for_serialization(found.spec)  # type: ignore[no-untyped-call]
    return spec


def led(bed: Bed, j: Journal) -> bool:
    """Whether the Lease is held by one that was not killed (the last handover is over)."""
    holder = lease(bed).get("holderIdentity") or ""
    return bool(holder) and holder not in j.killed


def lease_transitions(bed: Bed) -> int:
    return int(lease(bed).get("leaseTransitions") or 0)


def all_serving(bed: Bed, names: list[str]) -> bool:
    models = {m["metadata"]["name"]: m for m in bed.list_models()["items"]}
    return all(name in models and serving(models[name]) for name in names)


def converge(bed: Bed, names: list[str]) -> bool:
    """Whether every resource came back to serving v1 within SETTLE_S."""
    try:
        wait_for(lambda: all_serving(bed, names), SETTLE_S, "every resource back on v1")
    except WaitTimeout as error:  # the audit says which did not
        log(f"chaos: not converged: {error}")
        return False
    return True


def audit_status(bed: Bed, names: list[str], j: Journal) -> dict[str, Any]:
    """Each bad release against status: reverted once, failed once, history contiguous."""
    models = {m["metadata"]["name"]: m for m in bed.list_models()["items"]}
    released = reverted = double = missing = lost = 0
    release_to_revert: list[float] = []
    verdict_to_revert: list[float] = []
    for name in names:
        status = models[name].get("status") or {}
        reverts = [r for r in status.get("reverts") or () if r.get("to") == "v1"]
        history = status.get("history") or []
        failed = {h["version"]: h for h in history if h.get("outcome") == "Failed"}
        revisions = [h["revision"] for h in history]
        if revisions and revisions != list(range(revisions[0], revisions[0] - len(revisions), -1)):
            lost += 1  # a gap: an entry went missing
        for version, at in j.released.get(name, []):
            released += 1
            mine = [r for r in reverts if r.get("from") == version]
            if not mine:
                missing += 1
                continue
            reverted += 1
            double += len(mine) - 1
            when = parse_time(mine[0]["at"])
            release_to_revert.append(when - at)
            if version in failed and failed[version].get("finishedAt"):
                verdict_to_revert.append((when - parse_time(failed[version]["finishedAt"])) * 1000)
            else:
                lost += 1  # the failure the revert answered is not in history
    return {
        "bad_releases": released,
        "reverted": reverted,
        "double_reverts": double,
        "missing_reverts": missing,
        "lost_history_entries": lost,
        "release_to_revert_s": summary(release_to_revert, 2),
        "verdict_to_revert_ms": summary(verdict_to_revert),
    }


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
