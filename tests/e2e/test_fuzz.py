"""Bad input, counted: fuzzed ModelDeployment specs against the API server and the operator.

Hypothesis draws bodies (tests/e2e/fuzz_specs.py), valid-looking and hostile, and each
is created in the test's namespace with one operator running. Every one must be refused
at admission with a readable message, or reconciled to a defined state: rendered (Ready
or Reconciling, its Deployment there) or Stalled with a known reason and a message.
Never an operator exception, a status write the API server refuses, no status at all, or
a resource the operator keeps writing while nothing changes. The outcome counts are the
report (record_property "figure: ..."). MODELDEPLOY_FUZZ_EXAMPLES sets how many distinct
inputs are tried (60); MODELDEPLOY_FUZZ_REPORT names a file for each input and outcome.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from kubernetes.client.exceptions import ApiException

from modeldeploy import constants as c
from modeldeploy.kube import api_message
from testbed.support import OperatorProcess
from tests.e2e.fuzz_specs import HOOK_SECRET, HOOKS, PROMETHEUS, TAKEN, bodies
from tests.e2e.helpers import Kube, KubeWatch, wait_for

JSON = dict[str, Any]
INPUTS = int(os.environ.get("MODELDEPLOY_FUZZ_EXAMPLES", "60"))
REPORT = os.environ.get("MODELDEPLOY_FUZZ_REPORT")
IN_FLIGHT = 8  # resources judged side by side
BACKLOG = 20  # inputs drawn ahead, so one whose name is in use need not hold up others
QUOTA_PODS = 40  # replicas: 1000 is rendered as asked; the namespace quota caps the pods
STATUS_WITHIN_S = 60.0  # created -> status for its generation, with every condition
SETTLE_WITHIN_S = 90.0  # that status -> a quiet spell
QUIET_S = 3.0  # a quiet spell: no status write (beyond analysis measurements) this long
BUSY_S = 30.0  # how long children that keep changing may keep a resource from quiet
WINDOW_S = 5.0  # after the quiet spell, writes are counted this long
LATE_WRITES = 3  # a verdict falling due in the window: status, then the drained outbox
GONE_WITHIN_S = 120.0  # deleted -> it and its children are gone
STALL_REASONS = frozenset(
    {
        c.REASON_INVALID_SPEC,
        c.REASON_NAME_CONFLICT,
        c.REASON_FIRST_VERSION_FAILED,
        c.REASON_TARGET_UNHEALTHY,
        c.REASON_NO_TARGET,
        c.REASON_REVERT_LOOP,
        c.REASON_AUTO_ROLLBACK_DISABLED,
        c.REASON_REVERT_DENIED,
        c.REASON_ROLLED_BACK,
        c.REASON_INVALID_QUERY,
    }
)
KSTATUS = frozenset({c.READY, c.RECONCILING, c.STALLED})  # every status must hold these
MEASURING = frozenset({c.ANALYSIS_RUNNING, c.ANALYSIS_INCONCLUSIVE, c.ANALYSIS_INVALID})
# A readable refusal names the field or rule, or says the object is too large to store.
READABLE = re.compile(r"\b(spec|metadata)[.\[]|unknown field|too large|larger than max")
UNREADABLE = re.compile(r"Traceback|goroutine|panic:|runtime error")
TOO_LARGE = re.compile(r"too large|larger than max")
RENAMABLE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,46}[a-z0-9])?$")  # a suffix keeps its kind
EXCEPTION = re.compile(r"^[\w.]+(Error|Exception)\b")  # a traceback's last line
FAILED_RECONCILE = re.compile(r"reconcile of \('([^']*)', '([^']*)'\) failed")
CR, DEPLOYMENT, SERVICE, POD = "ModelDeployment", "Deployment", "Service", "Pod"


# ------------------------------------------------------------------ what the watches saw


@dataclass(frozen=True)
class Change:
    at: float  # time.monotonic() when the watch delivered it
    uid: str
    generation: int


class Changes:
    """Every new resourceVersion the watches delivered, per (kind, name), and the latest
    body of each object. Pods are counted under the ModelDeployment their label names."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, str], str] = {}
        self._changes: dict[tuple[str, str], list[Change]] = defaultdict(list)
        self._latest: dict[tuple[str, str], JSON] = {}

    def record(self, kind: str, event: str, body: JSON) -> None:
        meta = body.get("metadata") or {}
        own = (kind, str(meta.get("name")))
        about = (kind, str((meta.get("labels") or {}).get(c.LABEL_NAME))) if kind == POD else own
        with self._lock:
            if event == "DELETED":
                self._versions.pop(own, None)
                self._latest.pop(own, None)
                return
            if self._versions.get(own) == meta.get("resourceVersion"):
                return  # a watch that resumed said again what it had said
            self._versions[own] = str(meta.get("resourceVersion"))
            self._latest[own] = body
            generation = int(meta.get("generation") or 0)
            self._changes[about].append(Change(time.monotonic(), str(meta.get("uid")), generation))

    def latest(self, kind: str, name: str) -> JSON | None:
        with self._lock:
            return self._latest.get((kind, name))

    def between(self, kind: str, name: str, start: float, end: float) -> list[Change]:
        with self._lock:
            return [k for k in self._changes.get((kind, name), ()) if start < k.at <= end]


