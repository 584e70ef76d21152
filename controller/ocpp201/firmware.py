"""OCPP 2.0.1 firmware management (L01 secure, L02 plain): UpdateFirmware on the neutral
updater and its FirmwareStatusNotifications; PublishFirmware (L03/L04) is not offered."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from controller.core.timestamps import parse_iso
from controller.csms.rpc import CallError, CallTimeout, ConnectionLost
from controller.ocpp201 import FIRMWARE_UNSENT_KEY
from controller.ocpp201.rpc import FORMAT_VIOLATION

if TYPE_CHECKING:
    # The updater's code loads with the first firmware request (App._build_firmware), not
    # with the client: these modules are not imported at start.
    from controller.maintenance.firmware import FirmwareJob, FirmwareState, FirmwareUpdater
    from controller.ocpp201.client import Ocpp201Client

LOG = logging.getLogger(__name__)

ACTION = "FirmwareStatusNotification"
UNSENT_KEY = FIRMWARE_UNSENT_KEY
MAX_RETRIES = 100
MAX_RETRY_INTERVAL_S = 86400

# FirmwareStatusEnumType by FirmwareState value (DownloadPaused is never entered: evsed
# does not pause a download).
STATUS: dict[str, str] = {
    "idle": "Idle",
    "download scheduled": "DownloadScheduled",
    "downloading": "Downloading",
    "downloaded": "Downloaded",
    "download failed": "DownloadFailed",
    "signature verified": "SignatureVerified",
    "invalid signature": "InvalidSignature",
    "install scheduled": "InstallScheduled",
    "installing": "Installing",
    "install rebooting": "InstallRebooting",
    "installed": "Installed",
    "installation failed": "InstallationFailed",
    "install verification failed": "InstallVerificationFailed",
}

# UpdateFirmwareStatusEnumType by SubmitResult name.
SUBMIT_STATUS = {
    "ACCEPTED": "Accepted",
    "ACCEPTED_CANCELED": "AcceptedCanceled",
    "REJECTED": "Rejected",
    "INVALID_CERTIFICATE": "InvalidCertificate",
}

# While the updater is in one of these, the install cannot be interrupted (B11.FR.06: a
# station Reset is Rejected; L01.FR.27: a new UpdateFirmware too).
UNINTERRUPTIBLE = frozenset({"installing", "install rebooting"})


class Firmware201:
    """Reports the updater's states to the CSMS.

    Delivery: each status is sent when it is entered (L01.FR.01, L02.FR.01), in order; the
    latest one not yet confirmed is also kept in a settings row and sent again after every
    (re)connection, so the outcome of an update that spans a restart (InstallRebooting,
    then Installed or InstallationFailed from the version that runs next, L01.FR.32 a)
    reaches the CSMS. Older unconfirmed statuses are replaced by newer ones: the CSMS
    needs where the update is. They are not queued with the transaction messages: a CSMS
    that never answers them must not hold back a TransactionEvent."""

    def __init__(self, client: Ocpp201Client, updater: FirmwareUpdater) -> None:
        self.client = client
        self.updater = updater
        self._order = asyncio.Lock()  # FIFO: the statuses go out in the order entered
        updater.add_listener(self._on_state)
        client.on_accepted.append(self._on_accepted)
        updater.allow_new_sessions = self._allow_new_sessions  # L02.FR.04

    def _allow_new_sessions(self) -> bool:
        """ChargingStation.AllowNewSessionsPendingFirmwareUpdate (false when absent)."""
        model = self.client.device_model
        if model is None:
            return False
        try:
            return model.get_bool("ChargingStation", "AllowNewSessionsPendingFirmwareUpdate")
        except KeyError:
            return False

    @staticmethod
    def payload_for(state: FirmwareState, job: FirmwareJob | None) -> dict[str, Any]:
        """L01.FR.10/20, L02.FR.06/14: the request's id with every status but Idle."""
        payload: dict[str, Any] = {"status": STATUS[state.value]}
        if state.value != "idle" and job is not None and job.request_id is not None:
            payload["requestId"] = job.request_id
        return payload

    def _on_state(self, state: FirmwareState, job: FirmwareJob | None) -> None:
        payload = self.payload_for(state, job)
        self.client.store.set_setting(UNSENT_KEY, json.dumps(payload))
        if self.client.connection_state() == "accepted":
            self.client.spawn(self._send(payload), name="firmware-status")

    async def _send(self, payload: dict[str, Any]) -> None:
        async with self._order:
            try:
                await self.client.call(ACTION, payload)
            except (CallError, CallTimeout, ConnectionLost) as exc:
                LOG.info("%s %s not delivered: %s", ACTION, payload["status"], exc)
                return
        store = self.client.store
        if store.get_setting(UNSENT_KEY) == json.dumps(payload):
            store.delete_setting(UNSENT_KEY)

    def _on_accepted(self) -> None:
        raw = self.client.store.get_setting(UNSENT_KEY)
        if raw:
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = None
            if isinstance(payload, dict) and isinstance(payload.get("status"), str):
                self.client.spawn(self._send(payload), name="firmware-status")
            else:
                self.client.store.delete_setting(UNSENT_KEY)
        # The boot of this version was accepted: a version on trial is confirmed.
        self.updater.boot_accepted()

    def triggered(self) -> dict[str, Any]:
        """L01.FR.25/26, L02.FR.16/17: Idle after Installed (or when no update ever ran),
        else the last status sent, with its requestId."""
        from controller.maintenance.firmware import FirmwareState

        state = self.updater.state
        if state is FirmwareState.INSTALLED:
            state = FirmwareState.IDLE
        return self.payload_for(state, self.updater.job)

    @property
    def uninterruptible(self) -> bool:
        return self.updater.busy and self.updater.state.value in UNINTERRUPTIBLE

    # ------------------------------------------------------------------ UpdateFirmware

    async def request(self, p: dict[str, Any]) -> dict[str, Any]:
        """UpdateFirmwareRequest (L01 with signingCertificate and signature, L02 without)."""
        from controller.maintenance.firmware import FirmwareJob, SubmitResult

        fw = p["firmware"]
        request_id = int(p["requestId"])
        retrieve_at = parse_iso(str(fw["retrieveDateTime"]))
        install_at = parse_iso(str(fw["installDateTime"])) if "installDateTime" in fw else None
        if retrieve_at is None or ("installDateTime" in fw and install_at is None):
            raise CallError(FORMAT_VIOLATION, "retrieveDateTime/installDateTime")
        certificate = fw.get("signingCertificate")
        signature = fw.get("signature")
        trust = self.updater.trust
        secure = trust is not None and bool(trust.manufacturer_roots_pem().strip())
        if certificate is None and signature is None and secure:
            # A charger with a manufacturer root takes signed firmware only (L01.FR.09,
            # TC_L_18_CS: Rejected or InvalidCertificate).
            LOG.warning("UpdateFirmware %d without signature refused", request_id)
            return _answer("Rejected", "MissingParam", "signed firmware required")
        if signature is not None and certificate is None:
            # L01.FR.21/22: nothing to check the signature with.
            return _answer("InvalidCertificate", "MissingParam", "signingCertificate missing")
        if certificate is not None and signature is None:
            return _answer("Rejected", "MissingParam", "signature missing")
        job = FirmwareJob(
            location=str(fw["location"]),
            retrieve_at=retrieve_at,
            retries=_clamp(p.get("retries"), MAX_RETRIES),
            retry_interval_s=_clamp(p.get("retryInterval"), MAX_RETRY_INTERVAL_S),
            install_at=install_at,
            signature=None if signature is None else str(signature),
            signing_certificate=None if certificate is None else str(certificate),
            request_id=request_id,
        )
        # L01.FR.21-24/27, L02.FR.15/18: the certificate checked before the answer; a
        # running update canceled (AcceptedCanceled) unless it is installing (Rejected).
        result = await self.updater.submit(job)
        if result is SubmitResult.REJECTED:
            return _answer("Rejected", "FwUpdateInProgress", "an install is running")
        if result is SubmitResult.INVALID_CERTIFICATE:
            return _answer("InvalidCertificate", "InvalidCertificate", "")
        return {"status": SUBMIT_STATUS[result.name]}


