"""OCPP 2.0.1 reservations (H01-H04): ReserveNow, CancelReservation and
ReservationStatusUpdate, on the station's version-neutral reservations
(controller/runtime/reservations.py: who may use one, expiry, Reserved status)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from controller.core.reservations import Reservation, ReservationEnd, ReserveResult
from controller.core.timestamps import parse_iso
from controller.csms.rpc import CallError, CallTimeout, ConnectionLost
from controller.ocpp201 import rpc as rpc201
from controller.ocpp201.dm import ComponentKey

if TYPE_CHECKING:
    from controller.ocpp201.client import Ocpp201Client

LOG = logging.getLogger(__name__)

# ReservationStatusUpdate for the ends the CSMS did not cause itself (H01.FR.16/17, H04.FR.01).
_UPDATE_STATUS = {ReservationEnd.EXPIRED: "Expired", ReservationEnd.REMOVED: "Removed"}


def _flag(client: Ocpp201Client, variable: str, default: bool) -> bool:
    model = client.device_model
    if model is None:
        return default
    try:
        text = model.get("ReservationCtrlr", variable)
    except KeyError:
        return default
    return default if text is None else text == "true"


def _connector_types(client: Ocpp201Client) -> dict[int, str | None]:
    """Each EVSE's connector type (Connector.ConnectorType of its connector 1)."""
    out: dict[int, str | None] = {}
    model = client.device_model
    for evse_id in client.station.connector_ids():
        kind = None
        if model is not None:
            try:
                kind = model.get(
                    ComponentKey("Connector", evse_id=evse_id, connector_id=1), "ConnectorType"
                )
            except KeyError:
                kind = None
        out[evse_id] = kind
    return out


def _target_evse(client: Ocpp201Client, payload: dict[str, Any]) -> int | None:
    """The EVSE the reservation keeps (0: any EVSE); None when nothing can be reserved as
    asked (an unknown EVSE, a connector type no EVSE has, or one only some EVSEs have
    without an evseId: evsed keeps "any EVSE" reservations without a type filter)."""
    types = _connector_types(client)
    evse_id = payload.get("evseId")
    wanted = payload.get("connectorType")
    if evse_id is not None:
        if evse_id not in types:
            return None
        if wanted is not None and types[evse_id] not in (wanted, None):
            return None
        return int(evse_id)
    if wanted is None:
        return 0
    matching = [e for e, kind in types.items() if kind == wanted]
    if not matching:
        return None
    if len(matching) == len(types):
        return 0  # every EVSE has that type: any EVSE (H01.FR.06)
    if len(matching) == 1:
        return matching[0]  # the only EVSE of that type (H01.FR.09)
    LOG.warning("ReserveNow for connector type %s on some of several EVSEs: not supported", wanted)
    return None


async def reserve_now(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    """H01: Accepted / Occupied / Faulted / Unavailable / Rejected; the same id replaces the
    reservation (H01.FR.02); without evseId only if ReservationCtrlr.NonEvseSpecific
    (H01.FR.18/19); ReservationCtrlr.Enabled false: Rejected (H01.FR.01)."""
    if not _flag(client, "Enabled", True):
        return {"status": ReserveResult.REJECTED.value}
    expiry = parse_iso(payload["expiryDateTime"])
    if expiry is None:
        raise CallError(rpc201.FORMAT_VIOLATION, "expiryDateTime is not a date-time")
    evse_id = _target_evse(client, payload)
    if evse_id is None:
        return {"status": ReserveResult.REJECTED.value}
    group = payload.get("groupIdToken")
    reservation = Reservation(
        reservation_id=int(payload["id"]),
        connector_id=evse_id,
        id_tag=str(payload["idToken"]["idToken"]),
        expiry=expiry,
        parent_id_tag=str(group["idToken"]) if isinstance(group, dict) else None,
    )
    result = client.station.reserve(
        reservation, any_connector_supported=_flag(client, "NonEvseSpecific", False)
    )
    return {"status": result.value}


async def cancel_reservation(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    """H02.FR.01/02: Accepted and cancelled, or Rejected for an unknown id."""
    return {"status": client.station.cancel_reservation(int(payload["reservationId"])).value}


def follow(client: Ocpp201Client) -> None:
    """ReservationStatusUpdate when a reservation expires (H04.FR.01) or its EVSE faults or
    becomes unavailable (H01.FR.16/17), sent while connected (best effort: a reservation
    that ended offline is not reported later; its EVSE status is)."""

    def ended(reservation: Reservation, end: ReservationEnd) -> None:
        status = _UPDATE_STATUS.get(end)
        if status is None or client.connection_state() != "accepted":
            return
        payload = {"reservationId": reservation.reservation_id, "reservationUpdateStatus": status}
        client.spawn(_send(client, payload), name="reservation-status")

    client.station.on_reservation_ended(ended)


async def _send(client: Ocpp201Client, payload: dict[str, Any]) -> None:
    try:
        await client.call("ReservationStatusUpdate", payload)
    except (CallError, CallTimeout, ConnectionLost) as exc:
        LOG.warning("ReservationStatusUpdate %s not delivered: %s", payload, exc)


ROUTES = {"ReserveNow": reserve_now, "CancelReservation": cancel_reservation}
