"""The mesh's certificate authority and the certificates it issues, kept in the state dir.

The CA is made once (``<state dir>/pki/ca.crt`` and ``ca.key``, both 0600) and reused
across ``down``/``up``, so a kubeconfig or a remote gateway that trusts it keeps working
after a restart. Each ``up`` issues a fresh serving certificate for the addresses it
listens on; clients verify it against the CA, never with verification turned off.
Keys are ECDSA P-256: small, fast to make, and accepted by Go's, OpenSSL's and Python's
TLS stacks alike.
"""

from __future__ import annotations

import base64
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
from tcpmesh.store import AlreadyExists, StoreBackend

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


def server_ssl_context(
    state_dir: Path, hosts: list[str], *, verify_clients: bool = False
) -> ssl.SSLContext:
    """A TLS server context with a fresh certificate for ``hosts`` from the state dir's CA.

    The certificate and key are written to ``pki/`` (0600) because Python's ssl module
    loads them from files only. With ``verify_clients`` a client may present a
    certificate, and one that the CA did not sign fails the handshake (remote peers use
    them; kubectl and the console, with their bearer tokens, present none).
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
    if verify_clients:
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(cafile=str(ca.cert_path))
    return context


# ---------------------------------------------------------------- one CA for all replicas
#
# Replicas on a shared store must trust and issue with the same CA, or a peer that joined
# through one could not fail over to another. The first replica stores its CA where
# Istio keeps its self-signed root (the istio-system/istio-ca-secret Secret, keys
# ca-cert.pem and ca-key.pem); every replica adopts the stored one. The store is the
# mesh's most private place already (its Secrets hold TLS keys).

CA_SECRET_NAMESPACE = "istio-system"
CA_SECRET_NAME = "istio-ca-secret"


def _ca_secret(ca: CertificateAuthority) -> dict[str, object]:
    key_pem = ca.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "istio.io/ca-root",
        "metadata": {"name": CA_SECRET_NAME, "namespace": CA_SECRET_NAMESPACE},
        "data": {
            "ca-cert.pem": base64.b64encode(ca.cert_pem).decode(),
            "ca-key.pem": base64.b64encode(key_pem).decode(),
        },
    }


def share_ca(store: StoreBackend, state_dir: Path) -> CertificateAuthority:
    """The CA all replicas of ``store`` share, written into ``state_dir`` as its own."""
    secret = store.get("Secret", CA_SECRET_NAMESPACE, CA_SECRET_NAME)
    if secret is None:
        try:
            store.create(_ca_secret(ensure_ca(state_dir)))
            return ensure_ca(state_dir)
        except AlreadyExists:  # another replica stored its CA first: take that one
            secret = store.get("Secret", CA_SECRET_NAMESPACE, CA_SECRET_NAME)
    if secret is None:
        raise RuntimeError(f"Secret {CA_SECRET_NAMESPACE}/{CA_SECRET_NAME}: vanished while read")
    data = secret.get("data") or {}
    pki = state_dir / PKI_DIR
    pki.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(pki / CA_KEY, base64.b64decode(data["ca-key.pem"]))
    write_private(pki / CA_CERT, base64.b64decode(data["ca-cert.pem"]))
    return ensure_ca(state_dir)


# ---------------------------------------------------------------- remote peers
#
# A joining gateway or workload agent makes its own key and sends a CSR; the key never
# leaves its host. The CA signs a short-lived client certificate with the names the
# server decided (not the CSR's subject), so a CSR cannot smuggle in other names.


def ca_public_key_hash(cert: x509.Certificate) -> str:
    """kubeadm's CA pin: ``sha256:`` and the SHA-256 of the CA's SubjectPublicKeyInfo."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return "sha256:" + digest.finalize().hex()


def make_csr(uri: str, address: str) -> tuple[bytes, bytes]:
    """A fresh key and a CSR asking for the identity ``uri`` at ``address``: (key, csr) PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(uri.split("://", 1)[-1]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(uri), x509.IPAddress(ipaddress.ip_address(address))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class CsrRequest:
    """What a CSR asks for, read after its signature was checked."""

    csr: x509.CertificateSigningRequest
    uris: tuple[str, ...]
    addresses: tuple[str, ...]


def read_csr(pem: bytes) -> CsrRequest:
    """The CSR's requested names; ValueError when it is unreadable or its signature is bad."""
    csr = x509.load_pem_x509_csr(pem)
    if not csr.is_signature_valid:
        raise ValueError("csr: the signature does not match its public key")
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ValueError("csr: no subjectAltName") from None
    uris = tuple(sans.get_values_for_type(x509.UniformResourceIdentifier))
    addresses = tuple(str(a) for a in sans.get_values_for_type(x509.IPAddress))
    return CsrRequest(csr, uris, addresses)


def sign_client_csr(
    ca: CertificateAuthority,
    request: CsrRequest,
    *,
    uri: str,
    address: str,
    unit: str,
    ttl: datetime.timedelta,
) -> bytes:
    """A client certificate for the CSR's key, naming ``uri`` and ``address``: PEM."""
    now = _now()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, uri.split("://", 1)[-1]),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(request.csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + ttl)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(uri), x509.IPAddress(ipaddress.ip_address(address))]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def certificate_expiry(pem: bytes) -> datetime.datetime:
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc
