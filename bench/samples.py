"""Detect-to-revert samples: bad releases, each timed by the API server's own clock.

A sample is one bad version selected on a settled ModelDeployment. Its start is the
moment the failure became visible in the API: the pod status write (kwok's, as the
audit log recorded it) that first carries a failure the operator's rules act on
(a waiting reason such as CrashLoopBackOff or ErrImagePull, or more restarts than
`maxRestarts`). A pod that never gets Ready has no such write: its start is the
deadline the operator's rule computes (`core.signals.pod_deadline`: the later of the
pod's creation, its last readiness change and the rollout's start, plus
`readyTimeoutSeconds`). The end is the operator's patch that set
`spec.activeVersion` back, as the audit log recorded it. The observer's watches give
the same two moments as their events arrived, kept as a cross-check.

`Tracker` records flips and computes their samples; `poisson` runs a whole set: many
resources per failure kind, the four kinds interleaved, each release at a random time
(exponential gaps), every resource used again only once it has settled.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bench.apiserver import AuditLog, Request
from bench.cluster import GOOD, JSON, Bed, Watcher, model_body, serving
from bench.stats import summary
from modeldeploy import constants as c
from modeldeploy.core.signals import Window, pod_deadline
from modeldeploy.model.observed import parse_pod
from modeldeploy.model.spec import parse_spec
from modeldeploy.model.times import parse_time
from testbed.support import wait_for

# name -> (bad image, spec.rollout): kwok plays each failure by the image tag's suffix.
CASES: dict[str, tuple[str, dict[str, int]]] = {
    "crashloop": ("registry.example/bench:2-crashloop", {}),
    "pullfail": ("registry.example/bench:2-pullfail", {}),
    "oom": ("registry.example/bench:2-oom", {}),
    "notready": ("registry.example/bench:2-notready", {"readyTimeoutSeconds": 10}),
}
FAILING_REASONS = c.WAITING_FAILURES | {c.REASON_CRASH_LOOP}


def shows_failure(status: JSON, max_restarts: int) -> bool:
    """A pod status the operator's failure rules act on at once (docs/signals.md)."""
    for container in status.get("containerStatuses") or ():
        waiting = ((container.get("state") or {}).get("waiting") or {}).get("reason")
        if waiting in FAILING_REASONS or int(container.get("restartCount") or 0) > max_restarts:
            return True
    return False


@dataclass
class Flip:
    """One bad release: `version` selected on `name`, and what was seen of it."""

    name: str
    version: str
    case: str
    max_restarts: int
    selected_at: float = 0.0
    seen_selected: bool = False  # the watch showed the spec naming `version`
    seen_failing: float | None = None  # the observer's watch
    seen_reverted: float | None = None
    pods: dict[str, JSON] = field(default_factory=dict)  # name -> latest body seen
    model: JSON | None = None  # the resource as last seen after the revert


class Tracker:
    """Watches one namespace's ModelDeployments and pods and times the flips made in it."""

    def __init__(self, bed: Bed, audit: AuditLog | None) -> None:
        self.bed, self.audit = bed, audit
        self.flips: dict[tuple[str, str], Flip] = {}
        self.models: dict[str, JSON] = {}
        self.lock = threading.Lock()
        self.mark = 0
        self._watches = [
            Watcher(bed.list_models, self._on_model),
            Watcher(bed.list_pods, self._on_pod, label_selector=c.LABEL_NAME),
        ]

    def __enter__(self) -> Tracker:
        self.mark = self.audit.mark() if self.audit else 0
        for watch in self._watches:
            watch.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for watch in self._watches:
            watch.__exit__(*exc)  # type: ignore[arg-type]

    def _on_model(self, kind: str, body: JSON, at: float) -> None:
        name = body["metadata"]["name"]
        with self.lock:
            if kind == "DELETED":
                self.models.pop(name, None)
                return
            self.models[name] = body
            active = body["spec"]["activeVersion"]
            for flip in self._open(name):
                if active == flip.version:
                    flip.seen_selected = True
                elif flip.seen_selected:
                    flip.seen_reverted = at
                    flip.model = body
            for flip in self.flips.values():
                if flip.name == name and flip.seen_reverted is not None:
                    flip.model = body

    def _open(self, name: str) -> Iterable[Flip]:
        return [f for f in self.flips.values() if f.name == name and f.seen_reverted is None]

    def _on_pod(self, kind: str, pod: JSON, at: float) -> None:
        labels = pod["metadata"].get("labels") or {}
        key = (labels.get(c.LABEL_NAME, ""), labels.get(c.LABEL_VERSION, ""))
        with self.lock:
            flip = self.flips.get(key)
            if flip is None or kind == "DELETED":
                return
            flip.pods[pod["metadata"]["name"]] = pod
            failing = shows_failure(pod.get("status") or {}, flip.max_restarts)
            if flip.seen_failing is None and failing:
                flip.seen_failing = at

    def flip(self, name: str, version: str, case: str, max_restarts: int = 2) -> None:
        """Select `version` on `name` (a bad one): a sample from now on."""
        record = Flip(name, version, case, max_restarts)
        with self.lock:
            self.flips[(name, version)] = record
        record.selected_at = time.time()
        self.bed.select(name, version)

    def settled(self, name: str) -> bool:
        """`name` serves v1 again, settled, and no release of it is open."""
        with self.lock:
            model = self.models.get(name)
            return bool(model and serving(model) and not list(self._open(name)))

    def open_count(self) -> int:
        with self.lock:
            return sum(1 for f in self.flips.values() if f.seen_reverted is None)

    def wait_all_reverted(self, timeout: float) -> None:
        wait_for(lambda: self.open_count() == 0, timeout, "every bad release reverted")
        time.sleep(0.5)  # late pod events of the bad pods still arrive

    def samples(self) -> list[dict[str, Any]]:
        """Every flip's times: server-side where the audit log has them, and observed."""
        requests = self.audit.since(self.mark, [self.bed.namespace]) if self.audit else []
        index = RequestIndex(requests)
        with self.lock:
            flips = list(self.flips.values())
        return [sample(flip, index) for flip in flips]


