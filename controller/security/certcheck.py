"""Certificate checks: PEM parsing, OCSP hash data, key strength, CA and chain validation, CSRs."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPublicKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import (
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from controller.security.certtypes import (
    BadCertificate,
    CertificateHashData,
    HashAlgorithm,
    KeyType,
    looks_like_url_or_ip,
)

# A00.FR.501-503: security equivalent to at least 112 symmetric bits.
MIN_RSA_BITS = 2048
MIN_EC_BITS = 224
# A03.FR.08 lets a certificate arrive before its notBefore (it is used from then on). A CA
# has no reason to date one further ahead than the renewal month (A03.FR.02), so a later
# notBefore is taken for a wrong certificate (or a wrong clock on one side) and rejected.
MAX_NOT_BEFORE_AHEAD = timedelta(days=30)


def load_pem_chain(text: str) -> list[x509.Certificate]:
    """Every certificate of a PEM text, in order; BadCertificate if there is none or one
    does not parse."""
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise BadCertificate("no PEM certificate")
    try:
        certs = x509.load_pem_x509_certificates(text.encode("ascii", "strict"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise BadCertificate(f"malformed PEM: {str(exc)[:80]}") from None
    if not certs:
        raise BadCertificate("no PEM certificate")
    return certs


def to_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER: the name a certificate file gets in the store."""
    return cert.fingerprint(hashes.SHA256()).hex()


