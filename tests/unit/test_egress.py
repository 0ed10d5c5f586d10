"""The egress allow-lists (docs/security.md): what a tenant's URL may be, per purpose and
namespace."""

from __future__ import annotations

import posixpath
import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modeldeploy.model.egress import (
    EgressPolicy,
    Endpoint,
    Purpose,
    parse_rule,
    source_endpoint,
)

ANALYSIS, WEBHOOK = Purpose.ANALYSIS, Purpose.WEBHOOK
POLICY = EgressPolicy.of(
    analysis=[(None, "http://prometheus.monitoring:9090/"), ("team-a", "http://prom-a:9090/")],
    webhooks=[(None, "https://hooks.slack.com/services/T01/")],
    prometheus="http://admin-prometheus:9090",
    prometheus_for=[("team-b", "http://prom-b:9090")],
    webhook="https://ops.example/notify",
)


@pytest.mark.parametrize(
    ("url", "purpose", "namespace"),
    [
        ("http://prometheus.monitoring:9090", ANALYSIS, "any"),
        ("http://prometheus.monitoring:9090/", ANALYSIS, "any"),
        ("http://PROMETHEUS.monitoring:9090/api", ANALYSIS, "any"),
        ("http://prom-a:9090/", ANALYSIS, "team-a"),
        ("http://admin-prometheus:9090/", ANALYSIS, "any"),
        ("http://prom-b:9090", ANALYSIS, "team-b"),
        ("https://hooks.slack.com/services/T01/B02/xyz", WEBHOOK, "any"),
        ("https://hooks.slack.com/services/T01/B02/xyz?thread=1", WEBHOOK, "any"),
        ("https://ops.example/notify", WEBHOOK, "any"),
    ],
)
def test_urls_a_rule_allows_for_their_purpose_and_namespace(
    url: str, purpose: Purpose, namespace: str
) -> None:
    assert POLICY.why_not(url, purpose, namespace) is None


@pytest.mark.parametrize(
    ("url", "purpose", "namespace", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", ANALYSIS, "a", "not an allowed analysis"),
        ("http://prometheus.monitoring:9091/", ANALYSIS, "a", "not an allowed"),
        ("https://prometheus.monitoring:9090/", ANALYSIS, "a", "not an allowed"),
        ("https://hooks.slack.com/services/T02/B02/xyz", WEBHOOK, "a", "not an allowed webhook"),
        ("https://hooks.slack.com/services/T01x/B02", WEBHOOK, "a", "not an allowed"),
        # one purpose's rule never allows the other: no POST to the admin's Prometheus
        ("http://admin-prometheus:9090/-/quit", WEBHOOK, "a", "not an allowed webhook"),
        ("http://prometheus.monitoring:9090/api/v1/admin", WEBHOOK, "a", "not an allowed"),
        ("https://hooks.slack.com/services/T01/", ANALYSIS, "a", "not an allowed analysis"),
        # a namespace's Prometheus is that namespace's alone
        ("http://prom-b:9090/", ANALYSIS, "team-a", "for namespace team-a"),
        ("http://prom-a:9090/", ANALYSIS, "team-b", "not an allowed"),
        # the admin's webhook is that one URL, not a prefix
        ("https://ops.example/notify/x", WEBHOOK, "a", "not an allowed"),
        ("https://ops.example/other", WEBHOOK, "a", "not an allowed"),
        # the URL's form
        ("http://prometheus.monitoring:9090@169.254.169.254/", ANALYSIS, "a", "user information"),
        ("http://evil.example/#http://prometheus.monitoring:9090/", ANALYSIS, "a", "fragment"),
        ("http://prometheus.monitoring:9090/#", ANALYSIS, "a", "fragment"),
        ("ftp://prometheus.monitoring:9090/", ANALYSIS, "a", "not an http(s) URL"),
        ("http://prometheus.monitoring:99999/", ANALYSIS, "a", "not a URL"),
        # an analysis source is a base: a query string could smuggle parameters past a
        # tenancy proxy (namespace=team-b, which prom-label-proxy ORs with ours)
        (
            "http://prometheus.monitoring:9090/api/v1/query?namespace=team-b&query=up&x=",
            ANALYSIS,
            "a",
            "query string",
        ),
        ("http://prometheus.monitoring:9090/?", ANALYSIS, "a", "query string"),
        # dot segments and encoded separators: a server would normalise past the prefix
        ("https://hooks.slack.com/services/T01/../../admin", WEBHOOK, "a", "dot segment"),
        ("https://hooks.slack.com/services/T01/%2e%2e/x", WEBHOOK, "a", "dot segment"),
        ("https://hooks.slack.com/services/T01/%2E%2e/x", WEBHOOK, "a", "dot segment"),
        ("http://prometheus.monitoring:9090/./api", ANALYSIS, "a", "dot segment"),
        ("https://hooks.slack.com/services/T01/..%2fadmin", WEBHOOK, "a", "encoded separator"),
        ("https://hooks.slack.com/services/T01/x%5c..", WEBHOOK, "a", "encoded separator"),
    ],
)
def test_everything_else_is_refused_with_a_reason(
    url: str, purpose: Purpose, namespace: str, why: str
) -> None:
    refused = POLICY.why_not(url, purpose, namespace)
    assert refused is not None
    assert why in refused


