"""The operator and the plugin fail with a sentence, not a traceback, when no cluster is set."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from modeldeploy.__main__ import seconds


@pytest.mark.parametrize(
    ("module", "args", "code", "text"),
    [
        ("modeldeploy", [], 1, "modeldeploy: cannot reach a cluster"),
        ("modeldeploy.cli", ["status", "x"], 2, "Error: cannot reach a cluster"),
    ],
)
def test_no_cluster_configured_is_a_clear_error(
    module: str, args: list[str], code: int, text: str
) -> None:
    env = {**os.environ, "KUBECONFIG": "/nonexistent/kubeconfig", "HOME": "/nonexistent"}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == code
    assert text in result.stderr
    assert "Traceback" not in result.stderr


def run_operator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modeldeploy", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_webhook_flag_that_is_not_a_url_is_refused() -> None:
    result = run_operator("--webhook", "slack")
    assert result.returncode == 1
    assert "--webhook must be an http:// or https:// URL" in result.stderr


@pytest.mark.parametrize(
    ("flags", "text"),
    [
        (["--allowed-url-prefix", "http://x/"], "split into --allowed-analysis-source"),
        (
            ["--allowed-analysis-source", "http://prom:9090/?namespace=b"],
            "--allowed-analysis-source must be an http:// or https:// URL: a URL with a query",
        ),
        (["--prometheus", "http://prom:9090/../x"], "dot segment"),
        (["--allowed-webhook", "team-a=ftp://x/"], "--allowed-webhook must be an http://"),
        (["--allowed-registry", "team-a=ftp://x/"], "--allowed-registry must be an http://"),
    ],
)
def test_an_allow_list_flag_that_is_not_a_clean_url_stops_the_operator(
    flags: list[str], text: str
) -> None:
    result = run_operator(*flags)
    assert result.returncode == 1
    assert text in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("workers", ["0", "-3", "many"])
def test_a_workers_flag_below_one_is_refused(workers: str) -> None:
    result = run_operator("--workers", workers)
    assert result.returncode == 2
    assert "--workers: must be a whole number >= 1" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("flags", "text"),
    [
        (
            ["--leader-elect-renew-deadline", "20s"],
            "lease duration > renew deadline > retry period > 0, not 15s, 20s, 2s",
        ),
        (
            ["--leader-elect-lease-duration", "4s", "--leader-elect-retry-period", "5s"],
            "lease duration > renew deadline > retry period > 0, not 4s, 10s, 5s",
        ),
    ],
)
def test_leader_election_durations_out_of_order_are_refused(flags: list[str], text: str) -> None:
    result = run_operator("--leader-elect", *flags)
    assert result.returncode == 1
    assert text in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["0s", "-1s", "soon", "s"])
def test_a_duration_flag_that_is_not_a_positive_duration_is_refused(value: str) -> None:
    result = run_operator(f"--leader-elect-retry-period={value}")
    assert result.returncode == 2
    assert "must be a duration above 0 such as 15s" in result.stderr


def test_durations_take_units() -> None:
    assert [seconds(t) for t in ("15s", "500ms", "2m", "1.5")] == [15.0, 0.5, 120.0, 1.5]
