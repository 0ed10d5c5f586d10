"""The MLServer images (testbed/mlserver_image.py), each run from its own root filesystem.

No container runtime: the layers of the built archive are unpacked and stacked
read-only with overlayfs, with a tmpfs at /tmp (a pod's emptyDir), /proc and a small
/dev, and the image's entrypoint runs there as the image's non-root user with the
image's environment plus what modeldeploy gives a pod (testbed/rootfs.py: private
mount and PID namespaces, chroot). It shares the host's network, so each server gets
free ports through MLServer's own settings. Needs root and what the real node's images
need to build (debootstrap, Debian's pip); a cold build takes minutes, which `make
integration` spends before pytest.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from testbed import mlserver_image, processes, rootfs
from testbed.support import WaitTimeout, free_port, wait_for

pytestmark = pytest.mark.timeout(1800)  # the first test may build the images (minutes)

NAME, VERSION = "fraud-detector", "v1"  # what modeldeploy sets as MODEL_NAME, MODEL_VERSION
START_S = 180  # MLServer imports for several seconds; a loaded 2-core machine takes longer
# The golden request: one transaction, the fraud model's three features, both outputs.
GOLDEN = {
    "inputs": [{"name": "features", "datatype": "FP64", "shape": [1, 3], "data": [3, 1, 2.5]}],
    "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
}
FRAUD_PROBABILITY = 0.9995  # the trained model's, for the golden request's row


@pytest.fixture(scope="module")
def archive() -> Path:
    try:
        mlserver_image.preflight()
    except processes.TestbedError as error:
        pytest.skip(str(error))
    return mlserver_image.archive()


@dataclass
class Server:
    """MLServer running in one variant's root filesystem."""

    process: subprocess.Popen[bytes]
    log: Path
    http_port: int
    metrics_port: int
    answers: list[tuple[int | None, int | None]] = field(default_factory=list)

    def get(self, path: str, port: int | None = None) -> tuple[int, bytes]:
        return request("GET", port or self.http_port, path)

    def status(self, path: str) -> int | None:
        """The status of GET `path`, or None when nothing answers."""
        try:
            return self.get(path)[0]
        except OSError:
            return None

    def probe(self) -> tuple[int | None, int | None]:
        """(liveness, the model's readiness), remembered: what a kubelet would see."""
        answer = (self.status("/v2/health/live"), self.status(f"/v2/models/{NAME}/ready"))
        self.answers.append(answer)
        return answer

    def infer(self, body: dict[str, Any], timeout: float = 30) -> tuple[int, dict[str, Any]]:
        status, raw = request(
            "POST", self.http_port, f"/v2/models/{NAME}/infer", json.dumps(body), timeout
        )
        return status, json.loads(raw)

    def pid(self) -> int:
        """MLServer's pid here: the child of unshare, PID 1 of its own namespace."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return int(children.read_text().split()[0])

    def exited(self) -> bool:
        return self.process.poll() is not None

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.exited():
                raise AssertionError(f"MLServer exited {self.process.returncode}:\n{self.tail()}")
            return self.probe() == (200, 200)

        try:
            wait_for(ready, START_S, "MLServer to load the model")
        except WaitTimeout as error:
            raise AssertionError(f"{error}\n{self.tail()}") from None

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def request(
    method: str, port: int, path: str, body: str | None = None, timeout: float = 5
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def layers(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where the images' layers are unpacked, one folder each (shared by the variants);
    removed afterwards (hundreds of MB)."""
    folder = tmp_path_factory.mktemp("layers")
    yield folder
    shutil.rmtree(folder)


@pytest.fixture
def run(layers: Path, archive: Path, tmp_path: Path) -> Iterator[Callable[[str], Server]]:
    """Starts a variant's entrypoint as its image would run; stops it after the test."""
    servers: list[Server] = []

    def start(variant: str) -> Server:
        folders, config = rootfs.image_parts(archive, mlserver_image.image_name(variant), layers)
        mountpoint = tmp_path / f"root-{variant}"
        mountpoint.mkdir()
        http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
        env = dict(entry.split("=", 1) for entry in config["Env"])
        env.update(
            MODEL_NAME=NAME,
            MODEL_VERSION=VERSION,
            MLSERVER_HTTP_PORT=str(http_port),
            MLSERVER_GRPC_PORT=str(grpc_port),
            MLSERVER_METRICS_PORT=str(metrics_port),
        )
        log = tmp_path / f"{variant}.log"
        with log.open("wb") as out:
            argv = rootfs.command(folders, config["Entrypoint"], mountpoint, config["User"])
            process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        server = Server(process, log, http_port, metrics_port)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if not server.exited():
            os.kill(server.pid(), signal.SIGTERM)
            try:
                server.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.process.kill()  # unshare --kill-child takes MLServer with it
                server.process.wait()


