"""Configuration snapshots (docs/validation-and-config.md): a version's ConfigMap travels with it.

Part of the pure core, under `decide`: at a version's first rollout the edge copies
the ConfigMap it names into an immutable snapshot named after the resource, the
version and the content hash; `status.configs` records it, the version's pods mount
it, and its hash is part of the version's template hash. This module says which
snapshots to take, folds what was taken into status, and which to delete once no
version needs them and no pod mounts them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from modeldeploy import constants as c
from modeldeploy.core.draft import Draft
from modeldeploy.core.plan import Event, Problem, SnapshotRequest
from modeldeploy.core.render import common_labels, owner_reference
from modeldeploy.model.observed import Observed, SnapshotResult
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import JSON, Spec, with_snapshots
from modeldeploy.model.status import ConfigRecord, Status
from modeldeploy.model.text import shorten

HASH_LENGTH = 16  # hex characters of the content hash kept in status and on labels
NAME_HASH_LENGTH = 8  # of them in the snapshot's name
NAME_LIMIT = 253  # a ConfigMap's name: a DNS subdomain
SOURCE_RETRY_S = 10.0  # a missing source is looked for again this often (it is not watched)


def content_hash(data: Mapping[str, str], binary_data: Mapping[str, str]) -> str:
    """The hash of a ConfigMap's content: its data and binaryData, whatever their order."""
    content = json.dumps(
        {"binaryData": dict(binary_data), "data": dict(data)},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(content.encode()).hexdigest()[:HASH_LENGTH]


def snapshot_name(resource: str, version: str, digest: str) -> str:
    """`<resource>-<version>-<hash8>`: within a ConfigMap name's 253 characters, which the
    CRD's bounds (63 and 63) guarantee; cut, with a hash of both kept, if ever longer."""
    name = f"{resource}-{version}-{digest[:NAME_HASH_LENGTH]}"
    if len(name) <= NAME_LIMIT:
        return name
    both = hashlib.sha256(f"{resource}/{version}".encode()).hexdigest()[:8]
    room = NAME_LIMIT - len(both) - NAME_HASH_LENGTH - 2
    return f"{name[:room].rstrip('-.')}-{both}-{digest[:NAME_HASH_LENGTH]}"


def render_snapshot(
    resource: Resource,
    version: str,
    source: str,
    source_body: Mapping[str, object],
    digest: str,
) -> JSON:
    """The immutable snapshot of `source` (its body as read) for `version`, owned by the
    resource so it goes when the resource goes."""
    snapshot: JSON = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": snapshot_name(resource.name, version, digest),
            "namespace": resource.namespace,
            "labels": {
                **common_labels(resource.name),
                c.LABEL_VERSION: version,
                c.LABEL_CONFIG_HASH: digest,
            },
            "annotations": {f"{c.GROUP}/config-source": source},
            "ownerReferences": [owner_reference(resource)],
        },
        "immutable": True,
    }
    for key in ("data", "binaryData"):
        if source_body.get(key):
            snapshot[key] = source_body[key]
    return snapshot


def is_snapshot(body: Mapping[str, object], resource: Resource, digest: str) -> bool:
    """Whether an existing ConfigMap is this resource's snapshot of that content (a name
    taken by someone else is never used, nor overwritten)."""
    meta = body.get("metadata")
    owners = meta.get("ownerReferences") if isinstance(meta, Mapping) else None
    ours = (
        any(
            isinstance(ref, Mapping) and ref.get("controller") and ref.get("uid") == resource.uid
            for ref in owners or ()
        )
        if isinstance(owners, list)
        else False
    )
    data, binary = body.get("data") or {}, body.get("binaryData") or {}
    if not isinstance(data, Mapping) or not isinstance(binary, Mapping):
        return False
    return ours and content_hash(data, binary) == digest


def step(draft: Draft, resource: Resource, observed: Observed, now: datetime) -> Draft:
    """Fold the snapshots just taken into status, retire what the spec no longer names,
    and say which to delete; the draft's spec is then the versions as their pods run them.
    The active version without its snapshot yet is not rolled out (`waiting`)."""
    records, taken = _current(draft.status, draft.spec, observed, now)
    status = replace(draft.status, configs=records)
    spec = with_snapshots(draft.spec, status.snapshots())
    _, consume, events = _refresh(resource, spec, observed)
    active = spec.active
    waiting = active.config_map is not None and active.snapshot is None
    failed = next((r for r in observed.snapshots if r.version == active.name and r.error), None)
    draft = replace(
        draft,
        status=status,
        spec=spec,
        deletes=_garbage(records, observed),
        waiting=waiting,
        consume_refresh=consume,
    ).said(*taken, *events)
    if waiting and failed is not None:
        said = f"spec.versions[{active.name}].config: {failed.error}; not rolling it out"
        stall = Problem(c.REASON_INVALID_SPEC, shorten(said))
        return replace(draft, stall=stall).wake_in(SOURCE_RETRY_S)
    return draft


