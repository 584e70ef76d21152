"""The OCPP 2.0.1 CSMS requests as the neutral commands of controller/core/ownership.py (which
backend of a charger with several may send them)."""

from __future__ import annotations

from typing import Any

from controller.core.ownership import Command

COMMANDS: dict[str, Command] = {
    "CancelReservation": Command.RESERVATIONS,
    "CertificateSigned": Command.SECURITY,
    "ChangeAvailability": Command.AVAILABILITY,
    "ClearCache": Command.AUTHORIZATION,
    "ClearChargingProfile": Command.CHARGING_PROFILES,
    "ClearDisplayMessage": Command.DISPLAY,
    "ClearVariableMonitoring": Command.MONITORING,
    "CostUpdated": Command.DISPLAY,
    "CustomerInformation": Command.AUTHORIZATION,  # a report alone is a read: command_of
    "DataTransfer": Command.DATA_TRANSFER,
    "DeleteCertificate": Command.SECURITY,
    "GetBaseReport": Command.READ,
    "GetChargingProfiles": Command.READ,
    "GetCompositeSchedule": Command.READ,
    "GetDisplayMessages": Command.READ,
    "GetInstalledCertificateIds": Command.READ,
    "GetLocalListVersion": Command.READ,
    "GetLog": Command.READ,
    "GetMonitoringReport": Command.READ,
    "GetReport": Command.READ,
    "GetTransactionStatus": Command.READ,
    "GetVariables": Command.READ,
    "InstallCertificate": Command.SECURITY,
    "PublishFirmware": Command.FIRMWARE,
    "RequestStartTransaction": Command.TRANSACTIONS,
    "RequestStopTransaction": Command.TRANSACTIONS,
    "ReserveNow": Command.RESERVATIONS,
    "Reset": Command.RESET,
    "SendLocalList": Command.AUTHORIZATION,
    "SetChargingProfile": Command.CHARGING_PROFILES,
    "SetDisplayMessage": Command.DISPLAY,
    "SetMonitoringBase": Command.MONITORING,
    "SetMonitoringLevel": Command.MONITORING,
    "SetNetworkProfile": Command.SECURITY,
    "SetVariableMonitoring": Command.MONITORING,
    "SetVariables": Command.CONFIGURATION,
    "TriggerMessage": Command.READ,
    "UnlockConnector": Command.UNLOCK,
    "UnpublishFirmware": Command.FIRMWARE,
    "UpdateFirmware": Command.FIRMWARE,
}


def command_of(action: str, payload: dict[str, Any]) -> Command:
    """The command a request does: CustomerInformation that only reports is a read; an
    action not listed is treated as changing the configuration (one owner), never a read."""
    if action == "CustomerInformation" and not payload.get("clear"):
        return Command.READ
    return COMMANDS.get(action, Command.CONFIGURATION)
