"""The operator's caches: the latest ModelDeployments and their children, by key.

Between the kopf event handlers that fill them (handlers.py) and the runtime that
reads them (runtime.py). Our own stores rather than kopf indexes: kopf holds every
handler of an indexed kind back until all indexes are filled, by a wait in which each
listed object wakes every other one, and at a few thousand objects that took minutes
of CPU after each start (docs/operations.md). Here the runtime's queue waits instead,
until each store holds what a LIST of its kind showed (`Runtime`'s warm-up).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from modeldeploy.core.render import standby_name
from modeldeploy.model.observed import ChildState, Observed, PodState, ReplicaSetState
from modeldeploy.ports import Identity, Key

V = TypeVar("V")


class Store(Generic[V]):
    """One kind's objects as the watch last delivered them, grouped by key. An object
    no ModelDeployment claims is remembered as seen, with no key and no value."""

    def __init__(self) -> None:
        self._by_key: dict[Key, dict[Identity, V]] = {}
        self._key_of: dict[Identity, Key | None] = {}

    def put(self, identity: Identity, key: Key | None, value: V | None) -> None:
        """The object as it is now; it leaves the key it was under before."""
        self.discard(identity)
        self._key_of[identity] = key if value is not None else None
        if key is not None and value is not None:
            self._by_key.setdefault(key, {})[identity] = value

    def discard(self, identity: Identity) -> Key | None:
        """The object is gone; the key it was under."""
        key = self._key_of.pop(identity, None)
        if key is not None:
            group = self._by_key[key]
            group.pop(identity, None)
            if not group:
                del self._by_key[key]
        return key

    def get(self, key: Key) -> tuple[V, ...]:
        return tuple(self._by_key.get(key, {}).values())

    def held_keys(self) -> list[Key]:
        return list(self._by_key)

    def identities(self) -> dict[Identity, Key | None]:
        """Every object seen and not gone, and the key it is under."""
        return dict(self._key_of)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key


@dataclass(frozen=True)
class Caches:
    """Everything that carries our name label, keyed by (namespace, ModelDeployment
    name). Whether a child is really ours (owner uids) the core decides."""

    resources: Store[Mapping[str, Any]]
    deployments: Store[ChildState]
    replica_sets: Store[ReplicaSetState]
    services: Store[ChildState]
    pods: Store[PodState]
    budgets: Store[ChildState]  # PodDisruptionBudgets (spec.disruption)

    @classmethod
    def empty(cls) -> Caches:
        return cls(Store(), Store(), Store(), Store(), Store(), Store())

    def read(self, key: Key) -> tuple[Mapping[str, Any], Observed] | None:
        bodies = self.resources.get(key)
        if not bodies:
            return None  # deleted; owner references clean up the children (B11)
        _, name = key
        return bodies[0], Observed(
            deployment=_named(self.deployments.get(key), name),
            standby=_named(self.deployments.get(key), standby_name(name)),
            service=_named(self.services.get(key), name),
            budget=_named(self.budgets.get(key), name),
            replica_sets=self.replica_sets.get(key),
            pods=self.pods.get(key),
        )

    def store(self, kind: str) -> Store[Any]:
        """One kind's store by its field name ("pods"): no mapping built per watch event."""
        found = getattr(self, kind)
        assert isinstance(found, Store), kind
        return found

    def stores(self) -> Iterator[tuple[str, Store[Any]]]:
        yield from (
            ("resources", self.resources),
            ("deployments", self.deployments),
            ("replica_sets", self.replica_sets),
            ("services", self.services),
            ("pods", self.pods),
            ("budgets", self.budgets),
        )


def _named(children: Iterable[ChildState], name: str) -> ChildState | None:
    """The child named after the resource: a labelled one of another name is not ours."""
    return next((child for child in children if child.name == name), None)
