"""``python -m tests.integration.xds_probe HOST:PORT NODE CA [CERT KEY]``: open an ADS
stream as ``NODE`` over TLS (verifying the server against CA, with a client
certificate when given) and print what came back first: ``OK`` for a DiscoveryResponse,
else the gRPC status code's name and its details. Run inside a test's network namespace
(a subprocess, so gRPC's own threads are in it too).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


def probe(target: str, node: str, ca: Path, cert: Path | None, key: Path | None) -> str:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )
    request = discovery_pb2.DiscoveryRequest(type_url=CLUSTER_TYPE)
    request.node.id = node
    answered = threading.Event()

    def requests() -> Iterator[discovery_pb2.DiscoveryRequest]:
        yield request
        answered.wait(5)  # the stream stays open until the answer (half-close ends it)

    with grpc.secure_channel(target, credentials) as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        try:
            for _ in stub.StreamAggregatedResources(requests(), timeout=5):
                return "OK"
        except grpc.RpcError as exc:
            return f"{exc.code().name} {exc.details()}"
        finally:
            answered.set()
    return "ENDED"


def main(argv: list[str]) -> int:
    target, node, ca, *rest = argv
    cert, key = (Path(rest[0]), Path(rest[1])) if rest else (None, None)
    print(probe(target, node, Path(ca), cert, key), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
