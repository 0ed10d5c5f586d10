"""The write fence: a process that may not write sends nothing, whichever write it is.

The client points at a closed port on loopback, so a write that got past the fence
fails to connect instead: the two outcomes tell the fence and the network apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kubernetes
import pytest
import urllib3

from modeldeploy.core.plan import Event, SpecChange
from modeldeploy.kube import Fenced, KubeCluster
from tests.unit.builders import resource

DEPLOYMENT = {"kind": "Deployment", "metadata": {"name": "m", "namespace": "ns"}}
WRITES: dict[str, Callable[[KubeCluster], Any]] = {
    "apply": lambda cluster: cluster.apply(DEPLOYMENT),
    "status": lambda cluster: cluster.replace_status(resource(), "1", {}),
    "spec": lambda cluster: cluster.change_spec(resource(), SpecChange("v1", "v2")),
    "patch": lambda cluster: cluster.patch("ns", "m", []),
    "event": lambda cluster: cluster.post_event(resource(), Event("Normal", "R", "m")),
    "delete": lambda cluster: cluster.delete_child("Deployment", resource(), "m-standby"),
}


def unreachable(fence: Callable[[], bool]) -> KubeCluster:
    configuration = kubernetes.client.Configuration()
    configuration.host = "http://127.0.0.1:9"  # nothing listens: a sent request fails
    configuration.retries = 0
    return KubeCluster(api=kubernetes.client.ApiClient(configuration), fence=fence)


@pytest.mark.parametrize("write", WRITES)
def test_a_fenced_write_is_refused_before_any_request(write: str) -> None:
    asked: list[bool] = []

    def fence() -> bool:
        asked.append(True)
        return False

    with pytest.raises(Fenced):
        WRITES[write](unreachable(fence))
    assert asked == [True]


@pytest.mark.parametrize("write", [w for w in WRITES if w != "event"])
def test_an_open_fence_lets_the_write_go_out(write: str) -> None:
    with pytest.raises(urllib3.exceptions.HTTPError):  # it reached the network
        WRITES[write](unreachable(lambda: True))


def test_an_open_fence_lets_an_event_go_out(caplog: pytest.LogCaptureFixture) -> None:
    # An Event that cannot be posted stays owed in status.outbox: False, not an exception.
    assert WRITES["event"](unreachable(lambda: True)) is False
    assert "Connection refused" in caplog.text
