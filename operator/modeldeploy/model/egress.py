"""Where the operator may send requests: the admin's allow-lists, per purpose and namespace.

Part of the model (pure, no I/O): a tenant writes URLs into a ModelDeployment, the
operator runs with cluster-wide reach, so it contacts a URL only when a rule the admin
set allows it for that purpose (an analysis source, a webhook target) and for the
resource's namespace. The admin's own endpoints are rules too: `--prometheus` is an
analysis source for every namespace, `--prometheus-for NS=URL` for NS only, `--webhook`
one webhook target, that exact URL. docs/security.md says why each rule is there.
Resolving names and refusing private addresses is the edge's part (modeldeploy.outbound),
since it needs DNS.
"""

from __future__ import annotations

import enum
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_PORTS = {"http": 80, "https": 443}
# A path segment that is "." or ".." once decoded, and encoded separators: a server that
# normalises the path would send the request somewhere the allow-list never looked at.
_DOT_SEGMENT = re.compile(r"(^|/)\.{1,2}(/|$)")
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c)", re.IGNORECASE)


class Purpose(enum.Enum):
    """What a request is for; each has its own allow-list."""

    ANALYSIS = "analysis source"
    WEBHOOK = "webhook target"
    REGISTRY = "model registry"


FLAGS = {
    Purpose.ANALYSIS: "--allowed-analysis-source",
    Purpose.WEBHOOK: "--allowed-webhook",
    Purpose.REGISTRY: "--allowed-registry",
}


@dataclass(frozen=True)
class Endpoint:
    """The parts of a URL that decide where a request goes; the URL sent is built from
    them (`url`), never from the string a tenant wrote."""

    scheme: str
    host: str
    port: int
    path: str
    query: str = ""

    def url(self, path: str | None = None, query: str | None = None) -> str:
        """This endpoint as a URL, with another path and query if given."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return urllib.parse.urlunsplit(
            (
                self.scheme,
                f"{host}:{self.port}",
                self.path if path is None else path,
                self.query if query is None else query,
                "",
            )
        )

    def joined(self, tail: str) -> str:
        """The path with `tail` appended under it (`/prom` + `/api/v1/query`)."""
        return self.path.rstrip("/") + tail


def endpoint(url: str, query_allowed: bool = True) -> Endpoint | str:
    """The parts of an http(s) URL, or why it is refused: user information, a fragment,
    a dot segment or an encoded separator in the path, or (for an analysis source, which
    is a base the operator adds its own path and query to) any query string."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as error:
        return f"not a URL ({error})"
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return "not an http(s) URL with a host"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "a URL with user information is refused"
    if parts.fragment or "#" in url:
        return "a URL with a fragment is refused"
    if not query_allowed and (parts.query or "?" in url):
        return "a URL with a query string is refused here (scheme, host, port and path only)"
    decoded = urllib.parse.unquote(parts.path)
    if _DOT_SEGMENT.search(decoded) or _ENCODED_SEPARATOR.search(parts.path):
        return "a URL whose path has a dot segment or an encoded separator is refused"
    return Endpoint(
        scheme=parts.scheme,
        host=parts.hostname.lower().rstrip("."),
        port=port if port is not None else DEFAULT_PORTS[parts.scheme],
        path=parts.path or "/",
        query=parts.query,
    )


def source_endpoint(url: str) -> Endpoint | str:
    """An analysis source: scheme, host, port and path prefix, nothing else."""
    return endpoint(url, query_allowed=False)


@dataclass(frozen=True)
class Rule:
    """One thing the admin allowed: a URL prefix (or, `exact`, one URL) for one purpose,
    in one namespace or (None) in all."""

    prefix: str
    purpose: Purpose
    namespace: str | None = None
    exact: bool = False

    def allows(self, wanted: Endpoint, purpose: Purpose, namespace: str | None) -> bool:
        if purpose is not self.purpose:
            return False
        if self.namespace is not None and self.namespace != namespace:
            return False
        allowed = endpoint(self.prefix)
        if not isinstance(allowed, Endpoint):
            return False
        if (wanted.scheme, wanted.host, wanted.port) != (
            allowed.scheme,
            allowed.host,
            allowed.port,
        ):
            return False
        if self.exact:
            return (wanted.path, wanted.query) == (allowed.path, allowed.query)
        base = allowed.path if allowed.path.endswith("/") else allowed.path + "/"
        return wanted.path == allowed.path or wanted.path.startswith(base) or allowed.path == "/"


