"""The reference model server: what a ModelDeployment's pods run on a real node.

Loads the model file named by MODEL_URI (a path or file:// URI written by
train.py), answers the Open Inference Protocol's health, metadata and infer
endpoints on PORT, and serves Prometheus metrics on /metrics labelled by model and
version. It reports ready only once the model loaded and answered its own
self-check, so a readiness probe means "this version can serve". A model file
that does not parse ends the process with exit code 1: a real crash loop. On
SIGTERM it turns not ready and keeps answering for DRAIN_SECONDS (default 5)
before it exits, so no request is lost while Services stop routing to it; a
second SIGTERM ends the drain at once.

Test variants of a model file may add `load_seconds` (slow loading),
`load_megabytes` (memory held while serving) and `error_rate` (fraction of
inference requests answered 500: Ready, but serving badly).

MODEL_CONFIG, when set, names a folder (the version's configuration snapshot, mounted
read-only) holding `threshold` (the fraud probability from which a transaction is
labelled fraud; default 0.5) and `labels.json` (the names of the two labels). Every
answer carries the label of each row and, in `parameters`, the threshold in use: what
the tests read to see which configuration a pod runs with. A config that cannot be
read ends the process with exit code 1, like a bad model file.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

logger = logging.getLogger("model-server")


class ModelError(Exception):
    """The model file cannot serve: unreadable, malformed, or failing its self-check."""


LABELS = {"fraud": "fraud", "legit": "legit"}


@dataclass(frozen=True)
class ModelConfig:
    """How scores become labels: the threshold, and what the labels are called."""

    threshold: float = 0.5
    labels: dict[str, str] = field(default_factory=lambda: dict(LABELS))

    def label(self, probability: float) -> str:
        return self.labels["fraud" if probability >= self.threshold else "legit"]


def read_config(folder: str | None) -> ModelConfig:
    """The configuration in `folder` (MODEL_CONFIG); the defaults when there is none."""
    if not folder:
        return ModelConfig()
    root = Path(folder)
    try:
        threshold_file = root / "threshold"
        threshold = float(threshold_file.read_text()) if threshold_file.exists() else 0.5
        labels_file = root / "labels.json"
        named = json.loads(labels_file.read_text()) if labels_file.exists() else {}
        labels = {key: str(named.get(key, default)) for key, default in LABELS.items()}
    except (OSError, ValueError, AttributeError) as error:
        raise ModelError(f"cannot read the model's config in {folder}: {error}") from None
    if not 0.0 <= threshold <= 1.0:
        raise ModelError(f"threshold {threshold} in {folder} is not within 0..1")
    return ModelConfig(threshold=threshold, labels=labels)


@dataclass
class Model:
    features: list[str]
    weights: list[float]
    bias: float
    accuracy: float
    error_rate: float = 0.0
    ballast: bytearray = field(default_factory=bytearray, repr=False)
    served: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fraud_probability(self, row: list[float]) -> float:
        if len(row) != len(self.features):
            raise ValueError(f"expected {len(self.features)} features {self.features}")
        z = sum(w * float(v) for w, v in zip(self.weights, row, strict=True)) + self.bias
        return 1.0 / (1.0 + math.exp(-z))

    def should_fail(self) -> bool:
        """True for `error_rate` of the requests, spread evenly (deterministic)."""
        with self.lock:
            self.served += 1
            return math.floor(self.served * self.error_rate) > math.floor(
                (self.served - 1) * self.error_rate
            )


def load(uri: str) -> Model:
    path = Path(urlparse(uri).path if uri.startswith("file://") else uri)
    try:
        raw = json.loads(path.read_text())
        model = Model(
            features=[str(f) for f in raw["features"]],
            weights=[float(w) for w in raw["weights"]],
            bias=float(raw["bias"]),
            accuracy=float(raw.get("accuracy", 0.0)),
            error_rate=float(raw.get("error_rate", 0.0)),
        )
        check = raw["self_check"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelError(f"cannot load model {uri}: {error}") from None
    time.sleep(float(raw.get("load_seconds", 0)))  # what loading big weights costs
    model.ballast = bytearray(int(raw.get("load_megabytes", 0)) * 2**20)
    for i in range(0, len(model.ballast), 4096):  # touch every page: resident, not just reserved
        model.ballast[i] = 1
    fraud = model.fraud_probability(check["inputs"]) >= 0.5
    if fraud != bool(check["expect_fraud"]):
        raise ModelError(f"self-check failed: {check['inputs']} gave fraud={fraud}")
    return model


class Metrics:
    """The server's Prometheus metrics, labelled once with its model and version."""

    def __init__(self, name: str, version: str) -> None:
        self.registry = CollectorRegistry()

        def labelled(kind: Any, metric: str, description: str) -> Any:
            family = kind(metric, description, ["model", "version"], registry=self.registry)
            return family.labels(name, version)

        self.requests = labelled(Counter, "model_requests", "Inference requests")
        self.errors = labelled(Counter, "model_errors", "Inference requests that failed")
        self.latency = labelled(Histogram, "model_latency_seconds", "Inference latency")
        self.accuracy = labelled(Gauge, "model_accuracy", "Held-out accuracy of the model")


