"""The real node's API forwarder (testbed/apiforward.py) as a process: bytes through, both ways.

It stands between pods and the API server, so it must pass bytes unchanged in both
directions, pass a half-close on (a client that finished sending still gets its
answer), serve connections side by side, and end a connection whose server went away.
"""

from __future__ import annotations

import json
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import apiforward
from testbed.processes import ROOT
from testbed.support import end_process, free_port, wait_for


class EchoAfterEnd(socketserver.BaseRequestHandler):
    """Reads until the client's end of stream, then answers with what it read, reversed."""

    def handle(self) -> None:
        received = b""
        while chunk := self.request.recv(1 << 16):
            received += chunk
        self.request.sendall(received[::-1])


class Hangup(socketserver.BaseRequestHandler):
    """Closes the connection at once, reading nothing."""

    def handle(self) -> None:
        self.request.close()


def serve(handler: type[socketserver.BaseRequestHandler]) -> socketserver.ThreadingTCPServer:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def forwarder(server: socketserver.ThreadingTCPServer, folder: Path) -> Iterator[int]:
    endpoint = folder / "endpoint.json"
    endpoint.write_text(json.dumps({"server": f"https://127.0.0.1:{server.server_address[1]}"}))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "testbed.apiforward", f"127.0.0.1:{port}", str(endpoint)], cwd=ROOT
    )
    try:
        wait_for(
            lambda: apiforward.listening("127.0.0.1", port),
            30,
            "the forwarder to listen",
            tolerate=(OSError,),
        )
        yield port
    finally:
        end_process(process)
        server.shutdown()
        server.server_close()


@pytest.fixture
def echo_port(tmp_path: Path) -> Iterator[int]:
    yield from forwarder(serve(EchoAfterEnd), tmp_path)


@pytest.fixture
def hangup_port(tmp_path: Path) -> Iterator[int]:
    yield from forwarder(serve(Hangup), tmp_path)


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)  # the server answers only after our end of stream
        answer = b""
        while chunk := client.recv(1 << 16):
            answer += chunk
    return answer


def test_bytes_pass_both_ways_and_a_half_close_is_passed_on(echo_port: int) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB, more than one read or write
    assert exchange(echo_port, data) == data[::-1]


def test_connections_are_served_side_by_side(echo_port: int) -> None:
    answers: dict[int, bytes] = {}

    def one(index: int) -> None:
        answers[index] = exchange(echo_port, f"request {index}".encode())

    threads = [threading.Thread(target=one, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert answers == {index: f"request {index}".encode()[::-1] for index in range(8)}


def test_a_connection_ends_when_its_server_hangs_up(hangup_port: int) -> None:
    with socket.create_connection(("127.0.0.1", hangup_port), timeout=30) as client:
        assert client.recv(1) == b""  # end of stream, not a hang until the timeout