def _der_length(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    return int.from_bytes(data[pos + 1 : pos + 1 + count], "big"), pos + 1 + count


def public_key_bits(key: PublicKeyTypes) -> bytes:
    """The subjectPublicKey BIT STRING's value (without tag, length and unused-bits byte)
    of a SubjectPublicKeyInfo: what OCSP's issuerKeyHash is computed over."""
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # SEQUENCE { AlgorithmIdentifier SEQUENCE, BIT STRING }
    _, pos = _der_length(spki, 1)
    alg_len, alg_body = _der_length(spki, pos + 1)
    pos = alg_body + alg_len
    if spki[pos] != 0x03:
        raise ValueError("SubjectPublicKeyInfo without a BIT STRING")
    bits_len, bits_body = _der_length(spki, pos + 1)
    return spki[bits_body + 1 : bits_body + bits_len]


_HASHES = {
    HashAlgorithm.SHA256: hashlib.sha256,
    HashAlgorithm.SHA384: hashlib.sha384,
    HashAlgorithm.SHA512: hashlib.sha512,
}


def hash_data(
    cert: x509.Certificate, issuer_key: PublicKeyTypes, algorithm: HashAlgorithm
) -> CertificateHashData:
    """The OCSP CertID of ``cert`` issued by the holder of ``issuer_key``."""
    h = _HASHES[algorithm]
    return CertificateHashData(
        algorithm,
        h(cert.issuer.public_bytes()).hexdigest(),
        h(public_key_bits(issuer_key)).hexdigest(),
        format(cert.serial_number, "X"),
    )


def is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def check_key_strength(key: PublicKeyTypes) -> None:
    """A00.FR.501-503: RSA/DSA at least 2048 bits, elliptic curves at least 224 bits."""
    if isinstance(key, rsa.RSAPublicKey | dsa.DSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise BadCertificate(f"{key.key_size}-bit RSA/DSA key (at least {MIN_RSA_BITS})")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.key_size < MIN_EC_BITS:
            raise BadCertificate(f"{key.curve.key_size}-bit EC key (at least {MIN_EC_BITS})")
    elif not isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        raise BadCertificate(f"unsupported key type {type(key).__name__}")


def check_ca(cert: x509.Certificate, now: datetime) -> None:
    """A root/CA certificate to install (M05.FR.06): a CA (basicConstraints cA), not expired,
    a strong enough key, and a valid self-signature when it is self-issued."""
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise BadCertificate("not a CA certificate (no basicConstraints)") from None
    if not bc.ca:
        raise BadCertificate("not a CA certificate (basicConstraints cA false)")
    if cert.not_valid_after_utc <= now:
        raise BadCertificate(f"expired {cert.not_valid_after_utc.isoformat()}")
    check_key_strength(cert.public_key())
    if cert.issuer == cert.subject and not is_self_signed(cert):
        raise BadCertificate("self-issued certificate with an invalid signature")


def _attr(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in name.get_attributes_for_oid(oid)]


def _same_key(a: PublicKeyTypes, b: PublicKeyTypes) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    return a.public_bytes(serialization.Encoding.DER, fmt) == b.public_bytes(
        serialization.Encoding.DER, fmt
    )


def verify_station_chain(
    chain: list[x509.Certificate],
    *,
    roots: list[x509.Certificate],
    key: PublicKeyTypes,
    organization: str,
    station_id: str,
    now: datetime,
) -> None:
    """A02/A03.FR.06: the charger certificate (first of ``chain``, followed by sub-CAs)

    - is for ``key`` (the pending CSR's key),
    - names ``organization`` (O, the CpoName) and ``station_id`` (the only CN),
    - is not expired ``now``; not yet valid only up to MAX_NOT_BEFORE_AHEAD (A03.FR.08
      switches to it when its time comes),
    - is not a CA and has a strong enough key (A00.FR.501-503),
    - chains to one of ``roots`` (the installed CSMS roots): every signature, CA flag,
      path length, key usage and validity period on the path is checked by
      ``cryptography.x509.verification`` (RFC 5280 path validation with the Web PKI CA
      profile). The leaf's extensions are checked here instead, because the Web PKI leaf
      profile wants a subjectAltName that A00.FR.511 advises against."""
    if not chain:
        raise BadCertificate("empty chain")
    leaf = chain[0]
    if not _same_key(leaf.public_key(), key):
        raise BadCertificate("the certificate is not for the key of the last CSR")
    check_key_strength(leaf.public_key())
    if leaf.not_valid_after_utc <= now:
        raise BadCertificate(f"expired {leaf.not_valid_after_utc.isoformat()}")
    if leaf.not_valid_before_utc > now + MAX_NOT_BEFORE_AHEAD:
        raise BadCertificate(f"not valid before {leaf.not_valid_before_utc.isoformat()}")
    try:
        bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            raise BadCertificate("the charger certificate is a CA certificate")
    except x509.ExtensionNotFound:
        pass
    orgs = _attr(leaf.subject, NameOID.ORGANIZATION_NAME)
    if organization not in orgs:
        raise BadCertificate(f"O {orgs!r} is not the CpoName {organization!r}")
    cns = _attr(leaf.subject, NameOID.COMMON_NAME)
    if cns != [station_id]:
        raise BadCertificate(f"CN {cns!r} is not the station id {station_id!r}")
    if not roots:
        raise BadCertificate("no CSMS root certificate installed")
    # Path validation at the later of now and notBefore: a certificate for later is checked
    # as it will be then (every CA on the path must still be valid at that time).
    at = max(now, leaf.not_valid_before_utc)
    verifier = (
        PolicyBuilder()
        .store(Store(roots))
        .time(at)
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all()
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, chain[1:])
    except VerificationError as exc:
        raise BadCertificate(f"not part of the CSMS root hierarchy: {str(exc)[:120]}") from None


def generate_key(kind: KeyType = KeyType.EC_P256) -> PrivateKeyTypes:
    """A new key pair made on the device (A02.FR.02; it never leaves it, A02.FR.05)."""
    if kind is KeyType.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    bits = 2048 if kind is KeyType.RSA_2048 else 3072
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def make_csr(key: PrivateKeyTypes, *, organization: str, common_name: str) -> str:
    """An RFC 2986 CSR, PEM (A02.FR.03), subject O = ``organization`` (the CpoName,
    A02/A03.FR.13) and CN = ``common_name`` (the station id, A00.FR.511), signed with
    SHA-256 (A00.FR.506)."""
    if not organization:
        raise BadCertificate("CpoName is not set")
    if not common_name or looks_like_url_or_ip(common_name):
        raise BadCertificate(f"station id {common_name!r} looks like a URL or an IP address")
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise BadCertificate(f"unsupported key type {type(key).__name__}")
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def issuer_key_for(
    cert: x509.Certificate, candidates: list[x509.Certificate]
) -> CertificateIssuerPublicKeyTypes | None:
    """The public key that signed ``cert``: its own when self-signed, else the first of
    ``candidates`` whose subject is its issuer and whose key verifies its signature."""
    if is_self_signed(cert):
        return cert.public_key()  # type: ignore[return-value]
    for other in candidates:
        if other.subject == cert.issuer and issued_by(cert, other):
            return other.public_key()  # type: ignore[return-value]
    return None
