"""Recovery side by side: the same crash-looping release under each contender.

Each contender runs 4 replicas with `maxUnavailable: 0` (the old pods stay until new
ones are Ready), tuned the way its users would tune it:

- modeldeploy: the defaults (`maxRestarts: 2`, revert to the last good version);
- a plain Deployment with the default 600 s progress deadline: it reports the
  failure and never recovers by itself;
- a plain Deployment with a reactive script (undo-on-failure.sh) that runs
  `kubectl rollout undo` when a pod shows CrashLoopBackOff or an image pull failure;
- Argo Rollouts (canary, no steps) with a background AnalysisRun that fails on a
  crash-looping or not-Ready canary pod, measured every second (the web metric
  provider reading the pods from the Kubernetes API: its docs' fastest setup with
  no metrics system in between);
- Flagger with the Kubernetes provider (Blue/Green): its analysis runs only once the
  canary is Ready, so a crash-looping canary is failed by its progress deadline
  (60 s, the value of its Blue/Green tutorial).

A sample starts when the bad release is applied and ends when the last good version
fully serves again: every pod of the good template, `replicas` of them Ready, no pod
of the bad one left. Both ends are the observer's watch events (seconds-scale
figures). Each bad release gets an image of its own, so no contender can reuse
state from an earlier one.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.cluster import GOOD, JSON, Bed, Watcher, pod_ready, serving
from bench.stats import summary
from testbed.processes import server
from testbed.support import WaitTimeout, wait_for

REPLICAS = 4
ROLLOUTS = ("argoproj.io", "v1alpha1")
UNDO_SCRIPT = Path(__file__).resolve().parent / "undo-on-failure.sh"
ANALYSIS = "canary-health"
DEFAULT_DEADLINE_GIVE_UP_S = 660


def bad_image(sample: int) -> str:
    """A crash-looping image of its own for each sample (kwok reads the tag's suffix)."""
    return f"registry.example/bench:r{sample}-crashloop"


class Pods(Watcher):
    """The pods of one workload, and from `armed` on: the fewest Ready and when the
    good template alone served again."""

    def __init__(self, bed: Bed, selector: str, good: Callable[[JSON], bool]) -> None:
        super().__init__(bed.list_pods, self._on_pod, label_selector=selector)
        self.good = good
        self.pods: dict[str, tuple[bool, bool]] = {}  # name -> (good template, Ready)
        self.lock = threading.Lock()
        self.armed = False
        self.min_ready = REPLICAS
        self.recovered_at: float | None = None
        self.saw_bad = False

    def _on_pod(self, kind: str, pod: JSON, at: float) -> None:
        name = pod["metadata"]["name"]
        with self.lock:
            if kind == "DELETED":
                self.pods.pop(name, None)
            else:
                self.pods[name] = (self.good(pod), pod_ready(pod))
            if not self.armed:
                return
            self.saw_bad = self.saw_bad or not all(g for g, _ in self.pods.values())
            ready = sum(1 for _, r in self.pods.values() if r)
            self.min_ready = min(self.min_ready, ready)
            whole = len(self.pods) == REPLICAS and all(g and r for g, r in self.pods.values())
            if self.saw_bad and whole and self.recovered_at is None:
                self.recovered_at = at

    def arm(self) -> None:
        with self.lock:
            self.armed, self.min_ready, self.recovered_at, self.saw_bad = (
                True,
                REPLICAS,
                None,
                False,
            )


class FirstSeen(Watcher):
    """When a watch first showed the object `name` matching `predicate` after `arm()`."""

    def __init__(
        self, list_call: Callable[..., Any], name: str, predicate: Callable[[JSON], bool]
    ) -> None:
        super().__init__(list_call, self._on_event, field_selector=f"metadata.name={name}")
        self.predicate = predicate
        self.at: float | None = None
        self.armed = False
        self.last: JSON | None = None

    def _on_event(self, kind: str, body: JSON, at: float) -> None:
        self.last = body
        if self.armed and self.at is None and kind != "DELETED" and self.predicate(body):
            self.at = at

    def arm(self) -> None:
        self.armed, self.at = True, None


def image_of(pod: JSON) -> str:
    return str(pod["spec"]["containers"][0]["image"])


def phase(body: JSON | None) -> str | None:
    """A Rollout's or Canary's `status.phase`, if it has one yet."""
    return ((body or {}).get("status") or {}).get("phase")


def run_samples(
    pods: Pods,
    samples: int,
    release: Callable[[int], None],
    restore: Callable[[int], None],
    give_up_s: float,
    reported: FirstSeen | None = None,
) -> list[dict[str, Any]]:
    """`samples` bad releases one after another; each one's times and capacity."""
    results = []
    for sample in range(samples):
        pods.arm()
        if reported:
            reported.arm()
        applied = time.time()
        release(sample)
        # Never recovering is a result here (a plain Deployment), not an error.
        with contextlib.suppress(WaitTimeout):
            wait_for(lambda: pods.recovered_at is not None, give_up_s, "recovery")
        results.append(
            {
                "recovered_s": None
                if pods.recovered_at is None
                else round(pods.recovered_at - applied, 2),
                "failure_reported_s": None
                if reported is None or reported.at is None
                else round(reported.at - applied, 2),
                "min_ready": pods.min_ready,
            }
        )
        restore(sample)
        time.sleep(1)
    return results


def aggregate(results: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """The samples of one contender: the p50s under the old keys, the distributions beside."""
    recovered = [r["recovered_s"] for r in results if r["recovered_s"] is not None]
    reported = [r["failure_reported_s"] for r in results if r["failure_reported_s"] is not None]
    return {
        "n": len(results),
        "recovered_s": summary(recovered, 2)["p50"] if recovered else None,
        "recovered": summary(recovered, 2),
        "never_recovered": len(results) - len(recovered),
        "failure_reported_s": summary(reported, 2)["p50"] if reported else None,
        "failure_reported": summary(reported, 2),
        "min_ready_ratio": min(r["min_ready"] for r in results) / REPLICAS if results else None,
        **extra,
    }


# ------------------------------------------------------------------ modeldeploy


def modeldeploy(bed: Bed, samples: int) -> dict[str, Any]:
    name = "recover"
    versions = {"v1": GOOD} | {f"b{i}": bad_image(i) for i in range(samples)}
    bed.model(name, versions, replicas=REPLICAS)
    selector = f"modeldeploy.io/name={name}"
    model = FirstSeen(bed.list_models, name, serving)
    with model, Pods(bed, selector, lambda p: image_of(p) == GOOD) as pods:
        wait_for(lambda: model.last is not None and serving(model.last), 120, "v1 serving")

        def settled(_: int) -> None:
            wait_for(lambda: model.last is not None and serving(model.last), 120, "settled")

        results = run_samples(
            pods, samples, lambda i: bed.select(name, f"b{i}"), settled, give_up_s=120
        )
        spec_after = model.last["spec"]["activeVersion"] if model.last else None
    bed.delete_model(name)
    return aggregate(
        results,
        spec_after=f"spec.activeVersion: {spec_after} (the last good version)",
        config="defaults: maxRestarts 2, onFailure RevertSpec, maxSurge 1, maxUnavailable 0",
    )


# ------------------------------------------------------------ plain Deployments


def deployment(name: str, peer: str, deadline: int | None = None) -> JSON:
    spec: JSON = {
        "replicas": REPLICAS,
        "selector": {"matchLabels": {"app": name}},
        "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
        "template": {
            "metadata": {"labels": {"app": name, "bench-peer": peer}},
            "spec": {"containers": [{"name": "model", "image": GOOD}]},
        },
    }
    if deadline is not None:
        spec["progressDeadlineSeconds"] = deadline
    return {"metadata": {"name": name}, "spec": spec}


def with_image(image: str) -> JSON:
    return {"spec": {"template": {"spec": {"containers": [{"name": "model", "image": image}]}}}}


def deadline_exceeded(body: JSON) -> bool:
    conditions = (body.get("status") or {}).get("conditions") or ()
    return any(
        k["type"] == "Progressing" and k.get("reason") == "ProgressDeadlineExceeded"
        for k in conditions
    )


def plain_deployment(bed: Bed, name: str, samples: int, give_up_s: float) -> list[dict[str, Any]]:
    """The default Deployment: bad image applied, nothing else; n parallel-safe names."""
    bed.apps.create_namespaced_deployment(bed.namespace, deployment(name, "plain"))
    reported = FirstSeen(bed.list_deployments, name, deadline_exceeded)
    with reported, Pods(bed, f"app={name}", lambda p: image_of(p) == GOOD) as pods:
        wait_for(lambda: pods.pods and all(r for _, r in pods.pods.values()), 120, f"{name} up")

        def release(i: int) -> None:
            bed.apps.patch_namespaced_deployment(name, bed.namespace, with_image(bad_image(i)))

        def restore(_: int) -> None:
            bed.apps.patch_namespaced_deployment(name, bed.namespace, with_image(GOOD))

        results = run_samples(pods, samples, release, restore, give_up_s, reported)
    bed.apps.delete_namespaced_deployment(name, bed.namespace)
    return results


def default_deadline(bed: Bed, copies: int) -> dict[str, Any]:
    """`copies` default Deployments at once (each one sample of the 600 s deadline)."""
    results: list[dict[str, Any]] = []
    threads = [
        threading.Thread(
            target=lambda i=i: results.extend(
                plain_deployment(bed, f"plain-default-{i}", 1, DEFAULT_DEADLINE_GIVE_UP_S)
            ),
            daemon=True,
        )
        for i in range(copies)
    ]
    for thread in threads:
        thread.start()
        time.sleep(2)
    for thread in threads:
        thread.join()
    return aggregate(
        results,
        recovered_by_itself=any(r["recovered_s"] is not None for r in results),
        spec_after="the bad image (nothing changes it)",
        config="maxUnavailable 0, maxSurge 25%, progressDeadlineSeconds 600 (the default)",
        note="never recovers by itself: the old pods keep serving and the new ones crash; "
        "Kubernetes reports ProgressDeadlineExceeded after the deadline",
    )


def undo_script(bed: Bed, samples: int, log_path: Path) -> dict[str, Any]:
    """A Deployment with the reactive script watching its pods."""
    name = "plain-undo"
    bed.apps.create_namespaced_deployment(bed.namespace, deployment(name, "undo"))
    with log_path.open("ab") as out:
        script = subprocess.Popen(
            [str(UNDO_SCRIPT), bed.namespace, "bench-peer=undo"], stdout=out, stderr=out
        )
    try:
        with Pods(bed, f"app={name}", lambda p: image_of(p) == GOOD) as pods:
            wait_for(
                lambda: len(pods.pods) == REPLICAS and all(r for _, r in pods.pods.values()),
                120,
                f"{name} up",
            )

            def release(i: int) -> None:
                patch = with_image(bad_image(i))
                bed.apps.patch_namespaced_deployment(name, bed.namespace, patch)

            results = run_samples(pods, samples, release, lambda _: None, give_up_s=120)
        image = bed.apps.read_namespaced_deployment(name, bed.namespace).spec.template.spec
    finally:
        script.terminate()
        script.wait(10)
    bed.apps.delete_namespaced_deployment(name, bed.namespace)
    return aggregate(
        results,
        spec_after=f"image {image.containers[0].image} (`rollout undo` rewrote the template; "
        "a Git source still names the bad one)",
        config="maxUnavailable 0, maxSurge 25%; undo-on-failure.sh: kubectl get pods --watch, "
        "`kubectl rollout undo` on CrashLoopBackOff, ImagePullBackOff or ErrImagePull",
    )


# -------------------------------------------------------------- Argo Rollouts


def analysis_template(namespace: str) -> JSON:
    """Fails when a canary pod crash-loops (or fails to pull) at once, or stays not
    Ready for 10 measurements (10 s, like modeldeploy's readyTimeoutSeconds in the
    detect-to-revert runs); measured every second."""
    url = (
        f"{server()}/api/v1/namespaces/{namespace}/pods"
        "?labelSelector=rollouts-pod-template-hash%3D{{args.canary-hash}}"
    )
    web = {
        "url": url,
        "insecure": True,  # the test bed's own CA; a cluster would use a trusted one
        "timeoutSeconds": 5,
        "headers": [{"key": "Authorization", "value": "Bearer {{args.token}}"}],
        "jsonPath": "{$.items}",
    }
    crashing = (
        "any(result, {any(#.status.containerStatuses ?? [], "
        '{#.state.waiting?.reason in ["CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull"]'
        " || #.restartCount > 2})})"
    )
    not_ready = (
        "any(result, {not any(#.status.conditions ?? [], "
        '{#.type == "Ready" && #.status == "True"})})'
    )
    return {
        "apiVersion": "/".join(ROLLOUTS),
        "kind": "AnalysisTemplate",
        "metadata": {"name": ANALYSIS},
        "spec": {
            "args": [{"name": "canary-hash"}, {"name": "token"}],
            "metrics": [
                {
                    "name": "canary-crashing",
                    "interval": "1s",
                    "failureLimit": 0,
                    "failureCondition": crashing,
                    "provider": {"web": web},
                },
                {
                    "name": "canary-not-ready",
                    "interval": "1s",
                    "failureLimit": 9,
                    "failureCondition": not_ready,
                    "provider": {"web": web},
                },
            ],
        },
    }


def rollout(name: str, token: str) -> JSON:
    spec = deployment(name, "argo")["spec"]
    spec["strategy"] = {
        "canary": {
            "maxUnavailable": 0,
            "analysis": {
                "templates": [{"templateName": ANALYSIS}],
                "args": [
                    {"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}},
                    {"name": "token", "value": token},
                ],
            },
        }
    }
    return {
        "apiVersion": "/".join(ROLLOUTS),
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": spec,
    }


def argo(bed: Bed, samples: int, token: str) -> dict[str, Any]:
    """The same bad images on a Rollout whose background analysis aborts it."""
    name = "argo"
    api = (*ROLLOUTS, bed.namespace)
    bed.custom.create_namespaced_custom_object(
        *api, "analysistemplates", analysis_template(bed.namespace)
    )
    bed.custom.create_namespaced_custom_object(*api, "rollouts", rollout(name, token))

    def list_rollouts(**params: Any) -> Any:
        return bed.custom.list_namespaced_custom_object(*api, "rollouts", **params)

    aborted = FirstSeen(list_rollouts, name, lambda r: bool((r.get("status") or {}).get("abort")))
    with aborted, Pods(bed, f"app={name}", lambda p: image_of(p) == GOOD) as pods:
        wait_for(
            lambda: len(pods.pods) == REPLICAS and all(r for _, r in pods.pods.values()),
            120,
            "the Rollout up",
        )

        def release(i: int) -> None:
            patch = with_image(bad_image(i))
            bed.custom.patch_namespaced_custom_object(*api, "rollouts", name, patch)

        phases: list[str | None] = []

        def restore(_: int) -> None:
            # After an abort the spec still names the bad image; writing the stable one
            # back is how its users return to Healthy.
            phases.append(phase(aborted.last))
            bed.custom.patch_namespaced_custom_object(*api, "rollouts", name, with_image(GOOD))
            wait_for(
                lambda: phase(aborted.last) == "Healthy",
                60,
                "the Rollout Healthy again",
            )

        results = run_samples(pods, samples, release, restore, 120, aborted)
    bed.custom.delete_namespaced_custom_object(*api, "rollouts", name)
    return aggregate(
        results,
        phase_after=sorted({p or "unknown" for p in phases}),
        spec_after="the bad image: the Rollout stays Degraded until someone writes the stable "
        "one back",
        config="canary, no steps, maxUnavailable 0, maxSurge 25%; background analysis "
        "(AnalysisTemplate canary-health: web metric on the Kubernetes API every 1 s; "
        "crash-looping or image pull failure: failureLimit 0; not Ready: failureLimit 9)",
    )


# ------------------------------------------------------------------- Flagger

FLAGGER = ("flagger.app", "v1beta1")
FLAGGER_DEADLINE_S = 60  # its Blue/Green tutorial's value


def canary(name: str) -> JSON:
    """Blue/Green on plain Services, no metrics: the analysis runs only on a Ready canary,
    so a crash-looping one is failed by its progress deadline (at the next tick after
    it; the analysis interval cannot go below 10 s)."""
    return {
        "apiVersion": "/".join(FLAGGER),
        "kind": "Canary",
        "metadata": {"name": name},
        "spec": {
            "provider": "kubernetes",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "progressDeadlineSeconds": FLAGGER_DEADLINE_S,
            "service": {"port": 8080},
            "analysis": {"interval": "10s", "threshold": 1, "iterations": 1},
        },
    }


def flagger(bed: Bed, samples: int) -> dict[str, Any]:
    """The same bad images on a Deployment that Flagger's Canary guards. Its pods (the
    primary's and the canary's) carry the template's label `bench-peer=flagger`."""
    name = "flagger"
    api = (*FLAGGER, bed.namespace)
    bed.apps.create_namespaced_deployment(
        bed.namespace, deployment(name, "flagger", FLAGGER_DEADLINE_S)
    )
    bed.custom.create_namespaced_custom_object(*api, "canaries", canary(name))

    def list_canaries(**params: Any) -> Any:
        return bed.custom.list_namespaced_custom_object(*api, "canaries", **params)

    # The Canary stays Failed from the sample before until the next release starts its
    # analysis: a failure counts once a phase other than Failed was seen after the release.
    left_failed = threading.Event()

    def failed_again(body: JSON) -> bool:
        if phase(body) != "Failed":
            left_failed.set()
            return False
        return left_failed.is_set()

    failed = FirstSeen(list_canaries, name, failed_again)
    with failed, Pods(bed, "bench-peer=flagger", lambda p: image_of(p) == GOOD) as pods:
        # Initialized: the primary serves, the target is scaled to zero.
        wait_for(
            lambda: (
                phase(failed.last) == "Initialized"
                and len(pods.pods) == REPLICAS
                and all(r for _, r in pods.pods.values())
            ),
            300,
            "the Canary initialized",
        )

        def release(i: int) -> None:
            left_failed.clear()
            patch = with_image(bad_image(i))
            bed.apps.patch_namespaced_deployment(name, bed.namespace, patch)

        def restore(_: int) -> None:
            # After a rollback the target still names the bad image (scaled to zero);
            # writing the promoted one back leaves the Canary Failed and starts nothing.
            bed.apps.patch_namespaced_deployment(name, bed.namespace, with_image(GOOD))

        results = run_samples(pods, samples, release, restore, 300, failed)
        phase_after = phase(failed.last)
    bed.custom.delete_namespaced_custom_object(*api, "canaries", name)
    bed.apps.delete_namespaced_deployment(name, bed.namespace)
    return aggregate(
        results,
        phase_after=phase_after,
        spec_after="the bad image, the target scaled to 0 and the Canary Failed until someone "
        "writes the promoted image back",
        config=f"Flagger v1.44.0, provider kubernetes (Blue/Green), progressDeadlineSeconds "
        f"{FLAGGER_DEADLINE_S} (its tutorial's), analysis interval 10 s (its floor), threshold "
        "1, iterations 1, no metrics (the analysis runs only on a Ready canary, so the "
        "deadline is what fails a crash-looping one)",
    )
