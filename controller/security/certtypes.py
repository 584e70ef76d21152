"""Certificate words without the crypto library: uses, statuses, hash data, key kinds.

Kept apart from certcheck/certstore (which need ``cryptography``, about 50 ms to import) so a
charger that never handles a certificate does not load it.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controller.security.certstore import CertStore


class BadCertificate(ValueError):
    """A certificate (chain) that must not be installed; the message says why (no secrets)."""


class HashAlgorithm(enum.Enum):
    """The hash of the certificate hash data (same spelling in OCPP 1.6 and 2.0.1)."""

    SHA256 = "SHA256"
    SHA384 = "SHA384"
    SHA512 = "SHA512"


@dataclass(frozen=True)
class CertificateHashData:
    """A certificate's identity as OCSP (RFC 6960 CertID) names it: the hashes of its issuer's
    name (DER) and of its issuer's public key bits, and its serial number in hex without
    leading zeros (upper case)."""

    hash_algorithm: HashAlgorithm
    issuer_name_hash: str
    issuer_key_hash: str
    serial_number: str

    def matches(self, other: CertificateHashData) -> bool:
        """Same certificate: hex compared without case, serials without leading zeros."""
        return (
            self.hash_algorithm is other.hash_algorithm
            and self.issuer_name_hash.lower() == other.issuer_name_hash.lower()
            and self.issuer_key_hash.lower() == other.issuer_key_hash.lower()
            and _serial(self.serial_number) == _serial(other.serial_number)
        )


def _serial(text: str) -> str:
    return text.strip().upper().lstrip("0") or "0"


_URL_LIKE = re.compile(r"^[a-z][a-z0-9+.-]*://|/", re.IGNORECASE)


def looks_like_url_or_ip(text: str) -> bool:
    """A00.FR.511: a charger's CN must not look like a URL or an IP address (so it cannot be
    taken for a server's name)."""
    if _URL_LIKE.search(text):
        return True
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


class KeyType(enum.Enum):
    """Key pair kinds for a CSR (A00.FR.501-503)."""

    EC_P256 = "ec-p256"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"


class CertificateUse(enum.Enum):
    """What a certificate is for, in neutral words (1.6: CentralSystemRootCertificate,
    ManufacturerRootCertificate; 2.0.1: CSMSRootCertificate, ManufacturerRootCertificate,
    ChargingStationCertificate). The value is the store's directory name."""

    CSMS_ROOT = "csms-root"
    MANUFACTURER_ROOT = "manufacturer-root"
    CHARGING_STATION = "charger"
    # 2.0.1 only (ISO 15118 trust anchors, kept for the EV side; M05 installs them).
    V2G_ROOT = "v2g-root"
    MO_ROOT = "mo-root"


ROOT_USES = (
    CertificateUse.CSMS_ROOT,
    CertificateUse.MANUFACTURER_ROOT,
    CertificateUse.V2G_ROOT,
    CertificateUse.MO_ROOT,
)


class InstallStatus(enum.Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"  # invalid, or the store is full (M05.FR.03/06)
    FAILED = "failed"  # valid, but could not be written (M05.FR.04)


class DeleteStatus(enum.Enum):
    DELETED = "deleted"
    FAILED = "failed"  # the charger's own, the last CSMS root in use, or a write error
    NOT_FOUND = "not-found"


class CertStoreHandle:
    """The certificate store, opened on first use: its crypto library costs about 50 ms to
    import (seconds on a small board), which a charger that never handles a certificate
    should not pay at every start. ``open_now`` opens it at once (TLS profiles, presets or
    certificates already on disk)."""

    def __init__(self, open_store: Callable[[], CertStore | None], *, open_now: bool) -> None:
        self._open_store: Callable[[], CertStore | None] | None = open_store
        self._store: CertStore | None = None
        self._on_open: list[Callable[[CertStore], None]] = []
        if open_now:
            self.get()

    def get(self) -> CertStore | None:
        """The store (opened now if it was not); None when it cannot be used."""
        if self._open_store is not None:
            open_store, self._open_store = self._open_store, None
            self._store = store = open_store()
            if store is not None:
                for listener in self._on_open:
                    listener(store)
        return self._store

    def when_opened(self, listener: Callable[[CertStore], None]) -> None:
        """``listener(store)`` once the store is open: now if it is, else when it opens
        (the renewal check of the charger's certificate starts then)."""
        if self._store is not None:
            listener(self._store)
        elif self._open_store is not None:
            self._on_open.append(listener)

    @property
    def opened(self) -> CertStore | None:
        """The store if it was opened, without opening it."""
        return self._store

    def manufacturer_roots_pem(self) -> str:
        """FirmwareTrust: the installed ManufacturerRootCertificates (opens the store)."""
        store = self.get()
        return "" if store is None else store.manufacturer_roots_pem()
