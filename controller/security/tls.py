"""TLS for the CSMS connection (security profiles 2 and 3): the client context and failure kinds."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from controller.core.security import SecurityEventKind
from controller.security.certtypes import CertStoreHandle
from controller.security.material import TlsMaterial

LOG = logging.getLogger(__name__)

# TLS 1.2 cipher suites, in OpenSSL's names, best first. A00.FR.318 asks the charger for
# (ECDHE-ECDSA AES-128/256-GCM) or (RSA AES-128/256-GCM); both pairs are here, so either kind
# of CSMS certificate works. ECDHE-RSA with AES-GCM is added: the same AEAD cipher with forward
# secrecy, what a CSMS with an RSA certificate usually prefers. Everything else (CBC with
# HMAC-SHA1, 3DES, RC4, static DH, no authentication) is left out: A00.FR.319 forbids
# primitives unfit for legacy use, and the TLS 1.0/1.1 suite of A00.FR.318 is not needed since
# TLS 1.2 is the minimum here. The plain-RSA key exchange (no forward secrecy) comes last, so
# it is used only with a CSMS that offers nothing better. TLS 1.3 suites are all AEAD; OpenSSL
# offers its defaults for 1.3 (set_ciphers does not touch them).
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "AES128-GCM-SHA256",
        "AES256-GCM-SHA384",
    )
)
# A00.FR.312 allows TLS 1.0/1.1 only for chargers that cannot do 1.2; OCPP 2.0.1 forbids them.
MINIMUM_TLS = ssl.TLSVersion.TLSv1_2

# OpenSSL verify codes (x509_vfy.h) that name a certificate outside its validity period.
_X509_V_ERR_CERT_NOT_YET_VALID = 9
_X509_V_ERR_CERT_HAS_EXPIRED = 10
_X509_V_ERR_HOSTNAME_MISMATCH = 62
_X509_V_ERR_IP_ADDRESS_MISMATCH = 64  # a CSMS addressed by its IP address
_VERSION_REASONS = frozenset(
    {"UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION", "NO_PROTOCOLS_AVAILABLE"}
)


class TlsSetupError(Exception):
    """The charger cannot build its side of TLS (no trust anchor, no certificate, a file
    that does not load): a local problem, not the CSMS's, so no security event."""


