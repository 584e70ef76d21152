"""OCPP 2.0.1 certificate management (M03-M05) and the charging station certificate (A02/A03)
on the neutral certificate store (controller/security/certstore.py, shared with 1.6)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from controller.csms.rpc import CallError, CallTimeout, ConnectionLost
from controller.runtime.clock import sleep_or_event
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
    from controller.ocpp201.client import Ocpp201Client
    from controller.security.certstore import CertStore

LOG = logging.getLogger(__name__)

SECURITY = "SecurityCtrlr"
# InstallCertificateUseEnumType / GetCertificateIdUseEnumType -> the store's kinds. The
# station keeps no V2GCertificateChain (no ISO 15118 certificate of its own): asked for
# one, it has none to report.
USE_201: dict[str, CertificateUse] = {
    "CSMSRootCertificate": CertificateUse.CSMS_ROOT,
    "ManufacturerRootCertificate": CertificateUse.MANUFACTURER_ROOT,
    "V2GRootCertificate": CertificateUse.V2G_ROOT,
    "MORootCertificate": CertificateUse.MO_ROOT,
}
INSTALL_201 = {
    InstallStatus.ACCEPTED: "Accepted",
    InstallStatus.REJECTED: "Rejected",
    InstallStatus.FAILED: "Failed",
}
DELETE_201 = {
    DeleteStatus.DELETED: "Accepted",
    DeleteStatus.FAILED: "Failed",
    DeleteStatus.NOT_FOUND: "NotFound",
}
# When SecurityCtrlr.CertificateEntries has no maxLimit (it always has one in evsed's model).
DEFAULT_MAX_ENTRIES = 20
# How often the A03 renewal condition is looked at (the request itself is at most daily).
RENEWAL_CHECK_INTERVAL_S = 3600.0
STATION_CERT = "ChargingStationCertificate"


def _store(client: Ocpp201Client) -> CertStore | None:
    handle = client.certstore
    return None if handle is None else handle.get()


def _model_text(client: Ocpp201Client, variable: str, default: str) -> str:
    model = client.device_model
    if model is None:
        return default
    try:
        value = model.get(SECURITY, variable)
    except KeyError:
        return default
    return default if value is None else value


def _model_int(client: Ocpp201Client, variable: str, default: int) -> int:
    try:
        return int(_model_text(client, variable, str(default)))
    except ValueError:
        return default


def _max_entries(client: Ocpp201Client) -> int:
    """M05.FR.06: SecurityCtrlr.CertificateEntries' maxLimit bounds the installed roots."""
    model = client.device_model
    definition = None if model is None else model.find(SECURITY, "CertificateEntries")
    if definition is None or definition.characteristics.max_limit is None:
        return DEFAULT_MAX_ENTRIES
    return int(definition.characteristics.max_limit)


def hash_data_201(data: CertificateHashData) -> dict[str, str]:
    """CertificateHashDataType (serialNumber: hex without leading zeros, as M03.FR.04)."""
    return {
        "hashAlgorithm": data.hash_algorithm.value,
        "issuerNameHash": data.issuer_name_hash,
        "issuerKeyHash": data.issuer_key_hash,
        "serialNumber": data.serial_number,
    }


def _tls_in_use(client: Ocpp201Client) -> bool:
    security = client.security
    return security is not None and security.profile >= 2


# ---------------------------------------------------------------------- M03-M05


async def install_certificate(client: Ocpp201Client, p: dict[str, Any]) -> dict[str, Any]:
    """M05.FR.01-07: install a root of the given type; Rejected when it is not one valid
    CA certificate or the store is full (CertificateEntries' maxLimit, all kinds count),
    Failed when it could not be written; one that is there already is Accepted
    (M05.FR.17). AdditionalRootCertificateCheck is false (ReadOnly): M05.FR.09-16 do
    not apply."""
    store = _store(client)
    if store is None:
        return {"status": "Failed", "statusInfo": {"reasonCode": "NoCertificateStore"}}
    status = store.install_root(
        USE_201[p["certificateType"]], p["certificate"], max_count=_max_entries(client)
    )
    return {"status": INSTALL_201[status]}


