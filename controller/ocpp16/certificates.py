"""The security whitepaper's certificate messages (A02/A03, M03-M05) and ExtendedTriggerMessage."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from controller.csms.rpc import CallError, CallTimeout, ConnectionLost
from controller.ocpp16.routes import route, trigger
from controller.security.certtypes import (
    BadCertificate,
    CertificateHashData,
    CertificateUse,
    DeleteStatus,
    HashAlgorithm,
    InstallStatus,
    looks_like_url_or_ip,
)

if TYPE_CHECKING:
    from controller.ocpp16.client import Ocpp16Client

LOG = logging.getLogger(__name__)

# 1.6 CertificateUseEnumType (6.4): only the two root kinds; the charger's own certificate
# is reached through SignCertificate / CertificateSigned.
USE_16: dict[str, CertificateUse] = {
    "CentralSystemRootCertificate": CertificateUse.CSMS_ROOT,
    "ManufacturerRootCertificate": CertificateUse.MANUFACTURER_ROOT,
}
INSTALL_16 = {
    InstallStatus.ACCEPTED: "Accepted",
    InstallStatus.REJECTED: "Rejected",
    InstallStatus.FAILED: "Failed",
}
DELETE_16 = {
    DeleteStatus.DELETED: "Accepted",
    DeleteStatus.FAILED: "Failed",
    DeleteStatus.NOT_FOUND: "NotFound",
}

# How often the A03 renewal condition is looked at (the request itself is at most daily).
RENEWAL_CHECK_INTERVAL_S = 3600.0


def _hash_16(data: CertificateHashData) -> dict[str, str]:
    return {
        "hashAlgorithm": data.hash_algorithm.value,
        "issuerNameHash": data.issuer_name_hash,
        "issuerKeyHash": data.issuer_key_hash,
        "serialNumber": data.serial_number,
    }


@route("CertificateSigned")
async def certificate_signed(client: Ocpp16Client, p: dict[str, Any]) -> dict[str, Any]:
    """A02/A03.FR.06-08: check the chain the CA signed for the last CSR and install it on
    probation; an invalid one is discarded with an InvalidChargePointCertificate event."""
    store = client.certstore
    if store is None:
        return {"status": "Rejected"}
    ok = store.accept_signed(
        p["certificateChain"],
        organization=client.settings.get("CpoName"),
        station_id=client.identity.station_id,
        max_chain_chars=client.settings.get_int("CertificateSignedMaxChainSize"),
    )
    return {"status": "Accepted" if ok else "Rejected"}


@route("InstallCertificate")
async def install_certificate(client: Ocpp16Client, p: dict[str, Any]) -> dict[str, Any]:
    """M05: a CSMS or manufacturer root; CertificateStoreMaxLength bounds the store."""
    store = client.certstore
    if store is None:
        return {"status": "Failed"}
    status = store.install_root(
        USE_16[p["certificateType"]],
        p["certificate"],
        max_count=client.settings.get_int("CertificateStoreMaxLength"),
    )
    return {"status": INSTALL_16[status]}


@route("DeleteCertificate")
async def delete_certificate(client: Ocpp16Client, p: dict[str, Any]) -> dict[str, Any]:
    """M04: never the charger's own certificate (M04.FR.05), never the last CSMS root while
    the connection uses TLS (security profile 2 or 3; M04.FR.06)."""
    store = client.certstore
    if store is None:
        return {"status": "NotFound"}
    h = p["certificateHashData"]
    wanted = CertificateHashData(
        HashAlgorithm(h["hashAlgorithm"]),
        h["issuerNameHash"],
        h["issuerKeyHash"],
        h["serialNumber"],
    )
    tls = client.settings.get_int("SecurityProfile") >= 2
    return {"status": DELETE_16[store.delete(wanted, keep_last_csms_root=tls)]}


@route("GetInstalledCertificateIds")
async def get_installed_certificate_ids(client: Ocpp16Client, p: dict[str, Any]) -> dict[str, Any]:
    """M03: Accepted with the hash data (SHA256) of each, NotFound when there is none."""
    store = client.certstore
    found = [] if store is None else store.installed_hashes(USE_16[p["certificateType"]])
    if not found:
        return {"status": "NotFound"}
    return {"status": "Accepted", "certificateHashData": [_hash_16(d) for d in found]}


@route("ExtendedTriggerMessage")
async def extended_trigger_message(client: Ocpp16Client, p: dict[str, Any]) -> dict[str, Any]:
    """5.5/5.6: the whitepaper's TriggerMessage. BootNotification, Heartbeat, MeterValues and
    StatusNotification as TriggerMessage sends them; SignChargePointCertificate here; the
    signed FirmwareStatusNotification and LogStatusNotification by their features
    (routes.TRIGGERS with ``extended``), NotImplemented while none is registered."""
    requested = p["requestedMessage"]
    cid = p.get("connectorId")
    if cid is not None and not 0 <= cid <= len(client.station.connector_ids()):
        return {"status": "Rejected"}
    return {"status": client.trigger_message(requested, cid, extended=True)}


@trigger("SignChargePointCertificate")
def trigger_sign_certificate(client: Ocpp16Client, connector_id: int | None, extended: bool) -> str:
    """A02.FR.02/03: after ExtendedTriggerMessage.conf a new key pair and a SignCertificate.
    Rejected without a store, without a CpoName (the use case's prerequisite) or with a
    station id that cannot be a certificate's CN (A00.FR.511)."""
    if client.certstore is None or not client.settings.get("CpoName"):
        return "Rejected"
    if looks_like_url_or_ip(client.identity.station_id):
        LOG.error("no CSR: the station id looks like a URL or an IP address (A00.FR.511)")
        return "Rejected"
    client.spawn(request_certificate(client, reason="requested by the CSMS"), name="sign-cert")
    return "Accepted"


async def request_certificate(client: Ocpp16Client, *, reason: str) -> bool:
    """Make a key pair and CSR and send SignCertificate; True when the CSMS Accepted it.
    A Rejected answer is logged: the next trigger or renewal check asks again."""
    store = client.certstore
    if store is None:
        return False
    await asyncio.sleep(0)  # let the trigger's answer go out first (A02.FR.02)
    try:
        csr = store.new_csr(
            organization=client.settings.get("CpoName"), station_id=client.identity.station_id
        )
    except (BadCertificate, OSError) as exc:
        LOG.error("no CSR made (%s): %s", reason, exc)
        return False
    try:
        result = await client.call("SignCertificate", {"csr": csr})
    except (CallError, CallTimeout, ConnectionLost) as exc:
        LOG.warning("SignCertificate not delivered (%s): %s", reason, exc)
        return False
    if result.get("status") != "Accepted":
        LOG.warning("SignCertificate Rejected by the CSMS (%s): asked again later", reason)
        return False
    LOG.info("SignCertificate Accepted (%s): waiting for CertificateSigned", reason)
    return True


async def renewal_loop(client: Ocpp16Client) -> None:
    """A03.FR.02: while connected, send a CSR when the certificate in use expires within a
    month; at most once a day until a new one is installed (the store keeps when)."""
    while True:
        # Only a store something opened can hold a certificate in use (App opens it at
        # start when certificates are on disk); looking must not load the crypto library.
        store = client.certstore_opened
        if client.connection_state() == "accepted" and store is not None and store.renewal_due():
            store.note_renewal_requested()
            await request_certificate(client, reason="the certificate expires within 30 days")
        await client.clock.sleep(RENEWAL_CHECK_INTERVAL_S)
