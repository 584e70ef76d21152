"""The OCPP 1.6 spellings of the security event types (the queue is
controller/csms/security_events.py)."""

from __future__ import annotations

from controller.core.security import SecurityEventKind

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