class RequestIndex:
    """The audit log's pod status writes and ModelDeployment patches, by object name."""

    def __init__(self, requests: list[Request]) -> None:
        self.pod_status: dict[str, list[Request]] = {}
        self.model_patches: dict[str, list[Request]] = {}
        for r in requests:
            if r.resource == "pods" and r.subresource == "status" and r.code < 300:
                self.pod_status.setdefault(r.name, []).append(r)
            elif r.resource == c.PLURAL and not r.subresource and r.verb == "patch":
                self.model_patches.setdefault(r.name, []).append(r)

    def selected(self, flip: Flip) -> float | None:
        for r in self.model_patches.get(flip.name, ()):
            spec = (r.body or {}).get("spec") if isinstance(r.body, dict) else None
            if r.client == "bench" and spec and spec.get("activeVersion") == flip.version:
                return r.at
        return None

    def reverted(self, flip: Flip, after: float) -> float | None:
        """The operator's JSON patch replacing spec.activeVersion, after `after`."""
        for r in self.model_patches.get(flip.name, ()):
            if r.client != "modeldeploy" or r.at < after or r.code >= 300:
                continue
            ops = r.body if isinstance(r.body, list) else []
            if any(op.get("path") == "/spec/activeVersion" and op["op"] == "replace" for op in ops):
                return r.at
        return None

    def failing(self, flip: Flip, after: float) -> float | None:
        """The first pod status write of the flip's pods that shows a failure."""
        times = [
            r.at
            for pod in flip.pods
            for r in self.pod_status.get(pod, ())
            if r.at >= after
            and isinstance(r.body, dict)
            and shows_failure(r.body.get("status") or {}, flip.max_restarts)
        ]
        return min(times, default=None)


def ready_deadline(flip: Flip) -> float | None:
    """For a pod that never got Ready: when the operator's ready timeout ran out."""
    model = flip.model
    if model is None:
        return None
    record = next(
        (
            h
            for h in (model.get("status") or {}).get("history") or ()
            if h["version"] == flip.version
        ),
        None,
    )
    started = parse_time(record["startedAt"]) if record else None
    if started is None:
        return None
    policy = parse_spec(model["spec"]).rollout
    window = Window(started_at=started.replace(microsecond=0), restarts={})
    deadlines = [
        d for pod in flip.pods.values() if (d := pod_deadline(parse_pod(pod), policy, window))
    ]
    return min(deadlines).timestamp() if deadlines else None


def sample(flip: Flip, index: RequestIndex) -> dict[str, Any]:
    """One flip's detect-to-revert (ms), by the server's clock and by the observer's."""
    selected = index.selected(flip) or flip.selected_at
    deadline = ready_deadline(flip) if flip.case == "notready" else None
    signal = deadline if flip.case == "notready" else index.failing(flip, selected)
    reverted = index.reverted(flip, selected)
    seen_signal = deadline if flip.case == "notready" else flip.seen_failing
    return {
        "name": flip.name,
        "case": flip.case,
        "selected": selected,
        "signal": signal,
        "reverted": reverted,
        "server_ms": None if signal is None or reverted is None else (reverted - signal) * 1000,
        "observed_ms": None
        if seen_signal is None or flip.seen_reverted is None
        else (flip.seen_reverted - seen_signal) * 1000,
    }


# ---------------------------------------------------------------- a Poisson set


@dataclass(frozen=True)
class Plan:
    per_case: int  # samples of each failure kind
    rate: float  # bad releases per second, all kinds together
    pool: int  # resources per failure kind
    seed: int = 21