class ChangeWatch(KubeWatch):
    """One kind's watch in the namespace, feeding `Changes` (it resumes by itself)."""

    def __init__(
        self, changes: Changes, kind: str, lister: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:
        super().__init__()
        self.changes, self.kind, self.lister = changes, kind, lister
        self.args, self.kwargs = args, kwargs

    def _read(self) -> None:
        stream = self._watch.stream(self.lister, *self.args, **self.kwargs)  # type: ignore[no-untyped-call]
        for event in stream:
            self.changes.record(self.kind, event["type"], event["raw_object"])


class LogLines:
    """The operator's log, read as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []
        self._offset = 0
        self._partial = ""

    def update(self) -> int:
        """Read what was added; the number of whole lines so far."""
        with self.path.open("rb") as log:
            log.seek(self._offset)
            new = log.read()
        self._offset += len(new)
        text = self._partial + new.decode(errors="replace")
        *whole, self._partial = text.split("\n")
        self.lines.extend(whole)
        return len(self.lines)


# ------------------------------------------------------------------ one input


@dataclass
class Trial:
    """One created ModelDeployment on its way through: status, quiet spell, window, gone."""

    body: JSON
    name: str
    uid: str
    created_at: float
    log_from: int
    seen: bool = False  # the watch delivered it
    observed_at: float | None = None
    settled_at: float | None = None
    log_settled: int = 0
    deleted_at: float | None = None
    outcome: str = ""
    defects: list[str] = field(default_factory=list)
    measures: dict[str, int] = field(default_factory=dict)  # for the report file


@dataclass(frozen=True)
class Result:
    body: JSON
    outcome: str
    defects: tuple[str, ...] = ()
    measures: dict[str, int] = field(default_factory=dict)


def observed(body: JSON) -> bool:
    """The operator wrote status for this very generation, with the kstatus conditions."""
    status = body.get("status") or {}
    types = {k.get("type") for k in status.get("conditions") or ()}
    generation = body["metadata"].get("generation")
    return status.get("observedGeneration") == generation and types >= KSTATUS


def measuring_every(body: JSON) -> float | None:
    """The analysis interval while an analysis is measuring (each measurement is written)."""
    analysis = body.get("spec", {}).get("analysis")
    phase = ((body.get("status") or {}).get("analysis") or {}).get("phase")
    if not isinstance(analysis, dict) or phase not in MEASURING:
        return None
    return float(analysis.get("intervalSeconds", 30))


def measurements(body: JSON, seconds: float) -> int:
    """Status writes an analysis may make in `seconds`: one per interval, and one more."""
    interval = measuring_every(body)
    return 0 if interval is None else math.ceil(seconds / interval) + 1


def owned(child: JSON | None, uid: str) -> bool:
    refs = ((child or {}).get("metadata") or {}).get("ownerReferences") or ()
    return any(ref.get("uid") == uid for ref in refs)


def classify(body: JSON, rendered: bool) -> tuple[str, str | None]:
    """(outcome, defect): the defined state the resource settled in, or what is wrong."""
    status = body.get("status") or {}
    generation = body["metadata"].get("generation")
    if status.get("observedGeneration") != generation:
        return "", f"status is for generation {status.get('observedGeneration')}, not {generation}"
    conditions = {k["type"]: k for k in status.get("conditions") or ()}
    missing = KSTATUS - conditions.keys()
    if missing:
        return "", f"conditions missing: {sorted(missing)}"
    stalled = conditions[c.STALLED]
    if stalled["status"] == "True":
        reason, message = stalled.get("reason", ""), stalled.get("message", "")
        if reason not in STALL_REASONS:
            return "", f"Stalled for an unknown reason {reason!r}: {message}"
        if not message.strip():
            return "", f"Stalled ({reason}) without a message"
        return f"Stalled {reason}", None
    for kind in (c.READY, c.RECONCILING):
        if conditions[kind]["status"] == "True":
            if not rendered:
                return "", f"{kind}=True, but there is no Deployment"
            return kind, None
    ready = conditions[c.READY]
    return "", (
        "Ready, Reconciling and Stalled all False "
        f"(Ready: {ready.get('reason')}: {ready.get('message')})"
    )


def refusal(code: int, message: str) -> tuple[str, tuple[str, ...]]:
    """(outcome, defects) of a refused create: readable, or not."""
    outcome = f"refused {code}"
    if code >= 500 and TOO_LARGE.search(message):
        return f"{outcome} (too large to store)", ()
    if 400 <= code < 500 and READABLE.search(message) and not UNREADABLE.search(message):
        return outcome, ()
    return outcome, (f"refused with HTTP {code}: {message[:500]}",)


def exception_summary(lines: list[str], start: int) -> str:
    """What the traceback after `lines[start]` ends in: the API's own message if it
    was an API error, else the exception line."""
    block: list[str] = []
    for line in lines[start + 1 : start + 80]:
        own = line.startswith((" ", "Traceback", "HTTP ", "Reason:")) or EXCEPTION.match(line)
        if block and not own:
            break  # the next log record
        block.append(line)
    for line in block:
        if line.startswith("HTTP response body:"):
            try:
                return str(json.loads(line.removeprefix("HTTP response body:")).get("message"))
            except ValueError:
                return line
    errors = [line for line in block if EXCEPTION.match(line)]
    return errors[-1] if errors else "(no exception line found)"


def abridged(value: Any) -> Any:
    """`value` with long strings and lists cut short, for a readable report."""
    if isinstance(value, str) and len(value) > 120:
        return f"{value[:40]}...<{len(value)} characters>"
    if isinstance(value, list):
        head = [abridged(item) for item in value[:5]]
        return [*head, f"...<{len(value) - 5} more>"] if len(value) > 5 else head
    if isinstance(value, dict):
        return {key: abridged(item) for key, item in value.items()}
    return value


# ------------------------------------------------------------------ the run


class Fuzz:
    """Creates each input and follows it to a verdict, IN_FLIGHT at a time."""

    def __init__(
        self, kube: Kube, namespace: str, operator: OperatorProcess, changes: Changes
    ) -> None:
        self.kube, self.namespace, self.operator, self.changes = kube, namespace, operator, changes
        self.log = LogLines(operator.log_path)
        self.results: list[Result] = []
        self.in_flight: list[Trial] = []
        self.backlog: list[JSON] = []
        self.renamed = 0
        self.tried: set[str] = set()

    # -- inputs

    def submit(self, body: JSON) -> None:
        """Queue `body` (unless it was tried, or enough were) and keep IN_FLIGHT going.

        An input whose name is in use waits in the backlog, while others go ahead."""
        text = json.dumps(body, sort_keys=True)
        if text in self.tried or len(self.tried) >= INPUTS:
            return
        self.tried.add(text)
        self.backlog.append(body)
        self._fill()
        while len(self.backlog) > BACKLOG:
            self.step()

    def drain(self) -> None:
        while self.backlog or self.in_flight:
            self.step()

    def _fill(self) -> None:
        """Create backlogged inputs whose names are free, while fewer than IN_FLIGHT are.

        An ordinary name in use is given a suffix (`a` becomes `a-7`), a name of the
        same kind; a name at a limit waits for its namesake to go."""
        for body in list(self.backlog):
            if len(self.in_flight) >= IN_FLIGHT:
                return
            name = str(body["metadata"]["name"])
            busy = any(trial.name == name for trial in self.in_flight)
            if busy and not RENAMABLE.match(name):
                continue
            self.backlog.remove(body)
            if busy:
                self.renamed += 1
                name = f"{name}-{self.renamed}"
            self._create({**body, "metadata": {**body["metadata"], "name": name}}, name)

    def _create(self, body: JSON, name: str) -> None:
        """Create `body`; a refusal is judged at once."""
        log_from = self.log.update()
        try:
            created = self.kube.custom.create_namespaced_custom_object(
                c.GROUP,
                c.VERSION,
                self.namespace,
                c.PLURAL,
                body,
                field_validation="Strict",
                _request_timeout=(5, 60),
            )
        except ApiException as error:
            code = int(error.status or 0)
            assert code != 409, f"{name} already exists: the previous one did not go"
            self.results.append(Result(body, *refusal(code, api_message(error))))
            return
        meta = created["metadata"]
        self.in_flight.append(Trial(body, name, meta["uid"], time.monotonic(), log_from))

    def step(self) -> None:
        if self.operator.process is None or self.operator.process.poll() is not None:
            tail = "\n".join(self.operator.log().splitlines()[-40:])
            raise AssertionError(f"the operator exited:\n{tail}")
        self.log.update()
        now = time.monotonic()
        for trial in list(self.in_flight):
            self._advance(trial, now)
        self._fill()
        time.sleep(0.2)

    # -- one trial's stages

    def _advance(self, trial: Trial, now: float) -> None:
        if trial.deleted_at is not None:
            self._await_gone(trial, now)
            return
        body = self.changes.latest(CR, trial.name)
        if body is None or body["metadata"].get("uid") != trial.uid:
            if trial.seen or now - trial.created_at > STATUS_WITHIN_S:
                trial.defects.append("the resource vanished before it was judged")
                self._delete(trial, now)
            return  # the watch has not delivered it yet
        trial.seen = True
        if trial.observed_at is None:
            self._await_status(trial, body, now)
        elif trial.settled_at is None:
            self._await_quiet(trial, body, now)
        elif now - trial.settled_at >= WINDOW_S:
            self._judge(trial, body, now)
            self._delete(trial, now)

    def _await_status(self, trial: Trial, body: JSON, now: float) -> None:
        if observed(body):
            trial.observed_at = now
        elif now - trial.created_at > STATUS_WITHIN_S:
            status = json.dumps(abridged(body.get("status")))[:600]
            trial.defects.append(
                f"no status for its generation within {STATUS_WITHIN_S:.0f} s: {status}"
            )
            self._delete(trial, now)

    def _await_quiet(self, trial: Trial, body: JSON, now: float) -> None:
        """A quiet spell: QUIET_S without a status write (but an analysis's) or a change of
        its children; after BUSY_S of a busy cluster, one where it wrote no more often than
        its children changed. Never one in SETTLE_WITHIN_S: it keeps writing on its own."""
        assert trial.observed_at is not None
        since, waited = now - QUIET_S, now - trial.observed_at
        writes = len(self._writes(trial, since, now)) - measurements(body, QUIET_S)
        children = self._children(trial, since, now)
        still = writes <= 0 and children == 0
        explained = waited >= BUSY_S and writes <= children
        if waited >= QUIET_S and (still or explained):
            trial.settled_at = now
            trial.log_settled = len(self.log.lines)
        elif waited > SETTLE_WITHIN_S:
            total = len(self._writes(trial, trial.observed_at, now))
            changed = self._children(trial, trial.observed_at, now)
            trial.defects.append(
                f"never quiet: {total} status writes in {SETTLE_WITHIN_S:.0f} s after its "
                f"first status, while its children changed {changed} times"
            )
            self._delete(trial, now)

    def _judge(self, trial: Trial, body: JSON, now: float) -> None:
        """The window after the quiet spell: writes only as the cluster changes, then the state."""
        assert trial.settled_at is not None
        start = trial.settled_at
        writes = len(self._writes(trial, start, now))
        children = self._children(trial, start, now)
        analysis = measurements(body, now - start)
        if writes > LATE_WRITES + children + analysis:
            trial.defects.append(
                f"kept writing: {writes} status writes in {now - start:.1f} s after a "
                f"quiet spell, while its children changed {children} times"
            )
        reconciles = self._reconciles(trial, self.log.lines[trial.log_settled :])
        if reconciles > 2 * LATE_WRITES + 3 * (children + writes) + 2 * analysis:
            trial.defects.append(
                f"kept reconciling: {reconciles} reconciles in {now - start:.1f} s with "
                f"{writes} status writes and {children} changes of its children"
            )
        trial.measures = {"writes": len(self._writes(trial, 0, now)), "window": writes}
        trial.measures.update(children=children, reconciles=reconciles)
        deployment = self.changes.latest(DEPLOYMENT, trial.name)
        rendered = owned(deployment, trial.uid)
        if rendered and deployment is not None:
            uid = deployment["metadata"]["uid"]
            changed = self.changes.between(DEPLOYMENT, trial.name, start, now)
            generations = sorted({k.generation for k in changed if k.uid == uid})
            if len(generations) > 2:  # one new spec in the window may be a late verdict's
                trial.defects.append(f"kept rewriting its Deployment: generations {generations}")
        trial.outcome, defect = classify(body, rendered)
        if defect:
            trial.defects.append(defect)

    def _delete(self, trial: Trial, now: float) -> None:
        trial.deleted_at = now
        try:
            self.kube.custom.delete_namespaced_custom_object(
                c.GROUP,
                c.VERSION,
                self.namespace,
                c.PLURAL,
                trial.name,
                propagation_policy="Background",
                _request_timeout=(5, 30),
            )
        except ApiException as error:
            if error.status != 404:
                raise

    def _await_gone(self, trial: Trial, now: float) -> None:
        """Deleted, and its Deployment and Service collected: its name is free again."""
        assert trial.deleted_at is not None
        left = [
            kind
            for kind in (CR, DEPLOYMENT, SERVICE)
            if (child := self.changes.latest(kind, trial.name)) is not None
            and (kind == CR or owned(child, trial.uid))
        ]
        if left:
            if now - trial.deleted_at > GONE_WITHIN_S:
                raise AssertionError(
                    f"{trial.name}: {left} still there {GONE_WITHIN_S:.0f} s after the delete"
                )
            return
        self._examine_log(trial)
        self._examine_events(trial)
        self.in_flight.remove(trial)
        outcome = "defect" if trial.defects else trial.outcome
        self.results.append(Result(trial.body, outcome, tuple(trial.defects), trial.measures))

    # -- evidence

    def _children(self, trial: Trial, start: float, end: float) -> int:
        """Changes of its Deployment, Service and pods (the cluster's doing, mostly)."""
        kinds = (DEPLOYMENT, SERVICE, POD)
        return sum(len(self.changes.between(kind, trial.name, start, end)) for kind in kinds)

    def _writes(self, trial: Trial, start: float, end: float) -> list[Change]:
        return [k for k in self.changes.between(CR, trial.name, start, end) if k.uid == trial.uid]

    def _reconciles(self, trial: Trial, lines: list[str]) -> int:
        """Reconciles in `lines` that wrote nothing, and the operator's writes about it."""
        quiet = f"reconciled {self.namespace}/{trial.name}:"
        path = f"/namespaces/{self.namespace}/"
        about = (f"/{trial.name}?", f"/{trial.name}/status?")
        return sum(
            1
            for line in lines
            if quiet in line
            or (path in line and '"PATCH ' in line and any(a in line for a in about))
        )

    def _examine_log(self, trial: Trial) -> None:
        """Reconciles of it that raised, and status writes the API server refused."""
        lines = self.log.lines
        failed = [
            i
            for i in range(trial.log_from, len(lines))
            if (m := FAILED_RECONCILE.search(lines[i]))
            and m.groups() == (self.namespace, trial.name)
        ]
        if failed:
            first = failed[0]
            trial.defects.append(
                f"the operator raised in {len(failed)} reconciles ({lines[first].strip()}): "
                f"{exception_summary(lines, first)}"
            )
        refused = f"status of {self.namespace}/{trial.name} refused"
        said = [line.strip() for line in lines[trial.log_from :] if refused in line]
        if said:
            trial.defects.append(f"status write refused {len(said)} times: {said[0][:500]}")

    def _examine_events(self, trial: Trial) -> None:
        events = self.kube.core.list_namespaced_event(
            self.namespace,
            field_selector=f"involvedObject.uid={trial.uid}",
            _request_timeout=(5, 30),
        )
        for event in events.items:
            if event.reason == "StatusRefused":
                trial.defects.append(f"StatusRefused Event: {event.message[:500]}")

    def unattributed_exceptions(self) -> list[str]:
        """Tracebacks in the operator's log that are not a reconcile of an input failing."""
        lines = self.log.lines
        found = []
        for index, line in enumerate(lines):
            if line.startswith("Traceback (most recent call last)"):
                before = lines[index - 1] if index else ""
                if not FAILED_RECONCILE.search(before):
                    found.append(f"{before.strip()[:300]}: {exception_summary(lines, index - 1)}")
        return found


# ------------------------------------------------------------------ the test bed's setup


def prepare(kube: Kube, namespace: str) -> None:
    """A pod quota (replicas 1000 stays cheap), a Deployment named TAKEN that is not the
    operator's (NameConflict), and the webhook Secret some inputs point at."""
    kube.core.create_namespaced_resource_quota(
        namespace, {"metadata": {"name": "fuzz-pods"}, "spec": {"hard": {"pods": str(QUOTA_PODS)}}}
    )
    wait_for(
        lambda: kube.core.read_namespaced_resource_quota("fuzz-pods", namespace).status.hard,
        30,
        "the pod quota to be counted",
    )
    labels = {"app": "foreign"}
    kube.apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": TAKEN},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
                },
            },
        },
    )
    kube.core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": HOOK_SECRET},
            "stringData": {"url": f"{HOOKS}from-secret", "bad": "file:///etc/passwd"},
        },
    )


