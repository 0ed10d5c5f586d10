"""What the registry is owed (docs/registry.md): the state of each model version.

Part of the pure core, at the end of `decide`, beside the outbox: when a version with
a resolved registry reference is promoted (becomes the last good one), fails, or is
reverted to, a write onto its model version is owed: the tag `modeldeploy.io/state`
(serving, failed, superseded) with `modeldeploy.io/reason`, and, for the version that
serves, spec.registry.mlflow.alias moved onto it. Owed writes live in
`status.registryWrites`, written with the status change they report; the reconcile
makes them after that status write (delivery.write_registry) and the next decision
drops those the registry took. At least once, never before the revert they report,
never in its way: an outage only delays them.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import replace
from datetime import datetime

from modeldeploy import constants as c
from modeldeploy.model.spec import Spec
from modeldeploy.model.status import RegistryWrite, Status
from modeldeploy.model.text import shorten
from modeldeploy.model.times import truncate

LIMIT = 32  # owed writes kept; beyond that the oldest are dropped (a newer one says more)
REASON_LIMIT = 500  # characters of the reason tag
SERVING, FAILED, SUPERSEDED = "serving", "failed", "superseded"
TAG_STATE = f"{c.GROUP}/state"
TAG_REASON = f"{c.GROUP}/reason"
TAG_VERSION = f"{c.GROUP}/version"  # the ModelDeployment version that ran it


def prune(status: Status, written: Set[tuple[str, str, str, datetime]]) -> Status:
    """The status without the writes the registry took."""
    if not written or not status.registry_writes:
        return status
    kept = tuple(w for w in status.registry_writes if w.key not in written)
    return replace(status, registry_writes=kept)


def owe(before: Status, after: Status, spec: Spec, now: datetime) -> Status:
    """`after` with the writes its changes from `before` owe the registry: a version
    newly Failed, a new last good version (and the one it supersedes), a revert."""
    if spec.registry is None:
        return replace(after, registry_writes=()) if after.registry_writes else after
    records = {r.version: r for r in after.registry}
    at = truncate(now)  # as status reads it back: the key stays the same
    owed: list[RegistryWrite] = []

    def add(version: str | None, state: str, reason: str, alias: str | None = None) -> None:
        record = records.get(version or "")
        if record is None:
            return  # not from the registry (or not resolved): nothing to write
        write = RegistryWrite(
            version=record.version,
            model=record.model,
            model_version=record.model_version,
            state=state,
            reason=shorten(reason, REASON_LIMIT),
            at=at,
            alias=alias,
        )
        owed.append(write)

    failed_before = {v.name: v.failed_at for v in before.versions if v.state == c.STATE_FAILED}
    for record in after.versions:
        if record.state != c.STATE_FAILED:
            continue
        if record.name in failed_before and failed_before[record.name] == record.failed_at:
            continue
        why = ": ".join(part for part in (record.reason, record.message) if part)
        add(record.name, FAILED, why or "failed")
    alias = spec.registry.alias
    promoted = after.last_good_version
    if promoted is not None and promoted != before.last_good_version:
        if before.last_good_version is not None:
            add(before.last_good_version, SUPERSEDED, f"superseded by {promoted}")
        add(promoted, SERVING, "promoted: its rollout succeeded", alias)
    for revert in after.reverts:
        if revert not in before.reverts:
            why = f"reverted to: {revert.from_version} failed"
            add(revert.to_version, SERVING, why, alias)
    if not owed:
        return after
    writes = (*after.registry_writes, *owed)
    return replace(after, registry_writes=writes[-LIMIT:])
