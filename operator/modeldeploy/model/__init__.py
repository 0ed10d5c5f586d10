"""Typed, frozen views of a ModelDeployment and of what the cluster shows, parsed once.

The floor above `constants`: the kube layer parses raw dicts into these types at the
boundary, the pure core (`modeldeploy.core`) only ever sees them, and status types
turn back into the JSON the CRD declares. Times are `datetime` here; strings exist
only in JSON (`model.times`).
"""