async def get_installed_certificate_ids(client: Ocpp201Client, p: dict[str, Any]) -> dict[str, Any]:
    """M03.FR.01-05: the hash data (SHA256) of every installed certificate of the requested
    types (of every type without certificateType), each with its certificateType; NotFound
    when there is none."""
    store = _store(client)
    wanted = p.get("certificateType") or [*USE_201, "V2GCertificateChain"]
    chains: list[dict[str, Any]] = []
    for kind in wanted:
        use = USE_201.get(kind)
        if store is None or use is None:
            continue  # V2GCertificateChain: the station has none
        for data in store.installed_hashes(use, HashAlgorithm.SHA256):
            chains.append({"certificateType": kind, "certificateHashData": hash_data_201(data)})
    if not chains:
        return {"status": "NotFound"}
    return {"status": "Accepted", "certificateHashDataChain": chains}


async def delete_certificate(client: Ocpp201Client, p: dict[str, Any]) -> dict[str, Any]:
    """M04.FR.01-07: the certificate whose hash data (with the request's hashAlgorithm)
    matches; Failed for the station's own certificate (M04.FR.06) and for the last CSMS
    root while the connection uses TLS (the one in use, M04.FR.06), NotFound when none
    matches (M04.FR.04)."""
    store = _store(client)
    if store is None:
        return {"status": "NotFound"}
    h = p["certificateHashData"]
    wanted = CertificateHashData(
        HashAlgorithm(h["hashAlgorithm"]),
        h["issuerNameHash"],
        h["issuerKeyHash"],
        h["serialNumber"],
    )
    status = store.delete(wanted, keep_last_csms_root=_tls_in_use(client))
    return {"status": DELETE_201[status]}


# ---------------------------------------------------------------------- A02/A03


