"""A ModelDeployment as read: identity, its parsed spec (or why it cannot be), its status.

The one function the edges call on a watched body, so a spec that cannot be
read becomes a `SpecError` value the core reports, never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modeldeploy import constants as c
from modeldeploy.model.spec import Spec, SpecError, parse_spec
from modeldeploy.model.status import Status, parse_status


@dataclass(frozen=True)
class Resource:
    name: str
    namespace: str
    uid: str
    generation: int
    spec: Spec | SpecError
    status: Status = field(default_factory=Status)
    retry_version: str | None = None  # the modeldeploy.io/retry annotation, if set
    refresh_config: str | None = None  # modeldeploy.io/refresh-config: a new snapshot of it
    refresh_registry: str | None = None  # modeldeploy.io/refresh-registry: resolve it again
    # Field managers that own spec.activeVersion (from managedFields): after a revert,
    # another manager applying the reverted value acknowledges it.
    active_version_managers: tuple[str, ...] = ()


def parse_resource(body: Mapping[str, Any]) -> Resource:
    """A watched ModelDeployment body as the core sees it; never raises for a bad spec."""
    meta = body.get("metadata") or {}
    status = parse_status(body.get("status"))
    try:
        # Each version as its pods run it: with the configuration snapshot status records.
        spec: Spec | SpecError = parse_spec(
            body.get("spec") or {}, status.snapshots(), status.resolutions()
        )
    except SpecError as error:
        spec = error
    except (TypeError, ValueError) as error:
        spec = SpecError(f"spec cannot be read: {error}")
    return Resource(
        name=meta["name"],
        namespace=meta.get("namespace", "default"),
        uid=meta.get("uid", ""),
        generation=int(meta.get("generation", 0)),
        spec=spec,
        status=status,
        retry_version=(meta.get("annotations") or {}).get(c.ANNOTATION_RETRY),
        refresh_config=(meta.get("annotations") or {}).get(c.ANNOTATION_REFRESH_CONFIG),
        refresh_registry=(meta.get("annotations") or {}).get(c.ANNOTATION_REFRESH_REGISTRY),
        active_version_managers=tuple(body.get(ACTIVE_VERSION_MANAGERS) or ())
        or active_version_managers(meta),
    )


ACTIVE_VERSION_MANAGERS = "activeVersionManagers"  # kept beside a cached body (handlers)


def active_version_managers(meta: Mapping[str, Any]) -> tuple[str, ...]:
    """Who owns spec.activeVersion, read from managedFields."""
    return tuple(
        sorted(
            {
                str(entry.get("manager"))
                for entry in meta.get("managedFields") or ()
                if "f:activeVersion" in ((entry.get("fieldsV1") or {}).get("f:spec") or {})
            }
        )
    )


def released(entries: list[dict[str, Any]], manager: str) -> list[dict[str, Any]]:
    """managedFields without `manager`'s hold on spec.activeVersion (an entry left
    owning nothing is dropped)."""
    out = []
    for entry in entries:
        spec = ((entry.get("fieldsV1") or {}).get("f:spec")) or {}
        if entry.get("manager") != manager or "f:activeVersion" not in spec:
            out.append(entry)
            continue
        rest = {k: v for k, v in spec.items() if k != "f:activeVersion"}
        fields = {k: v for k, v in entry["fieldsV1"].items() if k != "f:spec"}
        if rest:
            fields["f:spec"] = rest
        if fields:
            out.append({**entry, "fieldsV1": fields})
    return out
