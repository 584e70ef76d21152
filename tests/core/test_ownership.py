"""Issue 15 item 1: roles and the single owner of each command that changes the charger,
pure (controller/core/ownership.py), and the 1.6 / 2.0.1 action maps onto it."""

from __future__ import annotations

import pytest

from controller.core.ownership import (
    SHARED,
    BackendRights,
    Command,
    OwnershipError,
    Role,
    ownership,
    parse_commands,
)
from controller.ocpp16 import commands as commands16
from controller.ocpp16 import rpc as rpc16
from controller.ocpp201 import commands as commands201
from controller.ocpp201 import rpc as rpc201

BILLING = BackendRights("billing", Role.PRIMARY)
EVCC = BackendRights("evcc", Role.ENERGY_MANAGER)
RETAILER = BackendRights("retailer", Role.MIRROR)


def test_the_primary_owns_every_shared_command_by_default() -> None:
    """Issue 15 item 1: by default the primary owns every command; a mirror reads only; an
    energy manager reads and sets its own charging profiles."""
    rights = ownership([BILLING, EVCC, RETAILER])
    assert rights.primary == "billing"
    assert rights.owned_by("billing") == SHARED
    for command in SHARED:
        assert rights.permitted("billing", command)
        assert not rights.permitted("evcc", command)
        assert not rights.permitted("retailer", command)
    assert rights.permitted("evcc", Command.CHARGING_PROFILES)
    assert rights.permitted("billing", Command.CHARGING_PROFILES)
    assert not rights.permitted("retailer", Command.CHARGING_PROFILES)
    assert all(rights.permitted(b, Command.READ) for b in ("billing", "evcc", "retailer"))
    assert not rights.permitted("stranger", Command.READ)


def test_an_allow_list_moves_a_command_away_from_the_primary() -> None:
    """An explicit allow list gives a shared command to another backend: it is the owner,
    the primary no longer may."""
    fleet = BackendRights("fleet", Role.MIRROR, frozenset({Command.FIRMWARE, Command.RESET}))
    rights = ownership([BILLING, fleet])
    assert rights.permitted("fleet", Command.FIRMWARE)
    assert not rights.permitted("billing", Command.FIRMWARE)
    assert rights.owned_by("fleet") == {Command.FIRMWARE, Command.RESET}


def test_a_command_given_twice_is_an_error_naming_both() -> None:
    """Issue 15 item 1: a config that gives a shared command to two backends is an error
    naming both."""
    a = BackendRights("a", Role.MIRROR, frozenset({Command.UNLOCK}))
    b = BackendRights("b", Role.ENERGY_MANAGER, frozenset({Command.UNLOCK}))
    with pytest.raises(OwnershipError) as info:
        ownership([BILLING, a, b])
    assert "'a'" in str(info.value) and "'b'" in str(info.value) and "unlock" in str(info.value)


@pytest.mark.parametrize(
    "backends",
    [
        [EVCC, RETAILER],
        [BILLING, BackendRights("other", Role.PRIMARY)],
        [BILLING, BackendRights("billing", Role.MIRROR)],
    ],
)
def test_exactly_one_primary_and_unique_names(backends: list[BackendRights]) -> None:
    with pytest.raises(OwnershipError):
        ownership(backends)


def test_parse_commands_names_the_unknown_word() -> None:
    assert parse_commands(["reset", "firmware"]) == {Command.RESET, Command.FIRMWARE}
    with pytest.raises(ValueError, match="'teleport'"):
        parse_commands(["teleport"])


STATION_SENDS_16 = {
    "Authorize",
    "BootNotification",
    "DiagnosticsStatusNotification",
    "FirmwareStatusNotification",
    "Heartbeat",
    "LogStatusNotification",
    "MeterValues",
    "SecurityEventNotification",
    "SignCertificate",
    "SignedFirmwareStatusNotification",
    "StartTransaction",
    "StatusNotification",
    "StopTransaction",
}
STATION_SENDS_201 = {
    "Authorize",
    "BootNotification",
    "ClearedChargingLimit",
    "FirmwareStatusNotification",
    "Get15118EVCertificate",
    "GetCertificateStatus",
    "Heartbeat",
    "LogStatusNotification",
    "MeterValues",
    "NotifyChargingLimit",
    "NotifyCustomerInformation",
    "NotifyDisplayMessages",
    "NotifyEVChargingNeeds",
    "NotifyEVChargingSchedule",
    "NotifyEvent",
    "NotifyMonitoringReport",
    "NotifyReport",
    "PublishFirmwareStatusNotification",
    "ReportChargingProfiles",
    "ReservationStatusUpdate",
    "SecurityEventNotification",
    "SignCertificate",
    "StatusNotification",
    "TransactionEvent",
}


@pytest.mark.parametrize(
    ("actions", "station_sends", "mapped"),
    [
        (rpc16.SCHEMAS.actions, STATION_SENDS_16, commands16.COMMANDS),
        (rpc201.SCHEMAS.actions, STATION_SENDS_201, commands201.COMMANDS),
    ],
)
def test_every_csms_request_is_mapped(
    actions: frozenset[str], station_sends: set[str], mapped: dict[str, Command]
) -> None:
    """Every request a CSMS can send (both versions) has its command: nothing falls through
    to the default by omission."""
    assert station_sends <= actions
    assert set(mapped) == actions - station_sends


def test_customer_information_report_is_a_read() -> None:
    assert commands201.command_of("CustomerInformation", {"report": True, "clear": False}) is (
        Command.READ
    )
    assert commands201.command_of("CustomerInformation", {"clear": True}) is (Command.AUTHORIZATION)
    # An action no map names is never taken for a read.
    assert commands16.command_of("Teleport", {}) is Command.CONFIGURATION
