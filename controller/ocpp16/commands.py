"""The OCPP 1.6 CSMS requests as the neutral commands of controller/core/ownership.py (which
backend of a charger with several may send them)."""

from __future__ import annotations

from typing import Any

from controller.core.ownership import Command

COMMANDS: dict[str, Command] = {
    "CancelReservation": Command.RESERVATIONS,
    "CertificateSigned": Command.SECURITY,
    "ChangeAvailability": Command.AVAILABILITY,
    "ChangeConfiguration": Command.CONFIGURATION,
    "ClearCache": Command.AUTHORIZATION,
    "ClearChargingProfile": Command.CHARGING_PROFILES,
    "DataTransfer": Command.DATA_TRANSFER,
    "DeleteCertificate": Command.SECURITY,
    "ExtendedTriggerMessage": Command.READ,
    "GetCompositeSchedule": Command.READ,
    "GetConfiguration": Command.READ,
    "GetDiagnostics": Command.READ,
    "GetInstalledCertificateIds": Command.READ,
    "GetLocalListVersion": Command.READ,
    "GetLog": Command.READ,
    "InstallCertificate": Command.SECURITY,
    "RemoteStartTransaction": Command.TRANSACTIONS,
    "RemoteStopTransaction": Command.TRANSACTIONS,
    "ReserveNow": Command.RESERVATIONS,
    "Reset": Command.RESET,
    "SendLocalList": Command.AUTHORIZATION,
    "SetChargingProfile": Command.CHARGING_PROFILES,
    "SignedUpdateFirmware": Command.FIRMWARE,
    "TriggerMessage": Command.READ,
    "UnlockConnector": Command.UNLOCK,
    "UpdateFirmware": Command.FIRMWARE,
}


def command_of(action: str, payload: dict[str, Any]) -> Command:
    """The command a request does; an action not listed is treated as changing the
    configuration (owned by one backend), never as a read."""
    return COMMANDS.get(action, Command.CONFIGURATION)
