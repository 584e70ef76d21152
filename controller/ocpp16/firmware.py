"""OCPP 1.6 firmware management: UpdateFirmware, SignedUpdateFirmware and their statuses."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from controller.core.timestamps import parse_iso
from controller.csms.rpc import CallError, CallTimeout, ConnectionLost
from controller.maintenance.firmware import (
    FirmwareJob,
    FirmwareState,
    FirmwareUpdater,
    SubmitResult,
)
from controller.ocpp16 import FIRMWARE_UNSENT_KEY
from controller.ocpp16.routes import route, trigger
from controller.ocpp16.rpc import NOT_SUPPORTED, TYPE_CONSTRAINT_VIOLATION

if TYPE_CHECKING:
    from controller.ocpp16.client import Ocpp16Client

LOG = logging.getLogger(__name__)

LEGACY_ACTION = "FirmwareStatusNotification"
SIGNED_ACTION = "SignedFirmwareStatusNotification"
UNSENT_KEY = FIRMWARE_UNSENT_KEY
MAX_RETRIES = 100
MAX_RETRY_INTERVAL_S = 86400

# 1.6 FirmwareStatusNotification knows seven statuses (7.25); the others are not reported.
LEGACY: dict[FirmwareState, str] = {
    FirmwareState.IDLE: "Idle",
    FirmwareState.DOWNLOADING: "Downloading",
    FirmwareState.DOWNLOADED: "Downloaded",
    FirmwareState.DOWNLOAD_FAILED: "DownloadFailed",
    FirmwareState.INSTALLING: "Installing",
    FirmwareState.INSTALLED: "Installed",
    FirmwareState.INSTALLATION_FAILED: "InstallationFailed",
    FirmwareState.INSTALL_VERIFICATION_FAILED: "InstallationFailed",
}

# Whitepaper 6.6 FirmwareStatusEnumType.
SIGNED: dict[FirmwareState, str] = {
    FirmwareState.IDLE: "Idle",
    FirmwareState.DOWNLOAD_SCHEDULED: "DownloadScheduled",
    FirmwareState.DOWNLOADING: "Downloading",
    FirmwareState.DOWNLOADED: "Downloaded",
    FirmwareState.DOWNLOAD_FAILED: "DownloadFailed",
    FirmwareState.SIGNATURE_VERIFIED: "SignatureVerified",
    FirmwareState.INVALID_SIGNATURE: "InvalidSignature",
    FirmwareState.INSTALL_SCHEDULED: "InstallScheduled",
    FirmwareState.INSTALLING: "Installing",
    FirmwareState.INSTALL_REBOOTING: "InstallRebooting",
    FirmwareState.INSTALLED: "Installed",
    FirmwareState.INSTALLATION_FAILED: "InstallationFailed",
    FirmwareState.INSTALL_VERIFICATION_FAILED: "InstallVerificationFailed",
}

SUBMIT_STATUS = {
    SubmitResult.ACCEPTED: "Accepted",
    SubmitResult.ACCEPTED_CANCELED: "AcceptedCanceled",
    SubmitResult.REJECTED: "Rejected",
    SubmitResult.INVALID_CERTIFICATE: "InvalidCertificate",
}


class Firmware16:
    """Reports the updater's states to the CSMS.

    Delivery: each status is sent when it happens; the latest one not yet confirmed is also
    kept in a settings row and sent again after every (re)connection, so the outcome of an
    update that spans a restart (InstallRebooting, then Installed or InstallationFailed from
    the version that runs next) reaches the CSMS. Older unconfirmed statuses are replaced by
    newer ones, like connector statuses (4.9): the CSMS needs where the update is, not the
    steps it missed while offline. Statuses are not queued with the transaction messages:
    a CSMS that never answers them must not hold back a StopTransaction.
    """

    def __init__(self, client: Ocpp16Client, updater: FirmwareUpdater) -> None:
        self.client = client
        self.updater = updater
        updater.add_listener(self._on_state)
        client.on_accepted.append(self._on_accepted)

    def _on_state(self, state: FirmwareState, job: FirmwareJob | None) -> None:
        message = self.message_for(state, job)
        if message is None:
            return
        self.client.store.set_setting(UNSENT_KEY, json.dumps(message))
        if self.client.connection_state() == "accepted":
            self.client._tasks.spawn(self._send(message), name="firmware-status")

    @staticmethod
    def message_for(state: FirmwareState, job: FirmwareJob | None) -> list[Any] | None:
        """[action, payload] of ``state`` for ``job`` (None: 1.6 has no word for it)."""
        if job is not None and job.signed:
            payload: dict[str, Any] = {"status": SIGNED[state]}
            if job.request_id is not None:
                payload["requestId"] = job.request_id  # L01.FR.10: the request's id
            return [SIGNED_ACTION, payload]
        legacy = LEGACY.get(state)
        return None if legacy is None else [LEGACY_ACTION, {"status": legacy}]

    async def _send(self, message: list[Any]) -> None:
        action, payload = message
        try:
            await self.client._call(action, payload)
        except (CallError, CallTimeout, ConnectionLost) as exc:
            LOG.info("%s %s not delivered: %s", action, payload["status"], exc)
            return
        store = self.client.store
        if store.get_setting(UNSENT_KEY) == json.dumps(message):
            store.delete_setting(UNSENT_KEY)

    def _on_accepted(self) -> None:
        raw = self.client.store.get_setting(UNSENT_KEY)
        if raw:
            try:
                message = json.loads(raw)
            except ValueError:
                message = None
            if isinstance(message, list) and len(message) == 2:
                self.client._tasks.spawn(self._send(message), name="firmware-status")
        # The boot of this version was accepted: a version on trial is confirmed.
        self.updater.boot_accepted()

    def triggered(self, extended: bool) -> list[Any]:
        """What (Extended)TriggerMessage(FirmwareStatusNotification) sends now."""
        state = self.updater.state
        job = self.updater.job
        if extended:
            # L01.FR.28: Idle after Installed; L01.FR.29: else the last status sent.
            if state in (FirmwareState.INSTALLED, FirmwareState.IDLE):
                return [SIGNED_ACTION, {"status": "Idle"}]
            payload: dict[str, Any] = {"status": SIGNED[state]}
            if job is not None and job.request_id is not None:
                payload["requestId"] = job.request_id
            return [SIGNED_ACTION, payload]
        # 1.6 4.5: Idle only when triggered and not busy with a download or an install.
        busy = self.updater.busy or state is FirmwareState.INSTALL_REBOOTING
        legacy = LEGACY.get(state) if busy else None
        return [LEGACY_ACTION, {"status": legacy or "Idle"}]


def attach(client: Ocpp16Client, updater: FirmwareUpdater) -> Firmware16:
    """Wire the updater to the client (the composition root calls it)."""
    adapter = Firmware16(client, updater)
    client.firmware = adapter
    return adapter


def _loaded(client: Ocpp16Client) -> Any:
    """The client's firmware adapter, built on first use when the composition root left a
    factory (nothing was pending at start)."""
    if client.firmware is None and client.firmware_factory is not None:
        client.firmware_factory()  # builds the updater and attaches it (client.firmware)
    return client.firmware


def _adapter(client: Ocpp16Client) -> Firmware16:
    adapter = _loaded(client)
    if not isinstance(adapter, Firmware16):
        raise CallError(NOT_SUPPORTED, "firmware updates are not configured")
    return adapter


def _clamp(value: Any, high: int) -> int:
    return max(0, min(int(value or 0), high))


@route("UpdateFirmware")
async def update_firmware(client: Ocpp16Client, p: dict[str, Any]) -> dict[str, Any]:
    """1.6 5.19 (unsigned). Once a ManufacturerRootCertificate is installed the charger
    takes signed firmware only (L01.FR.20: CALLERROR NotSupported; L01.FR.09)."""
    adapter = _adapter(client)
    trust = adapter.updater.trust
    if trust is not None and trust.manufacturer_roots_pem().strip():
        raise CallError(NOT_SUPPORTED, "use SignedUpdateFirmware (L01.FR.20)")
    retrieve_at = parse_iso(p["retrieveDate"])
    if retrieve_at is None:
        raise CallError(TYPE_CONSTRAINT_VIOLATION, "retrieveDate is not a dateTime")
    job = FirmwareJob(
        location=p["location"],
        retrieve_at=retrieve_at,
        retries=_clamp(p.get("retries"), MAX_RETRIES),
        retry_interval_s=_clamp(p.get("retryInterval"), MAX_RETRY_INTERVAL_S),
    )
    # A request while one runs replaces it, except during an install (then it is dropped
    # and logged): UpdateFirmware.conf has no status to say either.
    result = await adapter.updater.submit(job)
    if result is SubmitResult.REJECTED:
        LOG.warning("UpdateFirmware ignored: an install is running")
    return {}


@route("SignedUpdateFirmware")
async def signed_update_firmware(client: Ocpp16Client, p: dict[str, Any]) -> dict[str, Any]:
    """Whitepaper 5.21 / L01."""
    adapter = _adapter(client)
    fw = p["firmware"]
    retrieve_at = parse_iso(fw["retrieveDateTime"])
    install_at = parse_iso(fw["installDateTime"]) if "installDateTime" in fw else None
    if retrieve_at is None or ("installDateTime" in fw and install_at is None):
        raise CallError(TYPE_CONSTRAINT_VIOLATION, "retrieveDateTime/installDateTime")
    job = FirmwareJob(
        location=fw["location"],
        retrieve_at=retrieve_at,
        retries=_clamp(p.get("retries"), MAX_RETRIES),
        retry_interval_s=_clamp(p.get("retryInterval"), MAX_RETRY_INTERVAL_S),
        install_at=install_at,
        signature=fw["signature"],
        signing_certificate=fw["signingCertificate"],
        request_id=int(p["requestId"]),
    )
    result = await adapter.updater.submit(job)
    return {"status": SUBMIT_STATUS[result]}


def _trigger_send(client: Ocpp16Client, extended: bool) -> str:
    adapter = _loaded(client)
    if not isinstance(adapter, Firmware16):
        return "NotImplemented" if not extended else "Rejected"
    action, payload = adapter.triggered(extended)
    client._tasks.spawn(client._send_best_effort(action, payload), name="trigger")
    return "Accepted"


@trigger("FirmwareStatusNotification")
def trigger_firmware_status(client: Ocpp16Client, connector_id: int | None, extended: bool) -> str:
    """TriggerMessage: FirmwareStatusNotification; ExtendedTriggerMessage: the signed one."""
    return _trigger_send(client, extended)
