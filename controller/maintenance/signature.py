"""Signed firmware: the signing certificate's chain to a manufacturer root, and the signature."""

from __future__ import annotations

import base64
import binascii
import logging
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from controller.security.certcheck import issued_by

LOG = logging.getLogger(__name__)

MAX_CHAIN = 5  # signing certificate + intermediates up to a root
_BLOCK = 1 << 20


class CertificateInvalid(ValueError):
    """The firmware signing certificate cannot be trusted (L01.FR.23/24); the text says why."""


def _load_pems(pem: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise CertificateInvalid(f"not PEM certificates ({exc})") from None


def _valid_at(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def check_signing_certificate(
    signing_pem: str, manufacturer_roots_pem: str, now: datetime
) -> x509.Certificate:
    """The signing certificate (first of ``signing_pem``; the rest may be intermediates)
    when it is valid now and chains, by signatures, to an installed manufacturer root that
    is valid now; else CertificateInvalid. Revocation is not checked (no CRL or OCSP
    reaches a charger reliably)."""
    chain = _load_pems(signing_pem)
    if not chain:
        raise CertificateInvalid("no certificate")
    roots = _load_pems(manufacturer_roots_pem) if manufacturer_roots_pem.strip() else []
    if not roots:
        raise CertificateInvalid("no ManufacturerRootCertificate is installed")
    leaf = chain[0]
    if not _valid_at(leaf, now):
        raise CertificateInvalid("the signing certificate is not valid now")
    pool = chain[1:]
    cert = leaf
    for _ in range(MAX_CHAIN):
        for root in roots:
            if root.subject == cert.issuer and issued_by(cert, root):
                if not _valid_at(root, now):
                    raise CertificateInvalid("the manufacturer root is not valid now")
                return leaf
        parent = next(
            (c for c in pool if c.subject == cert.issuer and _is_ca(c) and issued_by(cert, c)),
            None,
        )
        if parent is None:
            break
        if not _valid_at(parent, now):
            raise CertificateInvalid("an intermediate certificate is not valid now")
        pool.remove(parent)
        cert = parent
    raise CertificateInvalid("the signing certificate does not chain to a manufacturer root")


def file_sha256(path: Path) -> bytes:
    digest = hashes.Hash(hashes.SHA256())
    with path.open("rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.finalize()


def verify_file_signature(path: Path, signature_b64: str, certificate: x509.Certificate) -> bool:
    """Whether ``signature_b64`` (base64) signs the whole file's bytes with SHA-256 under the
    certificate's key: RSA-PSS (L01.FR.04; MGF1-SHA256, any salt length), RSA PKCS#1 v1.5
    and ECDSA are accepted. ECSchnorr, which L01.FR.04 also names, has no common library
    implementation and is not supported."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    digest = file_sha256(path)
    prehashed = utils.Prehashed(hashes.SHA256())
    key = certificate.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            try:
                key.verify(
                    signature,
                    digest,
                    padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO),
                    prehashed,
                )
                return True
            except InvalidSignature:
                key.verify(signature, digest, padding.PKCS1v15(), prehashed)
                return True
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, digest, ec.ECDSA(prehashed))
            return True
    except InvalidSignature:
        return False
    LOG.warning("firmware signing key type %s is not supported", type(key).__name__)
    return False
