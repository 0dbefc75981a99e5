"""The mesh's certificate authority and the certificates it issues, kept in the state dir.

The CA is made once (``<state dir>/pki/ca.crt`` and ``ca.key``, both 0600) and reused
across ``down``/``up``, so a kubeconfig or a remote gateway that trusts it keeps working
after a restart. Each ``up`` issues a fresh serving certificate for the addresses it
listens on; clients verify it against the CA, never with verification turned off.
Keys are ECDSA P-256: small, fast to make, and accepted by Go's, OpenSSL's and Python's
TLS stacks alike.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tcpmesh.apiserver.credentials import write_private

PKI_DIR = "pki"
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CA_NAME = "tcpmesh-ca"
CA_DAYS = 3650
LEAF_DAYS = 365
# Certificates are back-dated a little so a client whose clock is slightly behind accepts them.
CLOCK_SKEW = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class CertificateAuthority:
    """The CA's certificate and key; ``cert_path`` is what clients are given to trust."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class IssuedCertificate:
    cert_pem: bytes
    key_pem: bytes


def ca_cert_path(state_dir: Path) -> Path:
    return state_dir / PKI_DIR / CA_CERT


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(CA_NAME))
        .issuer_name(_name(CA_NAME))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def ensure_ca(state_dir: Path) -> CertificateAuthority:
    """The state directory's CA, created on first use and reused afterwards."""
    pki = state_dir / PKI_DIR
    pki.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = pki / CA_CERT, pki / CA_KEY
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey) and cert.not_valid_after_utc > _now():
            return CertificateAuthority(cert, key, cert_path)
    cert, key = _new_ca()
    # The key first: a certificate on disk always has its key beside it.
    write_private(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    # 0600 like everything in the state directory; clients get the CA from the kubeconfig.
    write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return CertificateAuthority(cert, key, cert_path)


def _subject_alt_names(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def issue_certificate(
    ca: CertificateAuthority, common_name: str, hosts: list[str], *, client: bool = False
) -> IssuedCertificate:
    """A leaf certificate signed by ``ca``: for a server on ``hosts``, or a client."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if hosts:
        builder = builder.add_extension(_subject_alt_names(hosts), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    return IssuedCertificate(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def server_ssl_context(state_dir: Path, hosts: list[str]) -> ssl.SSLContext:
    """A TLS server context with a fresh certificate for ``hosts`` from the state dir's CA.

    The certificate and key are written to ``pki/`` (0600) because Python's ssl module
    loads them from files only.
    """
    ca = ensure_ca(state_dir)
    issued = issue_certificate(ca, "tcpmesh-apiserver", hosts)
    pki = state_dir / PKI_DIR
    cert_path, key_path = pki / "apiserver.crt", pki / "apiserver.key"
    write_private(key_path, issued.key_pem)
    write_private(cert_path, issued.cert_pem + ca.cert_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return context
