"""Where the operator may send requests: the admin's allow-list of URL prefixes.

Part of the model (pure, no I/O): a tenant writes URLs into a ModelDeployment, the
operator runs with cluster-wide reach, so it contacts a URL only when it falls
under a prefix an admin allowed (flags and install manifests), the operator's own
--prometheus and --webhook always being allowed. docs/security.md says why each
rule is there. Resolving names and refusing private addresses is the edge's part
(modeldeploy.outbound), since it needs DNS.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int
    path: str


def endpoint(url: str) -> Endpoint | str:
    """The parts of an http(s) URL that decide where it goes, or why it is refused."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as error:
        return f"not a URL ({error})"
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return "not an http(s) URL with a host"
    if parts.username is not None or parts.password is not None:
        return "a URL with user information is refused"
    if parts.fragment or url.endswith("#"):
        return "a URL with a fragment is refused"
    return Endpoint(
        scheme=parts.scheme,
        host=parts.hostname.lower().rstrip("."),
        port=port if port is not None else DEFAULT_PORTS[parts.scheme],
        path=parts.path or "/",
    )


@dataclass(frozen=True)
class EgressPolicy:
    """URL prefixes the operator may contact; empty allows only its own defaults."""

    prefixes: tuple[str, ...] = ()

    @classmethod
    def of(cls, prefixes: Iterable[str], *defaults: str | None) -> EgressPolicy:
        return cls(tuple(p for p in (*prefixes, *defaults) if p))

    def why_not(self, url: str) -> str | None:
        """None when `url` may be contacted; else a short sentence saying why not."""
        wanted = endpoint(url)
        if isinstance(wanted, str):
            return wanted
        if any(_under(wanted, prefix) for prefix in self.prefixes):
            return None
        return (
            f"{wanted.scheme}://{wanted.host}:{wanted.port} is not an allowed endpoint "
            "(an admin allows it with --allowed-url-prefix)"
        )

    def names_address(self, address: str) -> bool:
        """Whether an allowed prefix names this address literally (http://127.0.0.1:9090/):
        only then may a request reach a loopback, link-local or metadata address. A
        host name that resolves there (by mistake, or by a hostile DNS answer) may not."""
        return any(
            isinstance(allowed := endpoint(prefix), Endpoint) and allowed.host == address
            for prefix in self.prefixes
        )


def _under(wanted: Endpoint, prefix: str) -> bool:
    allowed = endpoint(prefix)
    if not isinstance(allowed, Endpoint):
        return False
    if (wanted.scheme, wanted.host, wanted.port) != (allowed.scheme, allowed.host, allowed.port):
        return False
    base = allowed.path if allowed.path.endswith("/") else allowed.path + "/"
    return wanted.path == allowed.path or wanted.path.startswith(base) or allowed.path == "/"
