"""The reference model server (testbed/modelserver), run for real on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed import images
from testbed.modelserver import server
from testbed.support import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]


def run_module(module: str, *args: str, **popen: Any) -> subprocess.Popen[str]:
    """`python -m testbed.modelserver.MODULE ARGS` from the repository root."""
    command = [sys.executable, "-m", f"testbed.modelserver.{module}", *args]
    return subprocess.Popen(command, cwd=ROOT, text=True, **popen)


def train(out: Path) -> None:
    with run_module("train", str(out)) as process:
        assert process.wait(timeout=120) == 0


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "fraud.json"
    train(path)
    return path


def variant(model_file: Path, tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "variant.json"
    path.write_text(json.dumps({**json.loads(model_file.read_text()), **changes}))
    return path


def call(port: int, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            raw = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as error:
        raw, status = error.read().decode(), error.code
    return status, (json.loads(raw) if raw.startswith("{") else raw)


@pytest.fixture
def running(model_file: Path) -> Iterator[int]:
    http, _ = server.serve(0, "fraud", "v1", f"file://{model_file}")
    yield http.server_port
    http.shutdown()
    http.server_close()


FEATURES = {"name": "features", "datatype": "FP64"}


def test_training_is_repeatable_and_learns(model_file: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.json"
    train(again)
    assert again.read_text() == model_file.read_text()
    assert json.loads(model_file.read_text())["accuracy"] > 0.75


def test_a_loaded_model_is_live_ready_and_answers_inference(running: int) -> None:
    assert call(running, "/v2/health/live") == (200, {"live": True})
    assert call(running, "/v2/health/ready") == (200, {"ready": True})
    assert call(running, "/v2/models/fraud/ready") == (200, {"ready": True})  # the default probe
    assert call(running, "/v2/models/other/ready")[0] == 404
    rows = [[3.0, 1.0, 2.5], [-1.0, 0.0, -1.0]]
    status, answer = call(
        running, "/v2/models/fraud/infer", {"inputs": [{**FEATURES, "shape": [2, 3], "data": rows}]}
    )
    assert status == 200
    fraud, legit = answer["outputs"][0]["data"]
    assert fraud > 0.9
    assert legit < 0.1
    assert (answer["model_name"], answer["model_version"]) == ("fraud", "v1")
    flat = {"inputs": [{**FEATURES, "shape": [2, 3], "data": [3.0, 1.0, 2.5, -1.0, 0.0, -1.0]}]}
    assert call(running, "/v2/models/fraud/infer", flat)[1]["outputs"] == answer["outputs"]


def test_metrics_count_requests_and_errors_by_model_and_version(running: int) -> None:
    call(
        running,
        "/v2/models/fraud/infer",
        {"inputs": [{**FEATURES, "shape": [1, 2], "data": [1, 2]}]},
    )
    _, text = call(running, "/metrics")
    assert 'model_requests_total{model="fraud",version="v1"} 1.0' in text
    assert 'model_errors_total{model="fraud",version="v1"} 1.0' in text
    assert 'model_accuracy{model="fraud",version="v1"}' in text


def test_a_bad_request_is_a_400_not_a_crash(running: int) -> None:
    status, answer = call(running, "/v2/models/fraud/infer", {"inputs": [{"data": [1]}]})
    assert status == 400
    assert "bad request" in answer["error"]
    assert call(running, "/v2/health/live")[0] == 200


def test_error_rate_variant_is_ready_but_fails_that_share_of_requests(
    model_file: Path, tmp_path: Path
) -> None:
    http, _ = server.serve(0, "fraud", "v2", str(variant(model_file, tmp_path, error_rate=0.5)))
    try:
        body = {"inputs": [{**FEATURES, "shape": [1, 3], "data": [0.0, 0.0, 0.0]}]}
        codes = [call(http.server_port, "/v2/models/fraud/infer", body)[0] for _ in range(10)]
        assert call(http.server_port, "/v2/health/ready")[0] == 200
        assert codes.count(500) == 5
        assert codes.count(200) == 5
    finally:
        http.shutdown()
        http.server_close()


def test_slow_loading_model_is_live_but_not_ready_until_loaded(
    model_file: Path, tmp_path: Path
) -> None:
    http, state = server.listen(0, "fraud", "v3")
    try:
        slow = str(variant(model_file, tmp_path, load_seconds=1.5))
        loader = threading.Thread(target=server.load_into, args=(state, slow))
        loader.start()
        assert call(http.server_port, "/v2/health/live")[0] == 200
        assert call(http.server_port, "/v2/health/ready") == (503, {"ready": False})
        assert call(http.server_port, "/v2/models/fraud/ready") == (503, {"ready": False})
        wait_for(lambda: call(http.server_port, "/v2/health/ready")[0] == 200, 10, "ready")
        assert call(http.server_port, "/v2/models/fraud/ready")[0] == 200
        loader.join(timeout=10)
    finally:
        http.shutdown()
        http.server_close()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param('{"features": ["a", "b"', id="truncated"),
        pytest.param('{"features": []}', id="no-weights"),
    ],
)
def test_a_corrupt_model_file_crashes_the_server_with_exit_1(tmp_path: Path, content: str) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text(content)
    env = {**os.environ, "MODEL_URI": str(broken), "PORT": "0"}
    with run_module("server", env=env, stderr=subprocess.PIPE) as process:
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1
    assert f"cannot load model {broken}" in stderr
    assert "Traceback" not in stderr


def test_sigterm_drains_answering_but_not_ready_then_exits_0(model_file: Path) -> None:
    # A drain far longer than the test, ended by a second SIGTERM: what is checked during
    # it never races its end, however loaded the machine.
    port = free_port()
    env = {"MODEL_URI": str(model_file), "MODEL_NAME": "fraud", "PORT": str(port)}
    with run_module(
        "server", env={**os.environ, **env, "DRAIN_SECONDS": "600"}, stderr=subprocess.PIPE
    ) as process:
        try:
            wait_for(lambda: ready_status(port) == 200, 60, "the server to be ready")
            process.send_signal(signal.SIGTERM)
            wait_for(lambda: ready_status(port) == 503, 60, "the server to turn not ready")
            body = {"inputs": [{**FEATURES, "shape": [1, 3], "data": [3.0, 1.0, 2.5]}]}
            assert call(port, "/v2/models/fraud/infer", body)[0] == 200  # still answering
            assert process.poll() is None  # draining, not gone
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=60)
        finally:
            process.kill()
    assert process.returncode == 0
    assert "not ready, answering for 600 s more" in stderr


def ready_status(port: int) -> int | None:
    try:
        return call(port, "/v2/health/ready")[0]
    except OSError:  # not listening yet
        return None


PROBE = {"inputs": [{**FEATURES, "shape": [1, 3], "data": [3, 1, 2.5]}]}


def test_the_config_folder_sets_the_threshold_and_labels_every_answer_shows(
    model_file: Path, tmp_path: Path
) -> None:
    (tmp_path / "threshold").write_text("0.99999\n")
    (tmp_path / "labels.json").write_text(json.dumps({"fraud": "FRAUD", "legit": "OK"}))
    http, _ = server.serve(0, "fraud", "v1", str(model_file), str(tmp_path))
    try:
        status, answer = call(http.server_port, "/v2/models/fraud/infer", PROBE)
    finally:
        http.shutdown()
        http.server_close()
    assert status == 200
    probability, label = answer["outputs"]
    assert 0.99 < probability["data"][0] < 0.99999
    assert label == {"name": "label", "shape": [1], "datatype": "BYTES", "data": ["OK"]}
    assert answer["parameters"] == {"threshold": 0.99999}


def test_without_a_config_the_threshold_is_one_half(running: int) -> None:
    _, answer = call(running, "/v2/models/fraud/infer", PROBE)
    assert answer["outputs"][1]["data"] == ["fraud"]
    assert answer["parameters"] == {"threshold": 0.5}


@pytest.mark.parametrize("threshold", ["high", "1.5"])
def test_a_config_that_cannot_be_read_crashes_the_server_with_exit_1(
    model_file: Path, tmp_path: Path, threshold: str
) -> None:
    (tmp_path / "threshold").write_text(threshold)
    env = {**os.environ, "MODEL_URI": str(model_file), "MODEL_CONFIG": str(tmp_path)}
    env["PORT"] = str(free_port())
    with run_module("server", env=env, stderr=subprocess.PIPE) as process:
        assert process.wait(timeout=30) == 1
        assert process.stderr is not None
        assert "config" in process.stderr.read()


def test_the_wronganswers_model_loads_and_answers_200_with_every_prediction_reversed(
    model_file: Path, tmp_path: Path
) -> None:
    trained = json.loads(model_file.read_text())
    wrong = tmp_path / "wrong.json"
    wrong.write_bytes(images.model_file("wronganswers", trained))
    http, _ = server.serve(0, "fraud", "v2", str(wrong))
    try:
        assert call(http.server_port, "/v2/health/ready")[0] == 200
        status, answer = call(http.server_port, "/v2/models/fraud/infer", PROBE)
    finally:
        http.shutdown()
        http.server_close()
    assert status == 200
    assert answer["outputs"][0]["data"][0] < 0.01  # the fraud case, scored as legit
    assert answer["outputs"][1]["data"] == ["legit"]