def test_an_empty_policy_allows_nothing_a_tenant_names() -> None:
    assert EgressPolicy().why_not("http://prometheus:9090/", ANALYSIS, "a") is not None
    assert EgressPolicy().why_not("https://hooks.example/", WEBHOOK, "a") is not None


def test_a_private_address_needs_a_rule_of_that_purpose_naming_it() -> None:
    local = EgressPolicy.of(analysis=[(None, "http://127.0.0.1:9090/")])
    assert local.names_address("127.0.0.1", ANALYSIS, "a")
    assert not local.names_address("127.0.0.1", WEBHOOK, "a")
    by_name = EgressPolicy.of(analysis=[(None, "http://localhost:9090/")])
    assert not by_name.names_address("127.0.0.1", ANALYSIS, "a")
    theirs = EgressPolicy.of(analysis=[("team-b", "http://127.0.0.1:9090/")])
    assert not theirs.names_address("127.0.0.1", ANALYSIS, "team-a")


def test_the_url_sent_is_built_from_the_parsed_parts() -> None:
    source = source_endpoint("http://Prom.Monitoring:9090/prefix/")
    assert isinstance(source, Endpoint)
    built = source.url(source.joined("/api/v1/query"), "query=up&namespace=a")
    assert built == "http://prom.monitoring:9090/prefix/api/v1/query?query=up&namespace=a"
    v6 = source_endpoint("http://[fd00::1]/")
    assert isinstance(v6, Endpoint)
    assert v6.url() == "http://[fd00::1]:80/"


@pytest.mark.parametrize(
    ("flag", "rule"),
    [
        ("http://prom:9090/", (None, "http://prom:9090/")),
        ("team-a=http://prom:9090/", ("team-a", "http://prom:9090/")),
        ("https://hooks.example/a=b", (None, "https://hooks.example/a=b")),
    ],
)
def test_a_flag_names_a_namespace_before_the_prefix_or_none(
    flag: str, rule: tuple[str | None, str]
) -> None:
    assert parse_rule(flag) == rule


@given(st.text(alphabet="./%2eEfFcC5ab", max_size=12))
def test_no_allowed_path_normalises_above_its_prefix(tail: str) -> None:
    """Whatever path a tenant appends, a URL that passes stays under the prefix once a
    server resolves dot segments (RFC 3986 section 5.2.4) in its decoded path."""
    url = f"https://hooks.slack.com/services/T01/{tail}"
    if POLICY.why_not(url, WEBHOOK, "a") is not None:
        return
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    assert posixpath.normpath(path).startswith("/services/T01")
