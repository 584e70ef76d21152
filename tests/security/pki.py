"""A small test PKI made with `cryptography`: CPO root, sub-CA, charger certificates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import NameOID

# The ManualClock's start (controller.runtime.clock): certificates are valid around it.
T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def name(cn: str, o: str = "Test CPO") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, o),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def key_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class Ca:
    cert: x509.Certificate
    key: PrivateKeyTypes

    @property
    def pem(self) -> str:
        return pem(self.cert)

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)


def issue(
    subject: x509.Name,
    public_key: PublicKeyTypes,
    issuer: Ca | None,
    *,
    signing_key: PrivateKeyTypes | None = None,
    ca: bool = False,
    not_before: datetime = T0 - timedelta(days=1),
    not_after: datetime = T0 + timedelta(days=365),
    serial: int | None = None,
    basic_constraints: bool = True,
) -> x509.Certificate:
    """A certificate for ``public_key`` signed by ``issuer`` (None: self-signed with
    ``signing_key``)."""
    issuer_name = subject if issuer is None else issuer.cert.subject
    key = signing_key if issuer is None else issuer.key
    assert key is not None
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if basic_constraints:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    return builder.sign(key, hashes.SHA256())  # type: ignore[arg-type]


def make_root(cn: str = "Test CPO Root", **kwargs: object) -> Ca:
    key = ec_key()
    return Ca(issue(name(cn), key.public_key(), None, signing_key=key, ca=True, **kwargs), key)  # type: ignore[arg-type]


def make_sub_ca(root: Ca, cn: str = "Test CPO Sub-CA", **kwargs: object) -> Ca:
    key = ec_key()
    return Ca(issue(name(cn), key.public_key(), root, ca=True, **kwargs), key)  # type: ignore[arg-type]


def rsa_root(bits: int) -> Ca:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return Ca(issue(name(f"RSA {bits}"), key.public_key(), None, signing_key=key, ca=True), key)


def csr_public_key(csr_pem: str) -> PublicKeyTypes:
    return x509.load_pem_x509_csr(csr_pem.encode()).public_key()
