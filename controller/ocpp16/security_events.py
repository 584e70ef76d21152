"""Security events as OCPP 1.6 SecurityEventNotification, queued in the backend's outbox."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from controller.core.security import SecurityEvent, SecurityEventKind
from controller.csms.rpc import CallError
from controller.ocpp16.rpc import NOT_IMPLEMENTED, NOT_SUPPORTED
from controller.storage.journal import TxJournal
from controller.storage.store import QueuedMessage
from controller.storage.writes import EventKind, Outgoing

LOG = logging.getLogger(__name__)

ACTION = "SecurityEventNotification"

# The whitepaper's own spellings (edition 3, section 8; its changelog fixed the spaces in
# "FailedToAuthenticationAtCentral System" and "Central SystemFailedToAuthentication").
TYPE_16: dict[SecurityEventKind, str] = {
    SecurityEventKind.FIRMWARE_UPDATED: "FirmwareUpdated",
    SecurityEventKind.FAILED_TO_AUTHENTICATE_AT_CSMS: "FailedToAuthenticationAtCentralSystem",
    SecurityEventKind.CSMS_FAILED_TO_AUTHENTICATE: "CentralSystemFailedToAuthentication",
    SecurityEventKind.SETTING_SYSTEM_TIME: "SettingSystemTime",
    SecurityEventKind.STARTUP_OF_THE_DEVICE: "StartupOfTheDevice",
    SecurityEventKind.RESET_OR_REBOOT: "ResetOrReboot",
    SecurityEventKind.SECURITY_LOG_WAS_CLEARED: "SecurityLogWasCleared",
    SecurityEventKind.RECONFIGURATION_OF_SECURITY_PARAMETERS: (
        "ReconfigurationOfSecurityParameters"
    ),
    SecurityEventKind.MEMORY_EXHAUSTION: "MemoryExhaustion",
    SecurityEventKind.INVALID_MESSAGES: "InvalidMessages",
    SecurityEventKind.ATTEMPTED_REPLAY_ATTACKS: "AttemptedReplayAttacks",
    SecurityEventKind.TAMPER_DETECTION_ACTIVATED: "TamperDetectionActivated",
    SecurityEventKind.INVALID_FIRMWARE_SIGNATURE: "InvalidFirmwareSignature",
    SecurityEventKind.INVALID_FIRMWARE_SIGNING_CERTIFICATE: "InvalidFirmwareSigningCertificate",
    SecurityEventKind.INVALID_CSMS_CERTIFICATE: "InvalidCentralSystemCertificate",
    SecurityEventKind.INVALID_CHARGING_STATION_CERTIFICATE: "InvalidChargePointCertificate",
    SecurityEventKind.INVALID_TLS_VERSION: "InvalidTLSVersion",
    SecurityEventKind.INVALID_TLS_CIPHER_SUITE: "InvalidTLSCipherSuite",
}


def notification(event: SecurityEvent) -> dict[str, Any]:
    """The SecurityEventNotification.req payload of ``event``."""
    payload: dict[str, Any] = {"type": TYPE_16[event.kind], "timestamp": event.at}
    info = event.tech_info
    if event.repeated:
        info = f"{info or ''} (+{event.repeated} earlier in this burst)".strip()
    if info:
        payload["techInfo"] = info[:255]
    return payload


class SecurityEvents16:
    """Listener of the security log: each event becomes a SecurityEventNotification in the
    backend's durable outbox (A04.FR.02: queued with guaranteed delivery, in order with the
    transaction messages, removed when the CSMS confirmed it). Non-critical events are sent
    too, once per burst (the log folds repeats), so a CSMS sees a failed certificate or an
    invalid frame without asking for the log."""

    def __init__(self, journal: TxJournal, backend: str, wake: Callable[[], None]) -> None:
        self._journal = journal
        self._backend = backend
        self._wake = wake
        self._told_unsupported = False

    def __call__(self, event: SecurityEvent) -> None:
        payload = notification(event)
        self._journal.enqueue(EventKind.SECURITY, [Outgoing(self._backend, ACTION, payload, 0)])
        self._wake()

    def refused_for_good(self, msg: QueuedMessage, exc: CallError) -> bool:
        """A 1.6 CSMS without the security extension answers NotImplemented/NotSupported:
        the event stays in the security log, and the queue behind it moves on."""
        if msg.kind is not EventKind.SECURITY or exc.code not in (NOT_IMPLEMENTED, NOT_SUPPORTED):
            return False
        if not self._told_unsupported:
            self._told_unsupported = True
            LOG.info(
                "the CSMS does not take SecurityEventNotification (%s): security events are"
                " kept in the security log only",
                exc.code,
            )
        return True
