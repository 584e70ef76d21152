"""OCPP 1.6 words for the core's connector phases, fault kinds and stop causes."""

from __future__ import annotations

from typing import Final

from controller.core.connector import Phase, StopCause
from hal.base import FaultKind

NO_ERROR: Final = "NoError"

# 7.7 ChargePointStatus; the core's phases were shaped by it, so the map is one to one.
STATUS: Final[dict[Phase, str]] = {
    Phase.AVAILABLE: "Available",
    Phase.PREPARING: "Preparing",
    Phase.CHARGING: "Charging",
    Phase.SUSPENDED_EV: "SuspendedEV",
    Phase.SUSPENDED_EVSE: "SuspendedEVSE",
    Phase.FINISHING: "Finishing",
    Phase.RESERVED: "Reserved",
    Phase.UNAVAILABLE: "Unavailable",
    Phase.FAULTED: "Faulted",
}

# 7.6 ChargePointErrorCode (LocalListConflict and the storage OtherError of connector 0
# come from the adapter itself, not from a connector's hardware).
ERROR_CODE: Final[dict[FaultKind, str]] = {
    FaultKind.CONNECTOR_LOCK: "ConnectorLockFailure",
    FaultKind.EV_COMMUNICATION: "EVCommunicationError",
    FaultKind.GROUND: "GroundFailure",
    FaultKind.HIGH_TEMPERATURE: "HighTemperature",
    FaultKind.INTERNAL: "InternalError",
    FaultKind.OTHER: "OtherError",
    FaultKind.OVER_CURRENT: "OverCurrentFailure",
    FaultKind.OVER_VOLTAGE: "OverVoltage",
    FaultKind.METER: "PowerMeterFailure",
    FaultKind.POWER_SWITCH: "PowerSwitchFailure",
    FaultKind.READER: "ReaderFailure",
    FaultKind.TAMPER: "OtherError",  # 1.6 has no code for it; the security event names it
    FaultKind.UNDER_VOLTAGE: "UnderVoltage",
    FaultKind.WEAK_SIGNAL: "WeakSignal",
}

# 7.40 Reason of StopTransaction.
STOP_REASON: Final[dict[StopCause, str]] = {
    StopCause.EMERGENCY_STOP: "EmergencyStop",
    StopCause.EV_DISCONNECTED: "EVDisconnected",
    StopCause.HARD_RESET: "HardReset",
    StopCause.LOCAL: "Local",
    StopCause.OTHER: "Other",
    StopCause.POWER_LOSS: "PowerLoss",
    StopCause.REBOOT: "Reboot",
    StopCause.REMOTE: "Remote",
    StopCause.SOFT_RESET: "SoftReset",
    StopCause.UNLOCK_COMMAND: "UnlockCommand",
    StopCause.DE_AUTHORIZED: "DeAuthorized",
    StopCause.MASTER_PASS: "Other",  # 1.6 has no master pass (2.0.1 C16)
}


def status_of(phase: Phase, condition: FaultKind | None) -> tuple[str, str]:
    """StatusNotification status and errorCode of a connector (4.9: EVCommunicationError
    is only a warning with Preparing, SuspendedEV, SuspendedEVSE and Finishing)."""
    return STATUS[phase], NO_ERROR if condition is None else ERROR_CODE[condition]


def stop_reason(cause: StopCause) -> str:
    return STOP_REASON[cause]
