"""What TLS and signature checks need from the certificate store, as protocols."""

from __future__ import annotations

from typing import Protocol


class TlsMaterial(Protocol):
    """The trust anchors and identity a CSMS connection uses (security profiles 2 and 3).

    Implemented by the certificate store (controller/security/certstore.py); the connection
    asks for it at every attempt, so a certificate installed by the CSMS is used from the next
    connection on.
    """

    def csms_roots_pem(self) -> str:
        """The installed CentralSystemRootCertificates, concatenated PEM ('' = none)."""
        ...

    def client_identity(self) -> tuple[str, str] | None:
        """Paths of the charger's certificate chain (PEM) and its private key for the next
        connection (profile 3): the newest valid one (A03.FR.09), or None."""
        ...

    def connection_succeeded(self, profile: int) -> None:
        """A connection with this material was accepted by the CSMS: a certificate still on
        probation becomes the one in use and the one before it may be retired (A03.FR.10)."""
        ...

    def connection_failed(self, profile: int) -> None:
        """A connection with this material failed in the TLS handshake: a certificate on
        probation may be set aside for the previous one (the old one is kept until the new
        one worked)."""
        ...


class FirmwareTrust(Protocol):
    """What a signed firmware check needs: the installed ManufacturerRootCertificates."""

    def manufacturer_roots_pem(self) -> str:
        """Concatenated PEM of the installed ManufacturerRootCertificates ('' = none)."""
        ...
