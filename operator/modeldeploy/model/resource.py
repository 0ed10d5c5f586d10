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


def parse_resource(body: Mapping[str, Any]) -> Resource:
    """A watched ModelDeployment body as the core sees it; never raises for a bad spec."""
    meta = body.get("metadata") or {}
    try:
        spec: Spec | SpecError = parse_spec(body.get("spec") or {})
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
        status=parse_status(body.get("status")),
        retry_version=(meta.get("annotations") or {}).get(c.ANNOTATION_RETRY),
    )
