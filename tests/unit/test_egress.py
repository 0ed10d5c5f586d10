"""The egress allow-list (docs/security.md): what a tenant's URL may be."""

from __future__ import annotations

import pytest

from modeldeploy.model.egress import EgressPolicy

POLICY = EgressPolicy(
    ("http://prometheus.monitoring:9090/", "https://hooks.slack.com/services/T01/")
)


@pytest.mark.parametrize(
    "url",
    [
        "http://prometheus.monitoring:9090",
        "http://prometheus.monitoring:9090/",
        "http://PROMETHEUS.monitoring:9090/api",
        "https://hooks.slack.com/services/T01/B02/xyz",
    ],
)
def test_urls_under_an_allowed_prefix_may_be_contacted(url: str) -> None:
    assert POLICY.why_not(url) is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", "not an allowed endpoint"),
        ("http://prometheus.monitoring:9091/", "not an allowed endpoint"),
        ("https://prometheus.monitoring:9090/", "not an allowed endpoint"),
        ("https://hooks.slack.com/services/T02/B02/xyz", "not an allowed endpoint"),
        ("https://hooks.slack.com/services/T01x/B02", "not an allowed endpoint"),
        ("http://prometheus.monitoring:9090@169.254.169.254/", "user information"),
        ("http://evil.example/#http://prometheus.monitoring:9090/", "fragment"),
        ("http://prometheus.monitoring:9090/#", "fragment"),
        ("ftp://prometheus.monitoring:9090/", "not an http(s) URL"),
        ("http://prometheus.monitoring:99999/", "not a URL"),
    ],
)
def test_everything_else_is_refused_with_a_reason(url: str, why: str) -> None:
    refused = POLICY.why_not(url)
    assert refused is not None
    assert why in refused


def test_an_empty_allow_list_allows_only_the_operators_own_endpoints() -> None:
    policy = EgressPolicy.of((), "http://prometheus.monitoring:9090", None)
    assert policy.why_not("http://prometheus.monitoring:9090/api/v1/query") is None
    assert policy.why_not("http://other:9090/") is not None


def test_a_private_address_needs_a_prefix_naming_it() -> None:
    assert EgressPolicy(("http://127.0.0.1:9090/",)).names_address("127.0.0.1")
    assert not EgressPolicy(("http://localhost:9090/",)).names_address("127.0.0.1")
