"""The API server for pods on the real node, through the `kubernetes` Service.

The test bed's API server listens on 127.0.0.1 alone and publishes no Endpoints
(--endpoint-reconciler-type=none), so an in-cluster client (the operator's own pod)
would find nothing behind the Service. With the real node up, this module's program
(`python -m testbed.apiforward`) listens on the node's bridge address and passes
bytes through to the API server unchanged, TLS end to end, and `publish` points the
Service's Endpoints and EndpointSlice at it. Pods dial the Service's ClusterIP, which
the serving certificate names; kube-proxy carries it to the bridge.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import urllib.error
import urllib.parse
from pathlib import Path

from testbed.processes import ROOT, STATE, api, start, wait_for_component

NAME = "api-forward"
PORT = 6443
SKIP_MIRROR = "endpointslice.kubernetes.io/skip-mirror"  # we write the EndpointSlice ourselves
ENDPOINTS = "/api/v1/namespaces/default/endpoints"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"


def serve(address: str) -> None:
    """Start the forwarder on `address` (the node's bridge address) and publish it."""
    start(
        NAME,
        [
            sys.executable,
            "-m",
            "testbed.apiforward",
            f"{address}:{PORT}",
            str(STATE / "endpoint.json"),
        ],
        cwd=ROOT,
    )
    wait_for_component(f"{NAME} on {address}:{PORT}", lambda: listening(address, PORT), NAME, 30)
    unpublish()
    port = {"name": "https", "port": PORT, "protocol": "TCP"}
    api(
        "POST",
        ENDPOINTS,
        {
            "metadata": metadata({SKIP_MIRROR: "true"}),
            "subsets": [{"addresses": [{"ip": address}], "ports": [port]}],
        },
    )
    api(
        "POST",
        SLICES,
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": metadata({"kubernetes.io/service-name": "kubernetes"}),
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
            "ports": [port],
        },
    )


def metadata(labels: dict[str, str]) -> dict[str, object]:
    return {"name": "kubernetes", "namespace": "default", "labels": labels}


def listening(address: str, port: int) -> bool:
    with socket.create_connection((address, port), timeout=2):
        return True


def unpublish() -> None:
    """The Service's Endpoints and EndpointSlice removed (if the API server still answers)."""
    for collection in (ENDPOINTS, SLICES):
        with contextlib.suppress(urllib.error.URLError, OSError):  # 404 is an HTTPError too
            api("DELETE", f"{collection}/kubernetes")


# ------------------------------------------------------------------ the program


async def pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ends: list[asyncio.StreamWriter]
) -> None:
    """Copy until end of stream and pass the end on (half-close); on a reset, close `ends`."""
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        for end in ends:  # which ends the other direction too
            end.close()


async def relay(
    target: tuple[str, int],
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
) -> None:
    try:
        server_reader, server_writer = await asyncio.open_connection(*target)
    except OSError:
        client_writer.close()
        return
    ends = [client_writer, server_writer]
    try:
        await asyncio.gather(
            pipe(client_reader, server_writer, ends), pipe(server_reader, client_writer, ends)
        )
    finally:
        for end in ends:
            end.close()


async def forward(listen: tuple[str, int], target: tuple[str, int]) -> None:
    server = await asyncio.start_server(lambda r, w: relay(target, r, w), *listen)
    print(f"forwarding {listen[0]}:{listen[1]} to {target[0]}:{target[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m testbed.apiforward", description=__doc__)
    parser.add_argument("listen", help="HOST:PORT to listen on")
    parser.add_argument("endpoint_file", type=Path, help="the test bed's endpoint.json")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    server = urllib.parse.urlsplit(json.loads(args.endpoint_file.read_text())["server"])
    assert server.hostname is not None
    assert server.port is not None
    asyncio.run(forward((host, int(port)), (server.hostname, server.port)))


if __name__ == "__main__":
    main()
