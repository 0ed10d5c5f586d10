"""A TCP proxy on loopback in front of the API server, for cutting an operator off.

Tests point an operator's kubeconfig at it. `down()` resets every connection and
refuses new ones (the API server is gone, for this client only); `stall()` keeps
connections open but silently drops their bytes, now and forever (a dead network
path: nothing fails, everything hangs); `forward()` serves new connections again.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from pathlib import Path
from typing import Any, Self

import yaml

FORWARD, DOWN, STALL = "forward", "down", "stall"


class Link:
    """One client connection and its upstream one."""

    def __init__(self, client: socket.socket, upstream: socket.socket | None) -> None:
        self.client, self.upstream = client, upstream
        self.blackholed = upstream is None

    def cut(self) -> None:
        for sock in (self.client, self.upstream):
            if sock is None:
                continue
            # An RST, as when the far end is gone, not a polite FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class Proxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.mode = FORWARD
        self.links: list[Link] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._listener.close()
        self.down()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def kubeconfig(self, original: Path, path: Path) -> Path:
        """A copy of `original` whose cluster is reached through this proxy."""
        config: dict[str, Any] = yaml.safe_load(original.read_text())
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = self.url
        path.write_text(json.dumps(config))
        return path

    def down(self) -> None:
        with self._lock:
            self.mode = DOWN
            links, self.links = self.links, []
        for link in links:
            link.cut()

    def stall(self) -> None:
        with self._lock:
            self.mode = STALL
            for link in self.links:
                link.blackholed = True

    def forward(self) -> None:
        with self._lock:
            self.mode = FORWARD

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                mode = self.mode
            if mode == DOWN:
                Link(client, None).cut()
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            link = Link(client, upstream)
            link.blackholed = mode == STALL
            with self._lock:
                self.links.append(link)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(link, source, sink), daemon=True).start()

    def _pump(self, link: Link, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if link.blackholed:
                if not data:
                    return  # a dead path hears nothing, not even that the far end closed
                continue  # swallowed: the other side waits for ever
            if not data:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
                return
            try:
                sink.sendall(data)
            except OSError:
                return