@dataclass(frozen=True)
class Scope:
    """The allow-list as it applies to one purpose in one namespace: what a request
    (modeldeploy.outbound) is checked against."""

    policy: EgressPolicy
    purpose: Purpose
    namespace: str | None

    def why_not(self, url: str) -> str | None:
        """Why a URL a tenant (or the admin) wrote may not be used for this purpose."""
        return self.policy.why_not(url, self.purpose, self.namespace)

    def why_not_request(self, url: str) -> str | None:
        """Why a request to `url`, as the operator built it (an analysis source's path
        and query added), may not go out."""
        return self.policy.why_not(url, self.purpose, self.namespace, built=True)

    def names_address(self, address: str) -> bool:
        return self.policy.names_address(address, self.purpose, self.namespace)


@dataclass(frozen=True)
class EgressPolicy:
    """The rules; with none, nothing a tenant names may be contacted."""

    rules: tuple[Rule, ...] = ()

    @classmethod
    def of(
        cls,
        analysis: Iterable[tuple[str | None, str]] = (),
        webhooks: Iterable[tuple[str | None, str]] = (),
        prometheus: str | None = None,
        prometheus_for: Iterable[tuple[str, str]] = (),
        webhook: str | None = None,
        registries: Iterable[tuple[str | None, str]] = (),
    ) -> EgressPolicy:
        """The policy from the flags: (namespace or None, prefix) pairs per purpose, then
        the admin's own endpoints."""
        rules = [Rule(prefix, Purpose.ANALYSIS, namespace) for namespace, prefix in analysis]
        rules += [Rule(prefix, Purpose.WEBHOOK, namespace) for namespace, prefix in webhooks]
        rules += [Rule(prefix, Purpose.REGISTRY, namespace) for namespace, prefix in registries]
        if prometheus:
            rules.append(Rule(prometheus, Purpose.ANALYSIS))
        rules += [Rule(url, Purpose.ANALYSIS, namespace) for namespace, url in prometheus_for]
        if webhook:
            rules.append(Rule(webhook, Purpose.WEBHOOK, exact=True))
        return cls(tuple(rules))

    def scope(self, purpose: Purpose, namespace: str | None) -> Scope:
        return Scope(self, purpose, namespace)

    def why_not(
        self, url: str, purpose: Purpose, namespace: str | None, built: bool = False
    ) -> str | None:
        """None when `url` may be contacted for `purpose` from `namespace`; else why not.
        An analysis source is a base URL (no query string) unless the operator `built`
        the URL from one."""
        strict = purpose is Purpose.ANALYSIS and not built
        wanted = source_endpoint(url) if strict else endpoint(url)
        if isinstance(wanted, str):
            return wanted
        if any(rule.allows(wanted, purpose, namespace) for rule in self.rules):
            return None
        flag = FLAGS[purpose]
        where = f" for namespace {namespace}" if namespace else ""
        return (
            f"{wanted.scheme}://{wanted.host}:{wanted.port} is not an allowed {purpose.value}"
            f"{where} (an admin allows it with {flag})"
        )

    def names_address(self, address: str, purpose: Purpose, namespace: str | None) -> bool:
        """Whether a rule for this purpose and namespace names this address literally
        (http://127.0.0.1:9090/): only then may a request reach a loopback, link-local or
        metadata address. A host name that resolves there (by mistake, or by a hostile DNS
        answer) may not."""
        return any(
            rule.purpose is purpose
            and rule.namespace in (None, namespace)
            and isinstance(allowed := endpoint(rule.prefix), Endpoint)
            and allowed.host == address
            for rule in self.rules
        )


def receiver(url: str) -> str:
    """host:port of a URL: a webhook's lane, and all a log line or status says of where
    it went (the URL itself may be a credential, as a Slack webhook's is)."""
    parts = endpoint(url)
    if isinstance(parts, str):
        return urllib.parse.urlsplit(url).netloc.rpartition("@")[2] or "?"
    return Endpoint(parts.scheme, parts.host, parts.port, "").url().split("//", 1)[1]


def parse_rule(text: str) -> tuple[str | None, str]:
    """A flag's `[NAMESPACE=]PREFIX`: (namespace or None, prefix)."""
    head, sep, rest = text.partition("=")
    if sep and "://" not in head and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", head):
        return head, rest
    return None, text
