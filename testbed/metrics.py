"""A metrics bed for analysis, shared by the tests and the benchmarks: an exporter on
loopback whose values they set, and a real Prometheus (Debian's package) scraping it
every second. Standard library only."""

from __future__ import annotations

import math
import shutil
import subprocess
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from testbed.support import end_process, wait_for


def sample(value: float) -> str:
    """A value in the exposition format: +Inf, -Inf and NaN are words there."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


class Exporter:
    """Serves /metrics on 127.0.0.1 with per-version gauges the test sets."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str, str, str], float] = {}
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                lines = [
                    f'{metric}{{namespace="{ns}",model="{model}",version="{version}"}} '
                    f"{sample(value)}"
                    for (metric, ns, model, version), value in sorted(exporter.values.items())
                ]
                body = ("\n".join(lines) + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve(self, ns: str, model: str, version: str, errors: float, accuracy: float) -> None:
        self.values[("model_error_ratio", ns, model, version)] = errors
        self.values[("model_accuracy", ns, model, version)] = accuracy


class Prometheus:
    """A real Prometheus server (Debian's package) on 127.0.0.1, scraping every second."""

    def __init__(self, workdir: Path, target: str, port: int) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is not installed (make e2e installs Debian's package as root)"
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: models\n    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self.url = f"http://127.0.0.1:{port}"
        self.command = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir}/data",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        self.log = workdir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self.ready, 30, "Prometheus to be ready")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            end_process(self.process)
        self.process = None
