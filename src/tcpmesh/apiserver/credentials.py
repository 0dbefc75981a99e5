"""The API server's address, token and CA in the state directory, like a kubeconfig."""

from __future__ import annotations

import json
import os
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path

FILENAME = "apiserver.json"


@dataclass(frozen=True)
class Credentials:
    url: str
    token: str
    pid: int
    # The CA that signed the server's certificate (for https URLs).
    ca_file: str | None = None
    # A joined peer's: more API servers (replicas) to try, and its client certificate.
    servers: tuple[str, ...] = ()
    client_cert: str | None = None
    client_key: str | None = None

    @property
    def urls(self) -> tuple[str, ...]:
        """Every API server to try, ``url`` first."""
        return tuple(dict.fromkeys((self.url, *self.servers)))

    def ssl_context(self) -> ssl.SSLContext | None:
        """What a client verifies the server with: the mesh's CA, nothing else; and the
        client certificate it presents, when it has one (a joined peer).

        None for a plain http URL. An https URL without a CA file gets a context that
        trusts nothing, so the connection fails rather than skipping verification.
        """
        if not self.url.startswith("https:"):
            return None
        context = client_ssl_context(Path(self.ca_file) if self.ca_file else None)
        if self.client_cert and self.client_key:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context


def client_ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """A TLS client context trusting only ``ca_file`` (not the system's trust store)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


def new_token() -> str:
    return secrets.token_urlsafe(32)


def credentials_path(state_dir: Path) -> Path:
    return state_dir / FILENAME


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` with mode 0600 from the start, atomically: readers see old or new."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Created 0600 from the start so a token is never readable by others, not even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)  # O_CREAT leaves an existing file's mode alone
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_credentials(
    state_dir: Path,
    url: str,
    token: str,
    pid: int,
    ca_file: Path | None = None,
    *,
    servers: tuple[str, ...] = (),
    client_cert: Path | None = None,
    client_key: Path | None = None,
) -> Path:
    """Write the file with mode 0600, atomically."""
    path = credentials_path(state_dir)
    data: dict[str, object] = {"url": url, "token": token, "pid": pid}
    if ca_file is not None:
        data["ca"] = str(ca_file)
    if servers:
        data["servers"] = list(servers)
    if client_cert is not None and client_key is not None:
        data["clientCert"], data["clientKey"] = str(client_cert), str(client_key)
    write_private(path, json.dumps(data).encode())
    return path


def read_credentials(state_dir: Path) -> Credentials | None:
    """The credentials, or None when the file is missing or unreadable as credentials."""
    try:
        data = json.loads(credentials_path(state_dir).read_text(encoding="utf-8"))
        ca = data.get("ca")
        cert, key = data.get("clientCert"), data.get("clientKey")
        return Credentials(
            url=str(data["url"]),
            token=str(data["token"]),
            pid=int(data["pid"]),
            ca_file=str(ca) if ca else None,
            servers=tuple(str(s) for s in data.get("servers") or ()),
            client_cert=str(cert) if cert else None,
            client_key=str(key) if key else None,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def remove_credentials(state_dir: Path, pid: int | None = None) -> None:
    """Remove the file if it still belongs to ``pid`` (default: this process).

    A newer server may have replaced it; its file must survive an older one's exit.
    """
    creds = read_credentials(state_dir)
    if creds is not None and creds.pid == (os.getpid() if pid is None else pid):
        credentials_path(state_dir).unlink(missing_ok=True)
