"""OCPP 2.0.1 reservations over a real WebSocket against the dev CSMS (H01-H04): ReserveNow
for an EVSE, any EVSE or a connector type, CancelReservation, the Reserved status, the
reservationId of the transaction that uses it, ReservationStatusUpdate Expired / Removed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from controller.core.timestamps import iso_utc
from controller.dev.devcsms import DevCsms
from controller.ocpp201 import rpc as rpc201
from tests.conftest import CARD, STATION_ID, Harness
from tests.ocpp201.test_e2e_boot import accepted, start, statuses, wait_status
from tests.ocpp201.test_e2e_transactions import events

OTHER_CARD = "0499AABB"


async def call(csms: DevCsms, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    frame = await csms.call_raw(STATION_ID, action, payload)
    assert frame[0] == 3, frame
    rpc201.validate(3, action, frame[2])
    answer: dict[str, Any] = frame[2]
    return answer


def reserve(
    h: Harness, reservation_id: int, *, evse_id: int | None = 1, minutes: int = 10, **extra: Any
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": reservation_id,
        "expiryDateTime": iso_utc(h.clock.utc_now() + timedelta(minutes=minutes)),
        "idToken": {"idToken": CARD, "type": "ISO14443"},
        **extra,
    }
    if evse_id is not None:
        payload["evseId"] = evse_id
    return payload


def updates(h: Harness) -> list[dict[str, Any]]:
    return [f.payload for f in h.frames("ReservationStatusUpdate")]


async def ready(charger: Any, csms: DevCsms, connectors: int = 1) -> Harness:
    h = await start(charger, csms, connectors=connectors)
    await accepted(h)
    for evse_id in range(1, connectors + 1):
        await wait_status(h, evse_id, "Available")
    return h


async def test_reserve_an_evse_and_use_it(charger: Any, csms: DevCsms) -> None:
    """TC_H_01_CS (H01.FR.03, H01.FR.23, H03.FR.01, H03.FR.09/10, H01.FR.15): Accepted, the
    EVSE is Reserved; the reserved idToken starts a transaction there whose Started carries
    the reservationId; the reservation is used (no ReservationStatusUpdate)."""
    h = await ready(charger, csms)
    assert await call(csms, "ReserveNow", reserve(h, 7)) == {"status": "Accepted"}
    await wait_status(h, 1, "Reserved")
    h.plug()
    await h.advance(1)
    h.tap()
    await h.settle(lambda: len(events(h)) >= 1)
    assert events(h)[0]["reservationId"] == 7
    await wait_status(h, 1, "Occupied")
    assert updates(h) == []


async def test_other_token_cannot_use_a_reserved_evse(charger: Any, csms: DevCsms) -> None:
    """TC_H_02_CS (H03.FR.01): another idToken does not start a transaction on the EVSE."""
    h = await ready(charger, csms)
    assert await call(csms, "ReserveNow", reserve(h, 8)) == {"status": "Accepted"}
    await wait_status(h, 1, "Reserved")
    h.plug()
    await h.advance(1)
    h.tap(OTHER_CARD)
    await h.advance(5)
    assert events(h) == []
    assert not h.connector().hw.contactor.closed


async def test_occupied_unavailable_and_replaced(charger: Any, csms: DevCsms) -> None:
    """TC_H_03_CS / TC_H_04_CS (H01.FR.11): a reserved or an occupied EVSE is Occupied;
    TC_H_23_CS (H01.FR.02): the same id moves the reservation; TC_H_06_CS (H01.FR.14): an
    unavailable EVSE is Unavailable; an unknown EVSE is Rejected."""
    h = await ready(charger, csms, connectors=2)
    assert await call(csms, "ReserveNow", reserve(h, 1, evse_id=1)) == {"status": "Accepted"}
    assert await call(csms, "ReserveNow", reserve(h, 2, evse_id=1)) == {"status": "Occupied"}
    assert await call(csms, "ReserveNow", reserve(h, 1, evse_id=2)) == {"status": "Accepted"}
    await wait_status(h, 2, "Reserved")
    await wait_status(h, 1, "Available")
    h.plug(1)
    await h.advance(1)
    await wait_status(h, 1, "Occupied")
    assert await call(csms, "ReserveNow", reserve(h, 3, evse_id=1)) == {"status": "Occupied"}
    assert h.app.station is not None
    h.app.station.change_availability(1, False)
    h.unplug(1)
    await h.advance(1)
    assert await call(csms, "ReserveNow", reserve(h, 4, evse_id=1)) == {"status": "Unavailable"}
    assert await call(csms, "ReserveNow", reserve(h, 5, evse_id=9)) == {"status": "Rejected"}


async def test_expiry_sends_expired_and_available(charger: Any, csms: DevCsms) -> None:
    """TC_H_07_CS (H04.FR.01-03): at expiryDateTime ReservationStatusUpdate Expired and the
    EVSE is Available again."""
    h = await ready(charger, csms)
    assert await call(csms, "ReserveNow", reserve(h, 11, minutes=2)) == {"status": "Accepted"}
    await wait_status(h, 1, "Reserved")
    await h.advance(125)
    await h.settle(
        lambda: updates(h) == [{"reservationId": 11, "reservationUpdateStatus": "Expired"}]
    )
    await wait_status(h, 1, "Available")


async def test_any_evse_and_connector_type(charger: Any, csms: DevCsms) -> None:
    """TC_H_08_CS (H01.FR.04, H01.FR.18: NonEvseSpecific is true) and TC_H_15_CS
    (H01.FR.06): without evseId, and for the connector type every EVSE has, Accepted; a type
    no EVSE has is Rejected."""
    h = await ready(charger, csms, connectors=2)
    assert await call(csms, "ReserveNow", reserve(h, 21, evse_id=None)) == {"status": "Accepted"}
    typed = reserve(h, 22, evse_id=None, connectorType="sType2")
    assert await call(csms, "ReserveNow", typed) == {"status": "Accepted"}
    # Two reservations for any EVSE on two EVSEs: both are kept Reserved (H01.FR.20).
    await wait_status(h, 1, "Reserved")
    await wait_status(h, 2, "Reserved")
    other = reserve(h, 23, evse_id=None, connectorType="cCCS2")
    assert await call(csms, "ReserveNow", other) == {"status": "Rejected"}


async def test_cancel(charger: Any, csms: DevCsms) -> None:
    """TC_H_17_CS (H02.FR.02): cancelled, Available again, no ReservationStatusUpdate;
    TC_H_18_CS (H02.FR.01): an unknown id is Rejected."""
    h = await ready(charger, csms)
    assert await call(csms, "ReserveNow", reserve(h, 31)) == {"status": "Accepted"}
    await wait_status(h, 1, "Reserved")
    assert await call(csms, "CancelReservation", {"reservationId": 31}) == {"status": "Accepted"}
    await wait_status(h, 1, "Available")
    assert await call(csms, "CancelReservation", {"reservationId": 31}) == {"status": "Rejected"}
    await h.advance(2)
    assert updates(h) == []


async def test_removed_when_the_evse_becomes_unavailable(charger: Any, csms: DevCsms) -> None:
    """TC_H_21_CS (H01.FR.17): the reserved EVSE goes Unavailable: the reservation is
    cancelled with ReservationStatusUpdate Removed."""
    h = await ready(charger, csms)
    assert await call(csms, "ReserveNow", reserve(h, 41)) == {"status": "Accepted"}
    await wait_status(h, 1, "Reserved")
    assert h.app.station is not None
    h.app.station.change_availability(1, False)
    await h.settle(
        lambda: updates(h) == [{"reservationId": 41, "reservationUpdateStatus": "Removed"}]
    )
    await wait_status(h, 1, "Unavailable")
    assert "Reserved" in statuses(h, 1)


async def test_disabled_reservations_are_rejected(charger: Any, csms: DevCsms) -> None:
    """TC_H_22_CS (H01.FR.01): ReservationCtrlr.Enabled false: Rejected, nothing reserved."""
    h = await ready(charger, csms)
    answer = await call(
        csms,
        "SetVariables",
        {
            "setVariableData": [
                {
                    "component": {"name": "ReservationCtrlr"},
                    "variable": {"name": "Enabled"},
                    "attributeValue": "false",
                }
            ]
        },
    )
    assert answer["setVariableResult"][0]["attributeStatus"] == "Accepted"
    assert await call(csms, "ReserveNow", reserve(h, 51)) == {"status": "Rejected"}
    await h.advance(2)
    assert statuses(h, 1)[-1] == "Available"


async def test_group_reservation_admits_a_remote_start_of_the_group(
    charger: Any, csms: DevCsms
) -> None:
    """TC_H_19_CS / TC_H_24_CS (H03.FR.04) with F01.FR.22: a reservation with a groupIdToken
    admits a RequestStartTransaction for another idToken of that group; without the group
    the reserved EVSE refuses it."""
    h = await ready(charger, csms)
    group = {"idToken": "FLEET-GROUP", "type": "Central"}
    assert await call(csms, "ReserveNow", reserve(h, 61, groupIdToken=group)) == {
        "status": "Accepted"
    }
    await wait_status(h, 1, "Reserved")
    request = {
        "remoteStartId": 5,
        "evseId": 1,
        "idToken": {"idToken": "COLLEAGUE-7", "type": "Central"},
    }
    refused = await call(csms, "RequestStartTransaction", request)
    assert refused["status"] == "Rejected"
    accepted_ = await call(csms, "RequestStartTransaction", {**request, "groupIdToken": group})
    assert accepted_["status"] == "Accepted"
    h.plug()
    await h.settle(lambda: len(events(h)) >= 1)
    started = events(h)[0]
    assert started["reservationId"] == 61
    assert started["transactionInfo"]["remoteStartId"] == 5