def watches(kube: Kube, namespace: str, changes: Changes) -> Iterator[ChangeWatch]:
    managed = f"{c.LABEL_MANAGED_BY}={c.MANAGER}"
    yield ChangeWatch(
        changes,
        CR,
        kube.custom.list_namespaced_custom_object,
        c.GROUP,
        c.VERSION,
        namespace,
        c.PLURAL,
    )
    yield ChangeWatch(changes, DEPLOYMENT, kube.apps.list_namespaced_deployment, namespace)
    yield ChangeWatch(changes, SERVICE, kube.core.list_namespaced_service, namespace)
    yield ChangeWatch(
        changes, POD, kube.core.list_namespaced_pod, namespace, label_selector=managed
    )


def report(fuzz: Fuzz, seconds: float, record_property: Callable[[str, object], None]) -> None:
    counts = Counter(result.outcome for result in fuzz.results)
    record_property("figure: inputs tried", len(fuzz.results))
    record_property("figure: outcomes", "; ".join(f"{k}: {n}" for k, n in sorted(counts.items())))
    record_property("figure: seconds", round(seconds))
    if REPORT:
        with Path(REPORT).open("w") as out:
            for result in fuzz.results:
                entry = {
                    "outcome": result.outcome,
                    "defects": result.defects,
                    "measures": result.measures,
                    "body": abridged(result.body),
                }
                out.write(json.dumps(entry) + "\n")