def bad_versions(plan: Plan) -> list[str]:
    """Each resource's failure versions, one per release of it: twice the even share, as
    resources are picked at random among those settled, not in turn."""
    return [f"b{i}" for i in range(1, 2 * math.ceil(plan.per_case / plan.pool) + 2)]


def create_pool(bed: Bed, plan: Plan) -> dict[str, list[str]]:
    """`plan.pool` resources per kind, each with v1 and enough bad versions; names by kind."""
    names: dict[str, list[str]] = {}
    for case, (image, rollout) in CASES.items():
        names[case] = [f"{case}-{i}" for i in range(plan.pool)]
        for name in names[case]:
            versions = {"v1": GOOD} | dict.fromkeys(bad_versions(plan), image)
            bed.create_model(model_body(name, versions, 1, "v1", **rollout))
    return names


def poisson(bed: Bed, audit: AuditLog | None, plan: Plan) -> dict[str, Any]:
    """`plan.per_case` samples of each kind, released at random; their figures."""
    pools = create_pool(bed, plan)
    everyone = {n for names in pools.values() for n in names}
    rng = random.Random(plan.seed)  # noqa: S311 - a schedule, not a secret
    left = dict.fromkeys(CASES, plan.per_case)
    used: dict[str, int] = dict.fromkeys(everyone, 0)
    versions = bad_versions(plan)
    waited_for_idle = 0.0
    with Tracker(bed, audit) as tracker:
        wait_for(lambda: all(tracker.settled(n) for n in everyone), 300, "the pool serving v1")
        started = time.time()
        next_at = started
        while any(left.values()):
            next_at += rng.expovariate(plan.rate)
            time.sleep(max(0.0, next_at - time.time()))
            case = rng.choices(list(left), weights=list(left.values()))[0]
            idle_since = time.time()
            pool = pools[case]

            def idle(pool: list[str] = pool) -> str | None:
                shuffled = rng.sample(pool, len(pool))
                unused = (n for n in shuffled if used[n] < len(versions))
                return next((n for n in unused if tracker.settled(n)), None)

            name = wait_for(idle, 120, f"a settled {case} resource", interval=0.05)
            waited_for_idle += time.time() - idle_since
            used[name] += 1
            tracker.flip(name, versions[used[name] - 1], case)
            left[case] -= 1
        released_s = time.time() - started
        tracker.wait_all_reverted(180)
        samples = tracker.samples()
    return figures(samples, plan, released_s, waited_for_idle)


def figures(
    samples: list[dict[str, Any]], plan: Plan, released_s: float, waited_s: float
) -> dict[str, Any]:
    """Per kind: server-clock and observer summaries; how independent the samples were."""
    return {
        "by_case": by_case(samples),
        "raw_ms": {
            case: [
                round(s["server_ms"], 1)
                for s in samples
                if s["case"] == case and s["server_ms"] is not None
            ]
            for case in CASES
        },
        "independence": independence(samples),
        "plan": {
            "per_case": plan.per_case,
            "rate_per_s": plan.rate,
            "resources_per_case": plan.pool,
            "seed": plan.seed,
            "released_over_s": round(released_s, 1),
            "waited_for_a_settled_resource_s": round(waited_s, 1),
        },
    }


def by_case(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per kind present: the server-clock summary, the observer's beside it."""
    found: dict[str, Any] = {}
    for case in dict.fromkeys(s["case"] for s in samples):
        mine = [s for s in samples if s["case"] == case]
        server = [s["server_ms"] for s in mine if s["server_ms"] is not None]
        observed = [s["observed_ms"] for s in mine if s["observed_ms"] is not None]
        found[case] = {
            **summary(server),
            "observed": summary(observed),
            "missing_server_clock": len(mine) - len(server),
        }
    return found


def independence(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """How much the samples overlapped: each one's signal-to-revert interval against the
    others', and how many releases were between selection and revert at its signal."""
    timed = [s for s in samples if s["signal"] is not None and s["reverted"] is not None]
    overlapping = 0
    in_flight: list[int] = []
    for s in timed:
        others = [o for o in timed if o is not s]
        if any(o["signal"] < s["reverted"] and s["signal"] < o["reverted"] for o in others):
            overlapping += 1
        in_flight.append(sum(1 for o in others if o["selected"] <= s["signal"] <= o["reverted"]))
    return {
        "samples_whose_window_overlapped_another": overlapping,
        "of": len(timed),
        "mean_other_releases_in_flight_at_signal": round(sum(in_flight) / len(in_flight), 2)
        if in_flight
        else None,
    }


def pooled(raw: list[dict[str, list[float]]]) -> dict[str, Any]:
    """The runs' samples together, per kind."""
    cases = {case for run in raw for case in run}
    return {case: summary([v for run in raw for v in run.get(case, [])]) for case in sorted(cases)}
