"""OCPP 2.0.1 ChangeAvailability (G03, G04): the station's, each EVSE's and each connector's
own operational state, persisted, and what the connectors make of them."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from controller.core.control import AvailabilityResult, StationControl
from controller.ocpp201 import status as status201
from controller.storage.store import Store

if TYPE_CHECKING:
    from controller.ocpp201.client import Ocpp201Client

LOG = logging.getLogger(__name__)

OPERATIVE = "Operative"
INOPERATIVE = "Inoperative"
# Store settings of the EVSE and connector tiers (the station's own state is the runtime's
# "availability.0"). Absent means Operative: a charger that never heard of 2.0.1 is.
_EVSE_KEY = "ocpp201.availability.evse.{}"
_CONNECTOR_KEY = "ocpp201.availability.connector.{}"
# Written before a reset takes the connectors out of service (reset.py), removed once the
# next start put them back as the three tiers say (also after a crash while waiting).
HELD_KEY = "ocpp201.availability.held"


class Availability:
    """The three tiers of G03/G04 (Note 1: the station, EVSEs and connectors have separate
    states): a connector is operative only while its own state, its EVSE's and the
    station's all are, and no reset holds it. The runtime keeps the result per connector
    (persisted, applied at once or, during a transaction, at its end: Scheduled)."""

    def __init__(self, station: StationControl, store: Store) -> None:
        self.station = station
        self.store = store
        # Connectors a pending or running reset keeps out of service (not persisted as a
        # tier: after the restart they are as the tiers say, B11.FR.02, B12.FR.06).
        self.held: set[int] = set()

    # ------------------------------------------------------------------ tiers

    def evse_operative(self, evse_id: int) -> bool:
        return self.store.get_setting(_EVSE_KEY.format(evse_id)) != INOPERATIVE

    def connector_operative(self, evse_id: int) -> bool:
        return self.store.get_setting(_CONNECTOR_KEY.format(evse_id)) != INOPERATIVE

    def effective(self, connector_id: int) -> bool:
        """Whether the connector may charge as the CSMS set the tiers (G03.FR.06/07,
        G04.FR.07/08) and no reset holds it."""
        evse_id, _ = status201.evse_of(connector_id)
        return (
            self.station.station_operative
            and self.evse_operative(evse_id)
            and self.connector_operative(evse_id)
            and connector_id not in self.held
        )

    # ------------------------------------------------------------------ changes

    def change(self, evse_id: int | None, connector_id: int | None, operative: bool) -> str:
        """ChangeAvailabilityResponse.status for the station (no evse), an EVSE or one
        connector of it: Rejected for an EVSE or connector the station does not have;
        Accepted when the tier already is so (G03.FR.03, G04.FR.04) or changed at once;
        Scheduled when a transaction runs on a connector that is to go out of service
        (G03.FR.05, G04.FR.06): it does when the transaction ends."""
        cids = self.station.connector_ids()
        if evse_id is not None and evse_id not in cids:
            return "Rejected"
        if connector_id is not None and (
            evse_id is None or connector_id != status201.CONNECTOR_ON_EVSE
        ):
            return "Rejected"
        value = OPERATIVE if operative else INOPERATIVE
        if evse_id is None:  # G04.FR.01: the whole station
            changed = self.station.station_operative != operative
            if changed:
                self.station.change_availability(0, operative, cascade=False)
            targets = cids
        else:
            key = (_EVSE_KEY if connector_id is None else _CONNECTOR_KEY).format(evse_id)
            changed = (self.store.get_setting(key) or OPERATIVE) != value
            if changed:
                self.store.set_setting(key, value)  # G03.FR.08, G04.FR.09: persistent
            targets = [evse_id]
        LOG.info(
            "ChangeAvailability %s of %s%s",
            value,
            "the station" if evse_id is None else f"EVSE {evse_id}",
            "" if connector_id is None else f" connector {connector_id}",
        )
        scheduled = False
        for cid in targets:
            if self.apply(cid) is AvailabilityResult.SCHEDULED:
                scheduled = True
        return "Scheduled" if changed and scheduled else "Accepted"

    def apply(self, connector_id: int) -> AvailabilityResult:
        """Hand the connector's effective state to the runtime, which persists it (the
        state a restart begins with) and reports the status that follows (G03.FR.04)."""
        operative = self.effective(connector_id)
        result = self.station.change_availability(connector_id, operative)
        if result is AvailabilityResult.SCHEDULED:
            LOG.info("connector %d: out of service when its transaction ends", connector_id)
        return result

    # ------------------------------------------------------------------ resets

    def hold(self, connector_ids: list[int]) -> None:
        """A reset keeps these connectors out of service: idle ones at once, those with a
        transaction when it ends (B12 3a: no new transaction while the reset waits)."""
        self.store.set_setting(HELD_KEY, ",".join(str(c) for c in sorted(connector_ids)))
        self.held.update(connector_ids)
        for cid in connector_ids:
            self.apply(cid)

    def release(self, connector_ids: list[int]) -> None:
        self.held.difference_update(connector_ids)
        if not self.held:
            self.store.delete_setting(HELD_KEY)
        for cid in connector_ids:
            self.apply(cid)

    def restore(self) -> None:
        """At start: connectors a reset held before the restart (or a crash while it
        waited) take the state the tiers say again (B11.FR.02, B12.FR.06)."""
        held = self.store.get_setting(HELD_KEY)
        if held is None:
            return
        cids = self.station.connector_ids()
        for cid in cids:
            if self.station.view(cid).tx_key is None:
                self.apply(cid)
        self.store.delete_setting(HELD_KEY)
        LOG.info("availability after the reset restored (connectors %s)", held)


async def change_availability(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    """G03.FR.01/02, G04.FR.02/03: the answer, then the StatusNotifications of the
    connectors it concerns (G03.FR.04, G04.FR.05; also when nothing changed, so the CSMS
    sees where each stands)."""
    operative = payload["operationalStatus"] == OPERATIVE
    evse = payload.get("evse")
    evse_id: int | None = None
    connector_id: int | None = None
    if isinstance(evse, dict):
        evse_id = int(evse["id"])
        raw_connector = evse.get("connectorId")
        connector_id = None if raw_connector is None else int(raw_connector)
        if evse_id == 0 and connector_id is None:
            evse_id = None  # EVSE 0 is the station, as elsewhere in 2.0.1 (TriggerMessage)
    status = client.availability.change(evse_id, connector_id, operative)
    if status != "Rejected":
        cids = client.station.connector_ids() if evse_id is None else [evse_id]
        client.report_statuses(cids)
        return {"status": status}
    known_evse = evse_id in client.station.connector_ids()
    reason = "UnknownConnectorId" if known_evse else "UnknownEvse"
    return {"status": status, "statusInfo": {"reasonCode": reason}}


ROUTES = {"ChangeAvailability": change_availability}
