"""What the admin configured for the whole operator, as the pure core needs to know it.

Part of the model: flags (and the install manifests) become one frozen `Settings`
the runtime passes to every decision, so the core can refuse a tenant's URL the
admin did not allow before any request is made.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modeldeploy.model.egress import EgressPolicy


@dataclass(frozen=True)
class Settings:
    egress: EgressPolicy = field(default_factory=EgressPolicy)
