"""Outbound HTTP for analysis queries and webhooks: one whole-request deadline, no redirects.

Beside the kube layer, below the handlers. `urllib`'s timeout bounds each socket
read, so a receiver trickling one byte a second holds a thread for ever; here the
deadline bounds the whole request (connect, send, every read), the body read is
capped, and a redirect is returned as an answer, never followed.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass

MAX_BODY = 1 << 20  # bytes read of an answer; more is cut off (an analysis answer is small)


class OutboundError(Exception):
    """The request did not complete: unreachable, timed out, or not http(s)."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


def request(
    method: str,
    url: str,
    deadline_s: float,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One HTTP request that ends within `deadline_s` seconds, whatever the peer does."""
    ends = time.monotonic() + deadline_s
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OutboundError(f"not an http(s) URL: {parts.scheme}://{parts.hostname or ''}")
    connection = _connection(parts, _left(ends))
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
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


def _connection(parts: urllib.parse.SplitResult, timeout: float) -> http.client.HTTPConnection:
    host, port = parts.hostname or "", parts.port
    if parts.scheme == "https":
        return http.client.HTTPSConnection(
            host, port, timeout=timeout, context=ssl.create_default_context()
        )
    return http.client.HTTPConnection(host, port, timeout=timeout)


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
