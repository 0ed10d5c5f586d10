"""Room for new pods: a full pool is a wait, a pod no node can ever hold a verdict (B23).

Part of the pure core, under `signals` and `progress`. The scheduler says why it cannot
place a pod in its PodScheduled condition ("0/4 nodes are available: 2 Insufficient
nvidia.com/gpu, 2 node(s) had untolerated taint {...}. preemption: ..."). Each group
there is either room (a resource in use, pods per node, ports, a cordoned node, other
pods' affinity): the pool may free it, so the version is never judged for it; or the
pod's own asking (a node selector or affinity no node matches, a taint it does not
tolerate, a volume pinned elsewhere): no amount of waiting helps. "Insufficient R" is
the version's own fault when it asks for more R than any node has at all (the adapter
reads the nodes' allocatable for that: `Observed.too_large`). Anything else the
scheduler says keeps today's rule: unschedulableGraceSeconds, then Unschedulable.

The strategy (docs/capacity.md): Surge adds new pods before old ones go (maxUnavailable
0) and so needs spare room; Replace takes up to maxUnavailable old pods down first; Auto
surges and, when a new pod waits for room, goes on with this rollout as Replace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modeldeploy import constants as c
from modeldeploy.model.observed import PodState
from modeldeploy.model.spec import RolloutPolicy

# What the scheduler's filters say (kube-scheduler's plugins, v1.33), by who can fix it.
NEVER_FITS = (
    "didn't match Pod's node affinity/selector",
    "had untolerated taint",
    "didn't match the requested node name",
    "had volume node affinity conflict",
)
ROOM = (
    # The taints the node lifecycle controller sets for a node's condition (not ready yet,
    # unreachable, under pressure, cordoned) and a cloud node not initialized yet: they go.
    "had untolerated taint {node.kubernetes.io/",
    "had untolerated taint {node.cloudprovider.kubernetes.io/",
    "Insufficient ",
    "Too many pods",
    "didn't have free ports",
    "were unschedulable",  # cordoned: a drain ends
    "didn't match pod affinity rules",
    "didn't match pod anti-affinity rules",
    "didn't satisfy existing pods anti-affinity rules",
    "didn't match pod topology spread constraints",
)
_GROUP = re.compile(r"(\d+) (.+?)(?=, \d+ |$)")

WAIT = "Wait"  # the pool is full: wait for room, never a verdict
NEVER = "Never"  # no node can ever hold it: fail now
UNKNOWN = "Unknown"  # something else: unschedulableGraceSeconds decides


@dataclass(frozen=True)
class Placement:
    kind: str  # WAIT, NEVER or UNKNOWN
    why: str


def reasons(message: str | None) -> tuple[str, ...]:
    """The scheduler's reasons for the nodes it tried, without counts or the preemption
    part: "0/2 nodes are available: 2 Insufficient nvidia.com/gpu. preemption: ..."
    gives ("Insufficient nvidia.com/gpu",)."""
    if not message or "are available: " not in message:
        return ()
    listed = message.split("are available: ", 1)[1].split(". preemption:", 1)[0].rstrip(".")
    return tuple(match.group(2).strip() for match in _GROUP.finditer(listed))


def insufficient(pod: PodState) -> bool:
    """The scheduler found too little of some resource for the pod on a node: whether no
    node could ever hold it is then a question for the nodes' allocatable."""
    return any(r.startswith("Insufficient ") for r in reasons(pod.unschedulable_message))


def placement(pod: PodState, too_large: str | None) -> Placement:
    """Whether the unschedulable `pod` waits for room or can never run. `too_large`: why
    no node could hold it even empty (from the nodes' allocatable), if so."""
    said = pod.unschedulable_message or "no node fits"
    found = reasons(pod.unschedulable_message)
    if too_large is not None and insufficient(pod):
        return Placement(NEVER, f"{too_large} ({said})")
    if found and all(_never(r) for r in found):
        return Placement(NEVER, f"no node matches it: {said}")
    if any(k in r for r in found for k in ROOM):
        return Placement(WAIT, said)
    return Placement(UNKNOWN, said)


def _never(reason: str) -> bool:
    """The pod's own asking rules this node group out, for as long as the node is there."""
    return any(k in reason for k in NEVER_FITS) and not any(k in reason for k in ROOM)


def started_strategy(policy: RolloutPolicy) -> str:
    """How a rollout begins: Replace when asked for, else Surge (Auto included)."""
    return c.STRATEGY_REPLACE if policy.strategy == c.STRATEGY_REPLACE else c.STRATEGY_SURGE


def switches(
    policy: RolloutPolicy, strategy: str | None, capacity_wait: str | None, replacing: bool
) -> bool:
    """Auto, surging, and a new pod waits for room: go on as Replace. Not when nothing is
    being replaced (a first rollout: taking old pods down would free nothing)."""
    return (
        policy.strategy == c.STRATEGY_AUTO
        and strategy != c.STRATEGY_REPLACE
        and capacity_wait is not None
        and replacing
    )


def rolling_update(policy: RolloutPolicy, strategy: str) -> dict[str, int]:
    """The Deployment's rollingUpdate for a rollout made `strategy`'s way."""
    if strategy == c.STRATEGY_REPLACE:
        return {"maxSurge": 0, "maxUnavailable": policy.max_unavailable}
    # maxUnavailable 0: old pods stay until new ones are Ready, so a bad version never
    # costs serving capacity.
    return {"maxSurge": policy.max_surge, "maxUnavailable": 0}
