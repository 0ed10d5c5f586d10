"""The caches the watches fill: one object under one key at a time, gone when deleted.

The runtime reads these stores for every reconcile and the resync forgets what a
re-list no longer shows (docs/architecture.md); tests/e2e drive them through real
watches.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from modeldeploy.caches import Caches, Store
from modeldeploy.model.observed import PodState

A, B = ("ns", "a"), ("ns", "b")


def pod(name: str, owner: str = "a") -> PodState:
    return PodState(name=name, owner=owner, template_hash=None, created_at=None, uid=name)


def test_an_object_is_under_the_key_it_was_last_seen_with() -> None:
    store: Store[PodState] = Store()
    store.put(("ns", "p", "u1"), A, pod("p"))
    store.put(("ns", "p", "u1"), B, pod("p", owner="b"))  # relabelled
    assert store.get(A) == ()
    assert A not in store
    assert store.get(B) == (pod("p", owner="b"),)


def test_a_discarded_object_leaves_its_key_and_says_which_it_was() -> None:
    store: Store[PodState] = Store()
    store.put(("ns", "p", "u1"), A, pod("p"))
    store.put(("ns", "q", "u2"), A, pod("q"))
    assert store.discard(("ns", "p", "u1")) == A
    assert store.get(A) == (pod("q"),)
    assert store.discard(("ns", "q", "u2")) == A
    assert A not in store
    assert store.held_keys() == []
    assert store.discard(("ns", "q", "u2")) is None  # twice: nothing to do


def test_an_object_no_resource_claims_is_seen_but_held_under_no_key() -> None:
    store: Store[PodState] = Store()
    store.put(("ns", "stray", "u3"), None, None)
    assert store.identities() == {("ns", "stray", "u3"): None}
    assert store.held_keys() == []


def test_a_resource_is_read_with_its_own_children_only() -> None:
    caches = Caches.empty()
    caches.resources.put(("ns", "a", "r1"), A, {"metadata": {"name": "a"}})
    caches.pods.put(("ns", "p", "u1"), A, pod("p"))
    caches.pods.put(("ns", "q", "u2"), B, pod("q", owner="b"))
    read = caches.read(A)
    assert read is not None
    body, observed = read
    assert body == {"metadata": {"name": "a"}}
    assert observed.pods == (pod("p"),)
    assert caches.read(B) is None  # no such resource (yet): its children wait


identities = st.tuples(st.just("ns"), st.sampled_from("pqrs"), st.sampled_from(["u1", "u2"]))
keys = st.sampled_from([A, B, None])
steps = st.lists(st.tuples(identities, keys, st.booleans()), max_size=30)


@given(steps)
def test_the_store_holds_what_the_last_event_of_each_object_said(
    events: list[tuple[tuple[str, str, str], tuple[str, str] | None, bool]],
) -> None:
    store: Store[str] = Store()
    model: dict[tuple[str, str, str], tuple[str, str] | None] = {}
    for identity, key, deleted in events:
        if deleted:
            store.discard(identity)
            model.pop(identity, None)
        else:
            store.put(identity, key, None if key is None else identity[1])
            model[identity] = key
    assert store.identities() == model
    for key in (A, B):
        held = sorted(i[1] for i, k in model.items() if k == key)
        assert sorted(store.get(key)) == held
        assert (key in store) == bool(held)


def test_each_store_is_found_by_its_kind() -> None:
    caches = Caches.empty()
    assert all(caches.store(kind) is store for kind, store in caches.stores())
