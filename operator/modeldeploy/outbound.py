"""Outbound HTTP for analysis queries, webhooks and golden requests: one deadline each.

Beside the kube layer, below the handlers. Every request is checked against the
admin's egress policy, its host resolved once and refused if it resolves to a
loopback, link-local or cloud-metadata address the admin did not name, and then sent
to exactly that address (no second lookup to rebind). `urllib`'s timeout bounds each
socket read, so a peer trickling one byte a second would hold a thread for ever;
here one deadline bounds the whole request, the answer's size is capped, and a
redirect is returned as an answer, never followed. Golden requests go to a pod's own
IP (`to_pod`): no name to resolve, no allow-list (the resource's own pods, not a tenant's
URL), but never to a loopback, link-local or metadata address.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass

from modeldeploy.model.egress import EgressPolicy

MAX_BODY = 1 << 20  # bytes read of an answer; more is cut off (an analysis answer is small)
# Cloud metadata services that are not link-local (169.254.0.0/16 is refused anyway).
METADATA = {ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200")}


class OutboundError(Exception):
    """The request was refused here, or did not complete: unreachable, timed out."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


def request(
    method: str,
    url: str,
    deadline_s: float,
    policy: EgressPolicy,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One HTTP request to an allowed peer that ends within `deadline_s` seconds."""
    ends = time.monotonic() + deadline_s
    refused = policy.why_not(url)
    if refused is not None:
        raise OutboundError(refused)
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    address = _address(host, port, policy)
    connection = _connection(parts.scheme, host, address, port, ends)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _exchange(connection, method, target, body, headers, ends)


def to_pod(
    method: str,
    ip: str,
    port: int,
    target: str,
    deadline_s: float,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One plain-HTTP request to a pod's IP that ends within `deadline_s` seconds.

    The IP comes from the pod's status; whoever could write that must not steer the
    operator to itself, the node or a metadata service."""
    ends = time.monotonic() + deadline_s
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        raise OutboundError(f"{ip!r} is not an IP address") from None
    if address.is_loopback or address.is_link_local or address in METADATA:
        raise OutboundError(f"{ip} is a loopback, link-local or metadata address, not a pod's")
    connection = _connection("http", ip, ip, port, ends)
    return _exchange(connection, method, target, body, headers, ends)


def _exchange(
    connection: http.client.HTTPConnection,
    method: str,
    target: str,
    body: bytes | None,
    headers: dict[str, str] | None,
    ends: float,
) -> Answer:
    try:
        connection.request(method, target, body=body, headers=headers or {})
        sock = connection.sock  # kept: getresponse() may let go of it for Connection: close
        sock.settimeout(_left(ends))
        response = connection.getresponse()
        return Answer(response.status, _read(response, sock, ends))
    except (OSError, http.client.HTTPException) as error:
        raise OutboundError(_why(error)) from None
    finally:
        connection.close()


def _address(host: str, port: int, policy: EgressPolicy) -> str:
    """The one address the request goes to, after checking what it is."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise OutboundError(f"{host} does not resolve ({error})") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in found]
    for address in addresses:
        special = address.is_loopback or address.is_link_local or address in METADATA
        if special and not policy.names_address(str(address)):
            raise OutboundError(
                f"{host} resolves to {address}, a loopback, link-local or metadata address "
                "(allowed only when an allowed URL prefix names that address itself)"
            )
    return str(addresses[0])


def _connection(
    scheme: str, host: str, address: str, port: int, ends: float
) -> http.client.HTTPConnection:
    """A connection to `address` that speaks to `host` (Host header, TLS name)."""
    try:
        sock = socket.create_connection((address, port), timeout=_left(ends))
    except OSError as error:
        raise OutboundError(_why(error)) from None
    if scheme == "https":
        context = ssl.create_default_context()
        try:
            sock = context.wrap_socket(sock, server_hostname=host)
        except (OSError, ssl.SSLError) as error:
            sock.close()
            raise OutboundError(_why(error)) from None
    connection = http.client.HTTPConnection(host, port, timeout=_left(ends))
    connection.sock = sock  # already connected to the checked address: never looked up again
    return connection


def _read(response: http.client.HTTPResponse, sock: socket.socket, ends: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < MAX_BODY:
        sock.settimeout(_left(ends))
        chunk = response.read1(min(65536, MAX_BODY - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _left(ends: float) -> float:
    left = ends - time.monotonic()
    if left <= 0:
        raise OutboundError("no answer within the deadline")
    return left


def _why(error: BaseException) -> str:
    if isinstance(error, TimeoutError | socket.timeout):
        return "no answer within the deadline"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