def wanted(
    status: Status, resource: Resource, spec: Spec, observed: Observed, now: datetime
) -> tuple[SnapshotRequest, ...]:
    """The snapshots to take before deciding (core/reads.reads): the active version's
    when it has none, and the one a retry or refresh annotation names."""
    records, _ = _current(status, spec, observed, now)
    spec = with_snapshots(spec, replace(status, configs=records).snapshots())
    refresh, _, _ = _refresh(resource, spec, observed)
    return _requests(spec, observed, refresh)


def _current(
    status: Status, spec: Spec, observed: Observed, now: datetime
) -> tuple[tuple[ConfigRecord, ...], tuple[Event, ...]]:
    """The records with what was just taken folded in and what the spec left retired;
    the retired ones already deleted are dropped."""
    records, taken = _folded(status.configs, observed.snapshots, now)
    records = _retired(records, spec, now)
    records = tuple(
        r for r in records if r.retired_at is None or r.name not in observed.deleted_snapshots
    )
    return records, taken


def _folded(
    records: tuple[ConfigRecord, ...], taken: tuple[SnapshotResult, ...], now: datetime
) -> tuple[tuple[ConfigRecord, ...], tuple[Event, ...]]:
    """Each snapshot taken becomes its version's current one; the one before is retired."""
    out = list(records)
    events: list[Event] = []
    for result in taken:
        if result.name is None or result.hash is None:
            continue
        current = next(
            (r for r in out if r.version == result.version and r.retired_at is None), None
        )
        if current is not None and current.name == result.name:
            if current.source != result.source:  # a renamed source with the same content
                out[out.index(current)] = replace(current, source=result.source)
            continue
        out = [
            replace(r, retired_at=now) if r is current else r
            for r in out
            if r.name != result.name  # a retired record of the same content comes back
        ]
        out.append(
            ConfigRecord(
                version=result.version,
                source=result.source,
                name=result.name,
                hash=result.hash,
                taken_at=now,
            )
        )
        events.append(
            Event(
                "Normal",
                c.EVENT_CONFIG_SNAPSHOT,
                f"{result.version}'s configuration: ConfigMap {result.source} copied into "
                f"the immutable snapshot {result.name} (content hash {result.hash})",
            )
        )
    return tuple(sorted(out, key=lambda r: (r.version, r.taken_at))), tuple(events)


def _retired(
    records: tuple[ConfigRecord, ...], spec: Spec, now: datetime
) -> tuple[ConfigRecord, ...]:
    """A snapshot whose version left the spec, or now names another source (or none), is
    retired: deleted once no pod mounts it."""

    def still_wanted(record: ConfigRecord) -> bool:
        return record.version in spec.versions and (
            spec.versions[record.version].config_map == record.source
        )

    return tuple(
        replace(r, retired_at=now) if r.retired_at is None and not still_wanted(r) else r
        for r in records
    )


def _garbage(records: tuple[ConfigRecord, ...], observed: Observed) -> tuple[str, ...]:
    """Retired snapshots that no live pod of the resource mounts any more."""
    mounted = {p.config_hash for p in observed.pods if p.config_hash and not p.deleting}
    current = {r.name for r in records if r.retired_at is None}
    return tuple(
        r.name
        for r in records
        if r.retired_at is not None and r.hash not in mounted and r.name not in current
    )


def _refresh(
    resource: Resource, spec: Spec, observed: Observed
) -> tuple[str | None, bool, tuple[Event, ...]]:
    """The version whose snapshot is to be taken again, if any: named by the retry
    annotation or the refresh-config one; and whether the latter is handled now."""
    retried = resource.retry_version
    target = None
    if retried is not None and retried in spec.versions and spec.versions[retried].config_map:
        target = retried
    asked = resource.refresh_config
    if asked is None:
        return target, False, ()
    if asked not in spec.versions or spec.versions[asked].config_map is None:
        ignored = Event(
            "Warning",
            c.EVENT_CONFIG_REFRESH_FAILED,
            f"{c.ANNOTATION_REFRESH_CONFIG}={asked} names no version with a config; ignored",
        )
        return target, True, (ignored,)
    result = next((r for r in observed.snapshots if r.version == asked), None)
    if result is not None and result.error:
        failed = Event(
            "Warning",
            c.EVENT_CONFIG_REFRESH_FAILED,
            shorten(f"no new snapshot of {asked}'s configuration: {result.error}", 1024),
        )
        return target, True, (failed,)
    return target or asked, result is not None, ()


def _requests(spec: Spec, observed: Observed, refresh: str | None) -> tuple[SnapshotRequest, ...]:
    """The active version's snapshot when it has none (its first rollout, or its source
    changed), and a refreshed version's; never twice in one reconcile."""
    wanted = [spec.active_version]
    if refresh is not None and refresh != spec.active_version:
        wanted.append(refresh)
    requests = []
    for name in wanted:
        version = spec.versions[name]
        if version.config_map is None:
            continue
        if version.snapshot is not None and name != refresh:
            continue
        if any(r.version == name for r in observed.snapshots):
            continue  # taken (or tried) in this very reconcile
        requests.append(SnapshotRequest(version=name, source=version.config_map))
    return tuple(requests)
