"""Outbound requests: one deadline for the whole request, and redirects never followed.

Against small servers on loopback in this process: a receiver that trickles one byte
at a time (of its body, or of its status line and headers) would hold a per-read
timeout for ever; it must not hold our deadline.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from modeldeploy import outbound
from modeldeploy.lanes import Lanes
from modeldeploy.model.egress import EgressPolicy, Purpose, Scope

TRICKLE_S = 20  # how long the trickling receiver keeps sending


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow-headers":  # the status line and headers, a byte at a time
            for byte in b"HTTP/1.0 200 OK\r\nX-Padding: " + b"x" * TRICKLE_S * 10:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.1)
            return
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(TRICKLE_S * 10))
        self.end_headers()
        for _ in range(TRICKLE_S * 10):  # one byte every 0.1 s: each read is quick
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(0.1)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    running = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    running.daemon_threads = True
    threading.Thread(target=running.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{running.server_port}"
    running.shutdown()
    running.server_close()


def allowing(*prefixes: str) -> Scope:
    """Analysis sources under `prefixes`, for namespace ns."""
    policy = EgressPolicy.of(analysis=[(None, prefix) for prefix in prefixes])
    return policy.scope(Purpose.ANALYSIS, "ns")


@pytest.mark.parametrize("path", ["/trickle", "/slow-headers"])
def test_a_trickling_receiver_is_cut_off_at_the_whole_request_deadline(
    server: str, path: str
) -> None:
    started = time.monotonic()
    with pytest.raises(outbound.OutboundError, match="no answer within the deadline"):
        outbound.request("GET", f"{server}{path}", 1.0, allowing(server + "/"))
    # Not a timing assertion on our speed: the receiver would trickle for TRICKLE_S.
    assert time.monotonic() - started < TRICKLE_S / 2


def test_a_redirect_is_returned_never_followed(server: str) -> None:
    answer = outbound.request("GET", f"{server}/redirect", 5.0, allowing(server + "/"))
    assert answer.status == 302


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://x", "http://"])
def test_only_http_urls_are_requested(url: str) -> None:
    with pytest.raises(outbound.OutboundError, match="not an http"):
        outbound.request("GET", url, 1.0, allowing("http://x/"))


def test_nothing_is_sent_to_a_url_the_admin_did_not_allow(server: str) -> None:
    with pytest.raises(outbound.OutboundError, match="is not an allowed analysis source"):
        outbound.request("GET", f"{server}/trickle", 1.0, allowing("http://prom:9090/"))


def test_a_name_resolving_to_loopback_is_refused_unless_its_address_is_allowed(
    server: str,
) -> None:
    port = server.rsplit(":", 1)[1]
    by_name = allowing(f"http://localhost:{port}/")  # allowed, but resolves to 127.0.0.1
    with pytest.raises(outbound.OutboundError, match="a loopback, link-local, unspecified"):
        outbound.request("GET", f"http://localhost:{port}/redirect", 5.0, by_name)
    both = allowing(f"http://localhost:{port}/", f"http://127.0.0.1:{port}/")
    assert outbound.request("GET", f"http://localhost:{port}/redirect", 5.0, both).status == 302


@pytest.mark.parametrize(
    "address",
    ["::ffff:127.0.0.1", "::ffff:169.254.169.254", "0.0.0.0", "::", "::ffff:0.0.0.0", "::1"],  # noqa: S104
)
def test_mapped_and_unspecified_addresses_are_judged_as_what_they_reach(address: str) -> None:
    assert outbound.special(ipaddress.ip_address(address))
    with pytest.raises(outbound.OutboundError, match="not a pod's"):
        outbound.to_pod("GET", address, 8080, "/", 1.0)


def test_a_name_resolving_to_a_mapped_loopback_address_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answer = [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::ffff:127.0.0.1", 9090, 0, 0))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *_, **__: answer)
    with pytest.raises(outbound.OutboundError, match="resolves to ::ffff:7f00:1"):
        outbound.request(
            "GET", "http://prom.example:9090/", 1.0, allowing("http://prom.example:9090/")
        )


def test_a_lane_held_by_a_slow_peer_never_holds_the_others() -> None:
    lanes = Lanes(workers=2, name="test")
    release, fast_done = threading.Event(), threading.Event()

    def slow() -> None:
        release.wait(30)

    try:
        for _ in range(5):  # more slow jobs than workers, all in one lane
            lanes.submit("slow:80", slow)
        lanes.submit("fast:80", fast_done.set)
        assert fast_done.wait(10)  # a second worker was free for the other lane
        assert lanes.pending() == 4  # the slow lane's jobs wait their turn, one at a time
    finally:
        release.set()
        lanes.close()