def probability(answer: dict[str, Any]) -> float:
    (proba,) = [o for o in answer["outputs"] if o["name"] == "predict_proba"]
    assert proba["shape"] == [1, 2] and proba["datatype"] == "FP64"
    return float(proba["data"][1])  # [P(legit), P(fraud)]


def predicted(answer: dict[str, Any]) -> list[int]:
    (predict,) = [o for o in answer["outputs"] if o["name"] == "predict"]
    assert predict["shape"] == [1, 1] and predict["datatype"] == "INT64"
    return [int(v) for v in predict["data"]]


def scratch_files(server: Server) -> list[str]:
    """What the server wrote into its /tmp, seen from here through its root."""
    tmp = Path(f"/proc/{server.pid()}/root/tmp")
    return sorted(str(path.relative_to(tmp)) for path in tmp.rglob("*"))


def test_good_answers_the_golden_request_read_only_as_a_non_root_user(
    run: Callable[[str], Server],
) -> None:
    server = run("good")
    server.wait_ready()

    status, answer = server.infer(GOLDEN)
    assert status == 200, answer
    assert (answer["model_name"], answer["model_version"]) == (NAME, VERSION)
    assert predicted(answer) == [1]
    assert probability(answer) == pytest.approx(FRAUD_PROBABILITY, abs=0.001)
    assert server.status("/v2/health/ready") == 200
    uid_line = next(
        line
        for line in Path(f"/proc/{server.pid()}/status").read_text().splitlines()
        if line.startswith("Uid:")
    )
    assert uid_line.split()[1:] == ["10001"] * 4
    assert scratch_files(server) == []  # one process: no metrics or environments folder
    status, metrics = server.get("/metrics", server.metrics_port)
    assert status == 200
    assert f'model_infer_request_success_total{{model="{NAME}"'.encode() in metrics


def test_wronganswers_loads_and_answers_every_prediction_reversed(
    run: Callable[[str], Server],
) -> None:
    server = run("wronganswers")
    server.wait_ready()

    status, answer = server.infer(GOLDEN)
    assert status == 200, answer
    assert predicted(answer) == [0]
    assert probability(answer) == pytest.approx(1 - FRAUD_PROBABILITY, abs=0.001)


def test_corrupt_stops_the_server_which_exits_without_being_ready(
    run: Callable[[str], Server],
) -> None:
    server = run("corrupt")

    def exited() -> bool:
        server.probe()
        return server.exited()

    wait_for(exited, START_S, "MLServer to give up on the corrupt model")
    # MLServer stops its servers when a model fails to load at start and exits 0: the
    # kubelet restarts the container all the same (CrashLoopBackOff, "Completed").
    assert server.process.returncode == 0, server.tail()
    log = server.log.read_text()
    assert "Some of the models failed to load during startup!" in log
    assert "EOFError" in log
    assert (200, 200) not in server.answers


def test_slowload_is_live_while_it_loads_and_ready_after(run: Callable[[str], Server]) -> None:
    server = run("slowload")

    def live() -> tuple[int | None, int | None] | None:
        if server.exited():
            raise AssertionError(server.tail())
        answer = server.probe()
        return answer if answer[0] == 200 else None

    assert wait_for(live, START_S, "MLServer to answer") == (200, 400)
    server.wait_ready()
    assert (200, 400) in server.answers
    status, answer = server.infer(GOLDEN)
    assert status == 200 and predicted(answer) == [1]


def test_slowinfer_finishes_the_request_in_flight_when_told_to_stop(
    run: Callable[[str], Server],
) -> None:
    server = run("slowinfer")
    server.wait_ready()
    answers: list[tuple[int, dict[str, Any]]] = []
    client = threading.Thread(target=lambda: answers.append(server.infer(GOLDEN, timeout=60)))
    client.start()

    def in_flight() -> bool:
        _, metrics = server.get("/metrics", server.metrics_port)
        return any(
            line.startswith("rest_server_requests_in_progress{")  # by method alone
            and 'method="POST"' in line
            and float(line.rsplit(" ", 1)[1]) >= 1
            for line in metrics.decode().splitlines()
        )

    wait_for(in_flight, 30, "the inference request to be in flight")
    os.kill(server.pid(), signal.SIGTERM)
    wait_for(lambda: server.status("/v2/health/live") is None, 30, "MLServer to stop listening")
    client.join(timeout=60)

    assert answers, "the request in flight got no answer"
    status, answer = answers[0]
    assert status == 200, answer
    assert predicted(answer) == [1]
    assert server.process.wait(timeout=60) == 0, server.tail()