@dataclass
class Server:
    name: str
    version: str
    metrics: Metrics
    model: Model | None = None  # set once loaded and self-checked: then ready
    config: ModelConfig = field(default_factory=ModelConfig)
    draining: bool = False  # told to stop: still answering, no longer ready

    @property
    def ready(self) -> bool:
        return self.model is not None and not self.draining

    def infer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        assert self.model is not None
        started = time.perf_counter()
        self.metrics.requests.inc()
        try:
            rows = rows_of(body)
            if self.model.should_fail():
                raise RuntimeError("inference failed")
            scores = [self.model.fraud_probability(row) for row in rows]
        except (KeyError, TypeError, ValueError) as error:
            self.metrics.errors.inc()
            return 400, {"error": f"bad request: {error}"}
        except RuntimeError as error:
            self.metrics.errors.inc()
            return 500, {"error": str(error)}
        finally:
            self.metrics.latency.observe(time.perf_counter() - started)
        output = {"name": "fraud_probability", "shape": [len(scores)], "datatype": "FP64"}
        output["data"] = scores
        labels = [self.config.label(score) for score in scores]
        label = {"name": "label", "shape": [len(scores)], "datatype": "BYTES", "data": labels}
        return 200, {
            "model_name": self.name,
            "model_version": self.version,
            "parameters": {"threshold": self.config.threshold},
            "outputs": [output, label],
        }


def rows_of(body: dict[str, Any]) -> list[list[float]]:
    """The OIP input tensor as rows of features; `data` may be flat or nested."""
    tensor = body["inputs"][0]
    data, shape = tensor["data"], tensor["shape"]
    if data and isinstance(data[0], list):
        return [[float(v) for v in row] for row in data]
    width = int(shape[-1])
    return [[float(v) for v in data[i : i + width]] for i in range(0, len(data), width)]


def handler_for(server: Server) -> type[BaseHTTPRequestHandler]:
    model_path = f"/v2/models/{server.name}"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/v2/health/live":
                self.reply(200, {"live": True})
            elif self.path in ("/v2/health/ready", f"{model_path}/ready"):
                # The server's readiness and its one model's (the Open Inference
                # Protocol's model readiness, modeldeploy's default probe) are the same.
                self.reply(200 if server.ready else 503, {"ready": server.ready})
            elif self.path == model_path and server.model:
                self.reply(
                    200,
                    {
                        "name": server.name,
                        "versions": [server.version],
                        "platform": "python",
                        "inputs": [
                            {
                                "name": "features",
                                "datatype": "FP64",
                                "shape": [-1, len(server.model.features)],
                            }
                        ],
                    },
                )
            elif self.path == "/metrics":
                self.send_bytes(200, generate_latest(server.metrics.registry), CONTENT_TYPE_LATEST)
            else:
                self.reply(404, {"error": f"no such endpoint {self.path}"})

        def do_POST(self) -> None:
            if self.path != f"{model_path}/infer":
                self.reply(404, {"error": f"no such endpoint {self.path}"})
                return
            if server.model is None:
                self.reply(503, {"error": "model not loaded yet"})
                return
            try:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self.reply(400, {"error": "body is not JSON"})
                return
            self.reply(*server.infer(body))

        def reply(self, code: int, body: dict[str, Any]) -> None:
            self.send_bytes(code, json.dumps(body).encode(), "application/json")

        def send_bytes(self, code: int, data: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug(format, *args)

    return Handler


def listen(port: int, name: str, version: str) -> tuple[ThreadingHTTPServer, Server]:
    """Answer at once: live from the start, ready once a model is in place."""
    server = Server(name=name, version=version, metrics=Metrics(name, version))
    http = ThreadingHTTPServer(("0.0.0.0", port), handler_for(server))  # noqa: S104 - a pod
    threading.Thread(target=http.serve_forever, daemon=True).start()
    return http, server


def load_into(server: Server, uri: str, config: str | None = None) -> None:
    """Read the config, load and self-check the model, then turn ready; raises ModelError
    if it cannot serve."""
    server.config = read_config(config)
    model = load(uri)
    server.metrics.accuracy.set(model.accuracy)
    server.model = model


def serve(
    port: int, name: str, version: str, uri: str, config: str | None = None
) -> tuple[ThreadingHTTPServer, Server]:
    http, server = listen(port, name, version)
    try:
        load_into(server, uri, config)
    except ModelError:
        http.shutdown()
        http.server_close()
        raise
    return http, server


def wait_for_signal(event: threading.Event, seconds: float = float("inf")) -> None:
    """Until `event` is set or `seconds` passed. Waking now and then matters: the kernel
    may hand SIGTERM to a server thread, and Python runs the handler only when the main
    thread next runs, which one long wait would not let it do."""
    deadline = time.monotonic() + seconds
    while not event.wait(timeout=min(0.5, max(0.0, deadline - time.monotonic()))):
        if time.monotonic() >= deadline:
            return


def drain(
    http: ThreadingHTTPServer, server: Server, seconds: float, cut_short: threading.Event
) -> None:
    """Stop being ready but keep answering for `seconds` (or until `cut_short`), then stop
    listening."""
    server.draining = True
    logger.info("stopping: not ready, answering for %.0f s more", seconds)
    wait_for_signal(cut_short, seconds)
    http.shutdown()
    http.server_close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    name = os.environ.get("MODEL_NAME", "model")
    version = os.environ.get("MODEL_VERSION", "unknown")
    uri = os.environ.get("MODEL_URI", "/models/model.json")
    config = os.environ.get("MODEL_CONFIG")
    port = int(os.environ.get("PORT", "8080"))
    # The first SIGTERM starts the drain; a second one ends it early.
    stopping, hurry = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: (hurry if stopping.is_set() else stopping).set())
    try:
        http, server = serve(port, name, version, uri, config)
    except ModelError as error:
        logger.error("%s", error)
        sys.exit(1)
    logger.info(
        "serving %s %s on :%d (model %s, threshold %g)",
        name,
        version,
        http.server_port,
        uri,
        server.config.threshold,
    )
    wait_for_signal(stopping)
    drain(http, server, float(os.environ.get("DRAIN_SECONDS", "5")), hurry)


if __name__ == "__main__":
    main()