class CertSigning:
    """The SignCertificate of the station certificate and its back-off (A02/A03.FR.17-19):
    a CSR the CSMS Accepted is sent again after CertSigningWaitMinimum, doubling, at most
    CertSigningRepeatTimes times, while no CertificateSigned came. A CertificateSigned
    (valid or not) ends the back-off; after an invalid one nothing is sent until the CSMS
    triggers again (A02.FR.20)."""

    def __init__(self, client: Ocpp201Client) -> None:
        self._client = client
        self._answered = asyncio.Event()  # a CertificateSigned came since the last CSR
        self._round = 0  # each new CSR (trigger, renewal) ends the back-off of the one before

    def signed_received(self) -> None:
        self._answered.set()

    def trigger(self) -> str:
        """TriggerMessage(SignChargingStationCertificate): Rejected without a store, without
        SecurityCtrlr.OrganizationName (the CSR's O, A00.FR.509) or with a station id that
        cannot be a certificate's CN (A00.FR.511); else the CSR goes after the answer."""
        client = self._client
        if _store(client) is None or not _model_text(client, "OrganizationName", ""):
            return "Rejected"
        if looks_like_url_or_ip(client.identity.station_id):
            LOG.error("no CSR: the station id looks like a URL or an IP address (A00.FR.511)")
            return "Rejected"
        self.start("requested by the CSMS")
        return "Accepted"

    def start(self, reason: str) -> None:
        self._round += 1
        self._client.spawn(self._sign(self._round, reason), name="sign-certificate")

    async def _sign(self, round_: int, reason: str) -> None:
        """A new key pair and CSR, SignCertificate, then the back-off for this CSR."""
        client = self._client
        store = _store(client)
        if store is None:
            return
        await asyncio.sleep(0)  # the trigger's answer goes out first (A02.FR.02)
        try:
            csr = store.new_csr(
                organization=_model_text(client, "OrganizationName", ""),
                station_id=client.identity.station_id,
            )
        except (BadCertificate, OSError) as exc:
            LOG.error("no CSR made (%s): %s", reason, exc)
            return
        self._answered.clear()
        if not await self._send(csr, reason):
            return
        wait_s = float(_model_int(client, "CertSigningWaitMinimum", 60))
        for _ in range(_model_int(client, "CertSigningRepeatTimes", 3)):
            if await self._answered_within(wait_s) or round_ != self._round:
                return
            LOG.warning("no CertificateSigned within %.0f s: SignCertificate again", wait_s)
            if not await self._send(csr, f"{reason}, again (A02.FR.17)"):
                return
            wait_s *= 2  # A02.FR.18
        if not await self._answered_within(wait_s) and round_ == self._round:
            LOG.warning("no CertificateSigned came: no further SignCertificate until triggered")

    async def _answered_within(self, wait_s: float) -> bool:
        await sleep_or_event(self._client.clock.sleep(wait_s), self._answered)
        return self._answered.is_set()

    async def _send(self, csr: str, reason: str) -> bool:
        try:
            result = await self._client.call(
                "SignCertificate", {"csr": csr, "certificateType": STATION_CERT}
            )
        except (CallError, CallTimeout, ConnectionLost) as exc:
            LOG.warning("SignCertificate not delivered (%s): %s", reason, exc)
            return False
        if result.get("status") != "Accepted":
            LOG.warning("SignCertificate Rejected by the CSMS (%s)", reason)
            return False
        LOG.info("SignCertificate Accepted (%s): waiting for CertificateSigned", reason)
        return True

    async def renewal_loop(self) -> None:
        """A03.FR.02: while connected, a CSR when the certificate in use expires within a
        month; at most once a day until a new one is installed (the store keeps when)."""
        client = self._client
        while True:
            # Only a store something opened holds a certificate in use: looking must not
            # load the crypto library.
            handle = client.certstore
            store = None if handle is None else handle.opened
            if client.connection_state() == "accepted" and store is not None:
                if store.renewal_due() and _model_text(client, "OrganizationName", ""):
                    store.note_renewal_requested()
                    self.start("the certificate expires within 30 days")
            await client.clock.sleep(RENEWAL_CHECK_INTERVAL_S)


async def certificate_signed(client: Ocpp201Client, p: dict[str, Any]) -> dict[str, Any]:
    """A02/A03.FR.06-08, FR.16: check the chain the CA signed for an open CSR (validity,
    O = SecurityCtrlr.OrganizationName, CN = station id, the CSMS root hierarchy, at most
    MaxCertificateChainSize characters) and install it on probation; an invalid one is
    discarded with an InvalidChargingStationCertificate security event. A V2GCertificate
    is Rejected: the station has no ISO 15118 certificate."""
    client.cert_signing.signed_received()
    store = _store(client)
    kind = p.get("certificateType", STATION_CERT)
    if store is None or kind != STATION_CERT:
        reason = "NoCertificateStore" if store is None else "UnsupportedCertType"
        return {"status": "Rejected", "statusInfo": {"reasonCode": reason}}
    ok = store.accept_signed(
        p["certificateChain"],
        organization=_model_text(client, "OrganizationName", ""),
        station_id=client.identity.station_id,
        max_chain_chars=_model_int(client, "MaxCertificateChainSize", 10000),
    )
    return {"status": "Accepted" if ok else "Rejected"}


def trigger_sign_station_certificate(client: Ocpp201Client, evse: dict[str, Any] | None) -> str:
    """F06 / A02.FR.02: TriggerMessage(SignChargingStationCertificate)."""
    return client.cert_signing.trigger()


ROUTES = {
    "InstallCertificate": install_certificate,
    "GetInstalledCertificateIds": get_installed_certificate_ids,
    "DeleteCertificate": delete_certificate,
    "CertificateSigned": certificate_signed,
}
