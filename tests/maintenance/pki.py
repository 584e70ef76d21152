"""A test manufacturer CA, firmware signing certificates and signatures (cryptography)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

NOT_BEFORE = datetime(2025, 1, 1, tzinfo=UTC)
NOT_AFTER = datetime(2030, 1, 1, tzinfo=UTC)


@dataclass
class Signer:
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def sign(self, data: bytes, *, pss: bool = True) -> str:
        if isinstance(self.key, rsa.RSAPrivateKey):
            pad: padding.AsymmetricPadding = (
                padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
                if pss
                else padding.PKCS1v15()
            )
            raw = self.key.sign(data, pad, hashes.SHA256())
        else:
            raw = self.key.sign(data, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(raw).decode()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    issuer: Signer | None,
    *,
    ca: bool,
    not_before: datetime = NOT_BEFORE,
    not_after: datetime = NOT_AFTER,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.cert.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(issuer.key if issuer else key, hashes.SHA256())


def manufacturer_ca(cn: str = "Test Manufacturer Root") -> Signer:
    key = ec.generate_private_key(ec.SECP256R1())
    return Signer(key, _cert(cn, key, None, ca=True))


def signing_cert(ca: Signer, *, rsa_key: bool = False, not_after: datetime = NOT_AFTER) -> Signer:
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if rsa_key
        else ec.generate_private_key(ec.SECP256R1())
    )
    return Signer(key, _cert("Firmware Signing", key, ca, ca=False, not_after=not_after))


class Roots:
    """A FirmwareTrust: the installed ManufacturerRootCertificates."""

    def __init__(self, *cas: Signer) -> None:
        self.cas = list(cas)

    def manufacturer_roots_pem(self) -> str:
        return "".join(ca.pem for ca in self.cas)


def expired_by(days: int) -> datetime:
    return NOT_BEFORE + timedelta(days=days)
