"""Security events in the charger's words: what happened, and which must reach the CSMS."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class SecurityEventKind(enum.Enum):
    """Every security event of the 1.6 security whitepaper (section 8) and OCPP 2.0.1
    (appendix 1); each adapter spells them its own way (1.6 ``InvalidCentralSystemCertificate``
    is 2.0.1 ``InvalidCsmsCertificate``)."""

    FIRMWARE_UPDATED = "FirmwareUpdated"
    FAILED_TO_AUTHENTICATE_AT_CSMS = "FailedToAuthenticateAtCsms"
    CSMS_FAILED_TO_AUTHENTICATE = "CsmsFailedToAuthenticate"
    SETTING_SYSTEM_TIME = "SettingSystemTime"
    STARTUP_OF_THE_DEVICE = "StartupOfTheDevice"
    RESET_OR_REBOOT = "ResetOrReboot"
    SECURITY_LOG_WAS_CLEARED = "SecurityLogWasCleared"
    RECONFIGURATION_OF_SECURITY_PARAMETERS = "ReconfigurationOfSecurityParameters"
    MEMORY_EXHAUSTION = "MemoryExhaustion"
    INVALID_MESSAGES = "InvalidMessages"
    ATTEMPTED_REPLAY_ATTACKS = "AttemptedReplayAttacks"
    TAMPER_DETECTION_ACTIVATED = "TamperDetectionActivated"
    INVALID_FIRMWARE_SIGNATURE = "InvalidFirmwareSignature"
    INVALID_FIRMWARE_SIGNING_CERTIFICATE = "InvalidFirmwareSigningCertificate"
    INVALID_CSMS_CERTIFICATE = "InvalidCsmsCertificate"
    INVALID_CHARGING_STATION_CERTIFICATE = "InvalidChargingStationCertificate"
    INVALID_TLS_VERSION = "InvalidTLSVersion"
    INVALID_TLS_CIPHER_SUITE = "InvalidTLSCipherSuite"


# Whitepaper section 8, column "critical": pushed to the CSMS with guaranteed delivery
# (A04.FR.01/02). The others are written to the security log and sent once per burst.
CRITICAL = frozenset(
    {
        SecurityEventKind.FIRMWARE_UPDATED,
        SecurityEventKind.SETTING_SYSTEM_TIME,
        SecurityEventKind.STARTUP_OF_THE_DEVICE,
        SecurityEventKind.RESET_OR_REBOOT,
        SecurityEventKind.SECURITY_LOG_WAS_CLEARED,
        SecurityEventKind.MEMORY_EXHAUSTION,
        SecurityEventKind.TAMPER_DETECTION_ACTIVATED,
    }
)


@dataclass(frozen=True)
class SecurityEvent:
    """One security event: ``at`` is its UTC time (ISO 8601), ``tech_info`` free text for
    the operator (never a secret), ``repeated`` how many of the same kind were folded into
    this one since the previous record (a burst of invalid messages is one record)."""

    kind: SecurityEventKind
    at: str
    tech_info: str | None = None
    repeated: int = 0

    @property
    def critical(self) -> bool:
        return self.kind in CRITICAL