def _answer(status: str, reason: str, info: str) -> dict[str, Any]:
    status_info: dict[str, Any] = {"reasonCode": reason}
    if info:
        status_info["additionalInfo"] = info
    return {"status": status, "statusInfo": status_info}


def _clamp(value: Any, high: int) -> int:
    return max(0, min(int(value or 0), high))


def attach(client: Ocpp201Client, updater: FirmwareUpdater) -> Firmware201:
    """Wire the updater to the client (the composition root calls it)."""
    adapter = Firmware201(client, updater)
    client.firmware = adapter
    return adapter


def loaded(client: Ocpp201Client) -> Firmware201 | None:
    """The client's firmware adapter, built on first use when the composition root left a
    factory (nothing was pending at start); None without firmware updates."""
    if client.firmware is None and client.firmware_factory is not None:
        client.firmware_factory()  # builds the updater and attaches it (client.firmware)
    adapter = client.firmware
    return adapter if isinstance(adapter, Firmware201) else None


def blocks_reset(client: Ocpp201Client) -> bool:
    """B11.FR.06: an install under way cannot be interrupted by a station Reset. (An update
    that downloads or waits carries on after the restart: it does not block one.)"""
    adapter = client.firmware
    return isinstance(adapter, Firmware201) and adapter.uninterruptible


async def update_firmware(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    adapter = loaded(client)
    if adapter is None:
        return _answer("Rejected", "UnsupportedRequest", "firmware updates are not configured")
    return await adapter.request(payload)


def trigger_firmware_status(client: Ocpp201Client, evse: dict[str, Any] | None) -> str:
    """TriggerMessage(FirmwareStatusNotification): the real status (F06.FR.16, L01.FR.25/26),
    sent once, after the answer."""
    adapter = loaded(client)
    payload = {"status": "Idle"} if adapter is None else adapter.triggered()

    async def send() -> None:
        try:
            await client.call(ACTION, payload)
        except (CallError, CallTimeout, ConnectionLost) as exc:
            LOG.info("triggered %s not delivered: %s", ACTION, exc)

    client.spawn(send(), name="trigger-FirmwareStatusNotification")
    return "Accepted"


# PublishFirmware / UnpublishFirmware (L03, L04) are for a Local Controller: evsed is a
# charging station, so they have no route and are answered NotSupported.
ROUTES = {"UpdateFirmware": update_firmware}
