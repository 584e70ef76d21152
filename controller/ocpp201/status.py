"""OCPP 2.0.1 words for the core's connector phases: ConnectorStatusEnumType (G01)."""

from __future__ import annotations

from typing import Final

from controller.core.connector import Phase

# 2.0.1 has five connector statuses; every phase of a session (from the plug-in to the
# unplug) is Occupied (G01.FR.03/04). A condition on a working connector (a warning such
# as a weak signal) changes nothing: only the FAULTED phase is Faulted.
CONNECTOR_STATUS: Final[dict[Phase, str]] = {
    Phase.AVAILABLE: "Available",
    Phase.PREPARING: "Occupied",
    Phase.CHARGING: "Occupied",
    Phase.SUSPENDED_EV: "Occupied",
    Phase.SUSPENDED_EVSE: "Occupied",
    Phase.FINISHING: "Occupied",
    Phase.RESERVED: "Reserved",
    Phase.UNAVAILABLE: "Unavailable",
    Phase.FAULTED: "Faulted",
}

# evsed's connectors each have their own outlet: connector N is EVSE N with connector 1.
CONNECTOR_ON_EVSE: Final = 1


def connector_status(phase: Phase, plugged: bool) -> str:
    """The connectorStatus of a connector. Preparing without a cable (a card presented
    before the plug-in) is still Available: Occupied means an EV is connected (G01.FR.03)."""
    if phase is Phase.PREPARING and not plugged:
        return "Available"
    return CONNECTOR_STATUS[phase]


def evse_of(connector_id: int) -> tuple[int, int]:
    """(evseId, connectorId) of one of evsed's connectors."""
    return connector_id, CONNECTOR_ON_EVSE