class HandshakeRefused(Exception):
    """The CSMS answered the WebSocket upgrade with an HTTP status other than 101."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status} at the WebSocket upgrade")
        self.status = status


class ClosedAfterHandshake(Exception):
    """The TLS handshake completed but the CSMS closed the connection without answering the
    WebSocket upgrade. In TLS 1.3 this is how a refused (or missing) client certificate
    looks from the client side: the server checks it after the client finished its part of
    the handshake, and the alert is lost with the connection."""


class PlainTextRefused(Exception):
    """Security profile 2/3 with a ``ws://`` URL (or a redirect to one): never sent
    (A00.FR.311)."""


def client_context(profile: int, material: TlsMaterial) -> ssl.SSLContext | None:
    """The client SSLContext for ``profile`` (None for profiles 0 and 1: plain ``ws://``).

    The CSMS certificate is checked against the installed CSMS root certificates only
    (A00.FR.307), with its host name (A00.FR.308). Without any installed root the system
    trust store is used, so a CSMS with a publicly issued certificate works out of the box;
    from the first installed root on, only the installed roots count. Profile 3 adds the
    charger's certificate chain and key (A00.FR.401/402). Raises TlsSetupError.
    """
    if profile < 2:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname on
    ctx.minimum_version = MINIMUM_TLS
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION  # A00.FR.320 (CRIME); OpenSSL 3 has none anyway
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    roots = material.csms_roots_pem()
    try:
        if roots.strip():
            ctx.load_verify_locations(cadata=roots)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    except (ssl.SSLError, ValueError) as exc:
        raise TlsSetupError(f"the installed CSMS root certificates do not load: {exc}") from None
    if profile >= 3:
        identity = material.client_identity()
        if identity is None:
            raise TlsSetupError("security profile 3 without a charge point certificate")
        cert_path, key_path = identity
        try:
            ctx.load_cert_chain(cert_path, key_path)
        except (OSError, ssl.SSLError) as exc:
            raise TlsSetupError(f"the charge point certificate does not load: {exc}") from None
    return ctx


@dataclass(frozen=True)
class Failure:
    """A failed connection attempt seen as a security matter: the event to raise (None: an
    ordinary network failure), what to tell the operator (never a secret), and whether the
    CSMS refused the charger's credentials (HTTP 401/403 at the upgrade). The connection
    turns its library's exceptions into HandshakeRefused / PlainTextRefused first."""

    kind: SecurityEventKind | None
    tech_info: str
    credentials_refused: bool = False
    tls: bool = False  # the TLS handshake itself failed


def classify(exc: BaseException) -> Failure:
    """Map the exception of a failed connection attempt onto a security event kind:
    certificate not verified / wrong host / expired -> INVALID_CSMS_CERTIFICATE
    (A00.FR.309/310), protocol version -> INVALID_TLS_VERSION (A00.FR.315), no shared cipher
    suite -> INVALID_TLS_CIPHER_SUITE (A00.FR.322), HTTP 401/403 or a refused client
    certificate -> FAILED_TO_AUTHENTICATE_AT_CSMS, a plain-text URL for a TLS profile ->
    INVALID_TLS_VERSION (no TLS at all is the oldest version there is)."""
    cause = exc
    while not isinstance(cause, ssl.SSLError) and cause.__cause__ is not None:
        cause = cause.__cause__
    if isinstance(cause, ssl.SSLError):
        exc = cause
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        if code in (_X509_V_ERR_HOSTNAME_MISMATCH, _X509_V_ERR_IP_ADDRESS_MISMATCH):
            what = "host name mismatch"
        elif code == _X509_V_ERR_CERT_HAS_EXPIRED:
            what = "certificate expired"
        elif code == _X509_V_ERR_CERT_NOT_YET_VALID:
            what = "certificate not yet valid"
        else:
            what = "certificate not verified"
        return Failure(
            SecurityEventKind.INVALID_CSMS_CERTIFICATE,
            f"{what}: {exc.verify_message}",
            tls=True,
        )
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        if reason in _VERSION_REASONS:
            return Failure(
                SecurityEventKind.INVALID_TLS_VERSION,
                "the CSMS offers no TLS version >= 1.2",
                tls=True,
            )
        if reason == "WRONG_VERSION_NUMBER":
            return Failure(
                SecurityEventKind.INVALID_TLS_VERSION,
                "the CSMS does not answer with TLS (plain text or SSL)",
                tls=True,
            )
        if reason in ("NO_SHARED_CIPHER", "NO_CIPHERS_AVAILABLE", "SSLV3_ALERT_HANDSHAKE_FAILURE"):
            # A TLS 1.2 server answers a ClientHello without a cipher suite it takes with a
            # handshake_failure alert; the same alert can also mean a missing client
            # certificate in TLS 1.2 (TLS 1.3 has certificate_required for that).
            return Failure(
                SecurityEventKind.INVALID_TLS_CIPHER_SUITE,
                "handshake failure: no cipher suite in common (or a client certificate the"
                " CSMS requires)",
                tls=True,
            )
        if reason in (
            "TLSV13_ALERT_CERTIFICATE_REQUIRED",
            "SSLV3_ALERT_BAD_CERTIFICATE",
            "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
            "SSLV3_ALERT_CERTIFICATE_EXPIRED",
            "SSLV3_ALERT_CERTIFICATE_REVOKED",
            "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
            "TLSV1_ALERT_UNKNOWN_CA",
            "TLSV1_ALERT_ACCESS_DENIED",
        ):
            return Failure(
                SecurityEventKind.FAILED_TO_AUTHENTICATE_AT_CSMS,
                f"the CSMS refused the charge point certificate ({reason.lower()})",
                credentials_refused=False,
                tls=True,
            )
        return Failure(None, f"TLS error: {reason.lower() or exc}", tls=True)
    if isinstance(exc, ClosedAfterHandshake):
        return Failure(
            SecurityEventKind.FAILED_TO_AUTHENTICATE_AT_CSMS,
            "the CSMS closed the TLS connection before the upgrade (client certificate"
            " missing or refused?)",
            tls=True,
        )
    if isinstance(exc, HandshakeRefused):
        status = exc.status
        if status in (401, 403):
            return Failure(
                SecurityEventKind.FAILED_TO_AUTHENTICATE_AT_CSMS,
                f"HTTP {status} at the WebSocket upgrade",
                credentials_refused=True,
            )
        return Failure(None, f"HTTP {status} at the WebSocket upgrade")
    if isinstance(exc, PlainTextRefused):
        return Failure(
            SecurityEventKind.INVALID_TLS_VERSION,
            f"refused to connect without TLS: {exc}",
        )
    return Failure(None, str(exc) or type(exc).__name__)


# ------------------------------------------------------------------ checks for A05 guards


def valid_pem_certificates(pem: str, now: datetime) -> int:
    """How many certificates in ``pem`` are within their validity period at ``now``."""
    if not pem.strip():
        return 0
    try:
        from cryptography import x509  # only for a raise of the profile (50 ms import)

        certs = x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        return 0
    return sum(1 for c in certs if c.not_valid_before_utc <= now <= c.not_valid_after_utc)


def client_identity_usable(material: TlsMaterial, now: datetime) -> str | None:
    """Why the charger's certificate cannot be used for profile 3 (None: it can): present,
    loads with its key, and its leaf certificate is valid at ``now`` (A05.FR.04)."""
    identity = material.client_identity()
    if identity is None:
        return "no charge point certificate installed"
    cert_path, key_path = identity
    try:
        pem = Path(cert_path).read_text(encoding="ascii")
        from cryptography import x509

        leaf = x509.load_pem_x509_certificates(pem.encode())[0]
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return "the charge point certificate does not load"
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        return "the charge point certificate is not valid now"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_cert_chain(cert_path, key_path)
    except (OSError, ssl.SSLError):
        return "the charge point certificate and key do not match"
    return None


class FileTlsMaterial:
    """TlsMaterial from the TOML's ``[csms] ca_bundle``, ``client_cert`` and ``client_key``
    (files read at every attempt, so a replaced file counts from the next connection). The
    certificate store replaces it once it holds what the CSMS installed."""

    def __init__(
        self,
        ca_bundle: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
    ) -> None:
        self.ca_bundle = ca_bundle
        self.client_cert = client_cert
        self.client_key = client_key

    def csms_roots_pem(self) -> str:
        if self.ca_bundle is None:
            return ""
        try:
            return Path(self.ca_bundle).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            LOG.error("csms.ca_bundle %s unreadable: %s", self.ca_bundle, exc)
            return ""

    def client_identity(self) -> tuple[str, str] | None:
        if self.client_cert is None or self.client_key is None:
            return None
        return self.client_cert, self.client_key

    # The TOML's files have no probation: nothing to promote or to set aside.
    def connection_succeeded(self, profile: int) -> None:
        pass

    def connection_failed(self, profile: int) -> None:
        pass


class StoreTlsMaterial:
    """TlsMaterial from the certificate store (what the CSMS installed, the TOML's files
    installed on first boot), opened only when TLS needs it; ``fallback`` (the TOML's files)
    when the store cannot be used. A profile-1 connection never opens the store."""

    def __init__(self, handle: CertStoreHandle, fallback: TlsMaterial) -> None:
        self._handle = handle
        self._fallback = fallback

    def _material(self) -> TlsMaterial:
        store = self._handle.get()
        return store if store is not None else self._fallback

    def csms_roots_pem(self) -> str:
        return self._material().csms_roots_pem()

    def client_identity(self) -> tuple[str, str] | None:
        return self._material().client_identity()

    def connection_succeeded(self, profile: int) -> None:
        if profile >= 2:
            self._material().connection_succeeded(profile)

    def connection_failed(self, profile: int) -> None:
        if profile >= 2:
            self._material().connection_failed(profile)
