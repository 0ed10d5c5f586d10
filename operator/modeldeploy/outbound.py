"""Outbound HTTP for analysis queries, webhooks and golden requests: one deadline each.

Beside the kube layer, below the handlers. Every request is checked against the
admin's allow-list for its purpose and namespace (`egress.Scope`), its host resolved
once and refused if it resolves to a loopback, link-local, unspecified or
cloud-metadata address the admin did not name (IPv4-mapped IPv6 addresses judged as
the IPv4 address they carry), and then sent to exactly that address (no second
lookup to rebind). A socket timeout bounds each read, so a peer trickling one byte a
second would hold a thread for ever; here every read, of the status line and headers
as of the body, gets only what is left of one deadline for the whole request, the
answer's size is capped, and a redirect is returned as an answer, never followed.
Golden requests go to a pod's own IP (`to_pod`): no name to resolve, no allow-list
(the resource's own pods, not a tenant's URL), but never to such an address.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Protocol

from modeldeploy.model.egress import endpoint

MAX_BODY = 1 << 20  # bytes read of an answer; more is cut off (an analysis answer is small)
# Cloud metadata services that are not link-local (169.254.0.0/16 is refused anyway).
METADATA = {ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200")}


class Allowed(Protocol):
    """The allow-list for one purpose and namespace (modeldeploy.model.egress.Scope)."""

    def why_not_request(self, url: str) -> str | None: ...

    def names_address(self, address: str) -> bool: ...


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
    policy: Allowed,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One HTTP request to an allowed peer that ends within `deadline_s` seconds."""
    ends = time.monotonic() + deadline_s
    refused = policy.why_not_request(url)
    if refused is not None:
        raise OutboundError(refused)
    parts = endpoint(url)
    if isinstance(parts, str):  # an allow-list that passed it checked it already
        raise OutboundError(parts)
    address = _address(parts.host, parts.port, policy)
    connection = _connection(parts.scheme, parts.host, address, parts.port, ends)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
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
    if special(address):
        raise OutboundError(
            f"{ip} is a loopback, link-local, unspecified or metadata address, not a pod's"
        )
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
        response = connection.getresponse()
        return Answer(response.status, _read(response))
    except (OSError, http.client.HTTPException) as error:
        raise OutboundError(_why(error)) from None
    finally:
        connection.close()


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def judged(address: IPAddress) -> IPAddress:
    """The address a check looks at: an IPv4-mapped IPv6 address (::ffff:127.0.0.1)
    reaches the IPv4 address it carries, so it is judged as that."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def special(address: IPAddress) -> bool:
    """Loopback, link-local (the cloud metadata service's 169.254.169.254 among them),
    unspecified (0.0.0.0 and :: reach this host) or another known metadata address."""
    address = judged(address)
    return (
        address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address in METADATA
    )


def _address(host: str, port: int, policy: Allowed) -> str:
    """The one address the request goes to, after checking what it is."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise OutboundError(f"{host} does not resolve ({error})") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in found]
    for address in addresses:
        if special(address) and not policy.names_address(str(judged(address))):
            raise OutboundError(
                f"{host} resolves to {address}, a loopback, link-local, unspecified or "
                "metadata address (allowed only when an allowed URL prefix names that "
                "address itself)"
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
    # Already connected to the checked address: never looked up again. Every read of
    # the answer gets only what is left of the deadline (`_Deadlined`).
    connection.sock = _Deadlined(sock, ends)
    return connection


class _Deadlined:
    """A connected socket whose every read (`makefile`, as http.client reads the status
    line, the headers and the body) may take only what is left until `ends`: a peer
    trickling a byte at a time is cut off at the deadline, not after each byte. Like a
    socket's own makefile, an open reader keeps the socket open after `close`
    (http.client closes the connection of a `Connection: close` answer before its body
    is read)."""

    def __init__(self, sock: socket.socket, ends: float) -> None:
        self._sock = sock
        self._ends = ends
        self._readers = 0
        self._closed = False

    def sendall(self, data: bytes) -> None:
        self._sock.settimeout(_left(self._ends))
        self._sock.sendall(data)

    def makefile(self, mode: str = "rb") -> io.BufferedReader:
        assert mode == "rb", mode
        self._readers += 1
        return io.BufferedReader(_DeadlinedReader(self))

    def read_into(self, buffer: memoryview) -> int:
        self._sock.settimeout(_left(self._ends))
        return self._sock.recv_into(buffer)

    def settimeout(self, timeout: float | None) -> None:
        pass  # the deadline decides each read's timeout

    def release(self) -> None:
        self._readers -= 1
        self._close_if_done()

    def close(self) -> None:
        self._closed = True
        self._close_if_done()

    def _close_if_done(self) -> None:
        if self._closed and self._readers <= 0:
            self._sock.close()


class _DeadlinedReader(io.RawIOBase):
    def __init__(self, sock: _Deadlined) -> None:
        self._sock: _Deadlined | None = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        assert self._sock is not None, "read after close"
        return self._sock.read_into(buffer)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.release()
            self._sock = None
        super().close()


def _read(response: http.client.HTTPResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < MAX_BODY:
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