@pytest.mark.timeout(180 + 6 * INPUTS)
def test_every_spec_is_refused_or_reconciled_to_a_defined_state(
    kube: Kube,
    namespace: str,
    stopped_operator: OperatorProcess,
    record_property: Callable[[str, object], None],
) -> None:
    prepare(kube, namespace)
    changes = Changes()
    started = time.monotonic()
    with ExitStack() as stack:
        for watch in watches(kube, namespace, changes):
            stack.enter_context(watch)
        stopped_operator.start("--prometheus", PROMETHEUS, "--allowed-webhook", HOOKS)
        fuzz = Fuzz(kube, namespace, stopped_operator, changes)

        @settings(
            max_examples=20 * INPUTS,  # drawn until INPUTS distinct ones were tried
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(bodies())
        def try_input(body: JSON) -> None:
            fuzz.submit(body)

        try_input()
        fuzz.drain()
        fuzz.log.update()
    report(fuzz, time.monotonic() - started, record_property)
    defects = [
        f"{'; '.join(r.defects)}\n  body: {json.dumps(abridged(r.body))[:3000]}"
        for r in fuzz.results
        if r.defects
    ] + [f"{e}\n  (not a reconcile of an input)" for e in fuzz.unattributed_exceptions()]
    assert len(fuzz.results) == INPUTS, f"only {len(fuzz.results)} distinct inputs were drawn"
    assert not defects, (
        f"{len(defects)} of {len(fuzz.results)} inputs found defects:\n" + "\n".join(defects)
    )
