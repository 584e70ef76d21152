"""End-to-end: the Reservation profile (OCPP 1.6 5.13 ReserveNow, 5.1 CancelReservation, 7.40,
9.3.1 ReserveConnectorZeroSupported, 4.8 reservationId in StartTransaction) over a real
WebSocket with the dev CSMS; the charger runs in-process on a manual clock.

OCTT ids are named where a test follows one of the 1.6 reservation test cases as we read them
(TC_046..TC_053: reserve and use, expire, Faulted/Occupied/Unavailable/Rejected answers,
connector 0, cancel, parent idTag).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ocpp.v16.datatypes import IdTagInfo

from controller.app import App
from controller.config import parse
from controller.core.timestamps import iso_utc
from controller.dev.devcsms import DevCsms
from controller.runtime.clock import ManualClock
from tests.conftest import CARD, STATION_ID, Harness, charger_config
from tests.ocpp16.test_e2e_csms_requests import (
    OTHER_CARD,
    req,
    start_session,
    statuses,
    wait_status,
)

THIRD_CARD = "0C0C0C0C"
GROUP = "FLEET-7"


def expiry(h: Any, seconds: float = 3600) -> str:
    return iso_utc(h.clock.utc_now() + timedelta(seconds=seconds))


async def reserve(
    h: Any, csms: DevCsms, connector_id: int, rid: int, tag: str = CARD, **extra: Any
) -> str:
    payload = {
        "connectorId": connector_id,
        "expiryDate": extra.pop("expiry", None) or expiry(h),
        "idTag": tag,
        "reservationId": rid,
        **extra,
    }
    return str((await req(csms, "ReserveNow", payload))["status"])


def reservation_rows(h: Any) -> dict[str, str]:
    return dict(h.app.store.settings_with_prefix("reservation."))


def shown(h: Any, connector_id: int = 1) -> Any:
    """The connector's reservation as GET /api/status shows it."""
    return h.station.snapshot()["connectors"][connector_id - 1]["reservation"]


async def plug_and_wait_start(h: Any, csms: DevCsms, connector_id: int = 1) -> Any:
    h.plug(connector_id)
    start = await csms.wait_for(
        lambda f: f.action == "StartTransaction" and f.payload["connectorId"] == connector_id,
        timeout_s=5,
    )
    await h.settle(lambda: h.connector(connector_id).hw.contactor.closed)
    return start


# ----------------------------------------------------------------------------- reserve and use


async def test_reserved_connector_used_by_the_reserved_card(csms: DevCsms, charger: Any) -> None:
    """5.13: Accepted, StatusNotification Reserved; another card is refused without an
    Authorize.req; the reserved card authorizes (Preparing), the StartTransaction carries the
    reservationId (4.8) and the reservation ends with it (5.13 (1)).

    OCTT: TC_046_1_CS (1.6)
    """
    h = await charger(csms)
    n = len(statuses(h, 1))
    assert await reserve(h, csms, 1, 41) == "Accepted"
    await wait_status(h, 1, "Reserved", after=n)
    assert shown(h)["reservation_id"] == 41 and shown(h)["id_tag"] == CARD
    assert set(reservation_rows(h)) == {"reservation.41"}

    h.tap(OTHER_CARD)
    await h.advance(2)
    assert h.frames("Authorize") == []
    assert statuses(h, 1)[-1] == "Reserved"

    h.tap(CARD)
    await wait_status(h, 1, "Preparing", after=n)
    start = await plug_and_wait_start(h, csms)
    assert start.payload["idTag"] == CARD
    assert start.payload["reservationId"] == 41
    assert shown(h) is None
    assert reservation_rows(h) == {}
    # Used up: it cannot be cancelled any more.
    assert await req(csms, "CancelReservation", {"reservationId": 41}) == {"status": "Rejected"}


async def test_plugging_in_keeps_the_connector_reserved(csms: DevCsms, charger: Any) -> None:
    """4.9 (G2: only the reservation identity leaves Reserved; 2.0.1 errata G01.FR.09): a car
    plugged into a reserved connector does not start anything for a stranger."""
    h = await charger(csms)
    assert await reserve(h, csms, 1, 5) == "Accepted"
    await wait_status(h, 1, "Reserved")
    h.plug()
    await h.advance(2)
    h.tap(OTHER_CARD)
    await h.advance(2)
    assert statuses(h, 1)[-1] == "Reserved"
    assert h.frames("StartTransaction") == [] and h.frames("Authorize") == []
    h.tap(CARD)
    start = await csms.wait_for(lambda f: f.action == "StartTransaction", timeout_s=5)
    assert start.payload["reservationId"] == 5 and start.payload["idTag"] == CARD


async def test_remote_start_on_reserved_connector(csms: DevCsms, charger: Any) -> None:
    """5.11 + 5.13: RemoteStartTransaction for another idTag is Rejected on the reserved
    connector; for the reserved idTag it is Accepted and starts with the reservationId.

    OCTT: TC_046_2_CS (1.6)
    """
    h = await charger(csms)
    assert await reserve(h, csms, 1, 7) == "Accepted"
    await wait_status(h, 1, "Reserved")
    assert await req(csms, "RemoteStartTransaction", {"connectorId": 1, "idTag": OTHER_CARD}) == {
        "status": "Rejected"
    }
    assert await req(csms, "RemoteStartTransaction", {"idTag": OTHER_CARD}) == {
        "status": "Rejected"
    }
    assert await req(csms, "RemoteStartTransaction", {"connectorId": 1, "idTag": CARD}) == {
        "status": "Accepted"
    }
    start = await plug_and_wait_start(h, csms)
    assert (start.payload["idTag"], start.payload["reservationId"]) == (CARD, 7)


# ----------------------------------------------------------------------------- expiry, cancel


async def test_reservation_expires_on_the_clock(csms: DevCsms, charger: Any) -> None:
    """5.13 (2): at expiryDate the reservation ends, StatusNotification Available; then
    another card charges, without a reservationId.

    OCTT: TC_047_CS (1.6)
    """
    h = await charger(csms)
    assert await reserve(h, csms, 1, 8, expiry=expiry(h, 60)) == "Accepted"
    await wait_status(h, 1, "Reserved")
    n = len(statuses(h, 1))
    await h.advance(50)
    assert statuses(h, 1)[n:] == []  # not yet
    await h.advance(12)
    await wait_status(h, 1, "Available", after=n)
    assert shown(h) is None and reservation_rows(h) == {}
    await start_session(h, csms, card=OTHER_CARD)
    start = h.frames("StartTransaction")[-1].payload
    assert start["idTag"] == OTHER_CARD and "reservationId" not in start


async def test_cancel_reservation(csms: DevCsms, charger: Any) -> None:
    """5.1: a known reservationId is Accepted and the connector becomes Available; the same
    id again (and any unknown one) is Rejected.

    OCTT: TC_051_CS, TC_052_CS (1.6)
    """
    h = await charger(csms)
    assert await reserve(h, csms, 1, 9) == "Accepted"
    await wait_status(h, 1, "Reserved")
    assert await req(csms, "CancelReservation", {"reservationId": 10}) == {"status": "Rejected"}
    assert statuses(h, 1)[-1] == "Reserved"
    n = len(statuses(h, 1))
    assert await req(csms, "CancelReservation", {"reservationId": 9}) == {"status": "Accepted"}
    await wait_status(h, 1, "Available", after=n)
    assert reservation_rows(h) == {}
    assert await req(csms, "CancelReservation", {"reservationId": 9}) == {"status": "Rejected"}


async def test_same_reservation_id_replaces_the_reservation(csms: DevCsms, charger: Any) -> None:
    """5.13: a ReserveNow with the id of a held reservation replaces it (here: another
    connector and idTag); the first connector is Available again."""
    h = await charger(csms, connectors=2)
    assert await reserve(h, csms, 1, 11) == "Accepted"
    await wait_status(h, 1, "Reserved")
    n1, n2 = len(statuses(h, 1)), len(statuses(h, 2))
    assert await reserve(h, csms, 2, 11, tag=OTHER_CARD) == "Accepted"
    await wait_status(h, 1, "Available", after=n1)
    await wait_status(h, 2, "Reserved", after=n2)
    assert shown(h, 2)["id_tag"] == OTHER_CARD
    assert list(reservation_rows(h)) == ["reservation.11"]
    # Another id for the reserved connector is Occupied (5.13: "reserved for ... another").
    assert await reserve(h, csms, 2, 12) == "Occupied"


# ----------------------------------------------------------------------------- refusals


async def test_reserve_occupied_connector(csms: DevCsms, charger: Any) -> None:
    """5.13 / 7.40 Occupied: a connector with a cable plugged in (Preparing) or a running
    transaction cannot be reserved.

    OCTT: TC_048_2_CS (1.6)
    """
    h = await charger(csms)
    h.plug()
    await wait_status(h, 1, "Preparing")
    assert await reserve(h, csms, 1, 1) == "Occupied"
    h.unplug()
    await wait_status(h, 1, "Available")
    await start_session(h, csms)
    assert await reserve(h, csms, 1, 1) == "Occupied"
    assert reservation_rows(h) == {}


async def test_reserve_faulted_connector(csms: DevCsms, charger: Any) -> None:
    """7.40 Faulted.

    OCTT: TC_048_1_CS (1.6)
    """
    h = await charger(csms)
    h.rig().fault.inject("GroundFailure")
    await wait_status(h, 1, "Faulted")
    assert await reserve(h, csms, 1, 1) == "Faulted"


async def test_reserve_unavailable_connector(csms: DevCsms, charger: Any) -> None:
    """7.40 Unavailable (ChangeAvailability Inoperative first).

    OCTT: TC_048_3_CS (1.6)
    """
    h = await charger(csms)
    await req(csms, "ChangeAvailability", {"connectorId": 1, "type": "Inoperative"})
    await wait_status(h, 1, "Unavailable")
    assert await reserve(h, csms, 1, 1) == "Unavailable"
    assert await reserve(h, csms, 0, 2) == "Unavailable"  # every connector is


async def test_reserve_with_expiry_in_the_past_rejected(csms: DevCsms, charger: Any) -> None:
    """An expiryDate already reached makes no reservation (Rejected: nothing to reserve)."""
    h = await charger(csms)
    assert await reserve(h, csms, 1, 1, expiry=expiry(h, -1)) == "Rejected"
    await h.advance(2)
    assert statuses(h, 1)[-1] == "Available" and reservation_rows(h) == {}


async def test_fault_on_reserved_connector_ends_the_reservation(
    csms: DevCsms, charger: Any
) -> None:
    """5.13 (3): a reserved connector that becomes Faulted loses its reservation; cleared,
    it is Available (not Reserved), and the reservation is unknown."""
    h = await charger(csms)
    assert await reserve(h, csms, 1, 3) == "Accepted"
    await wait_status(h, 1, "Reserved")
    n = len(statuses(h, 1))
    h.rig().fault.inject("GroundFailure")
    await wait_status(h, 1, "Faulted", after=n)
    h.rig().fault.clear()
    await wait_status(h, 1, "Available", after=n)
    assert reservation_rows(h) == {}
    assert await req(csms, "CancelReservation", {"reservationId": 3}) == {"status": "Rejected"}


async def test_change_availability_on_reserved_connector(csms: DevCsms, charger: Any) -> None:
    """5.2 on a Reserved connector: Inoperative is Accepted at once (no transaction runs, so
    not Scheduled), the connector is Unavailable and the reservation ends (5.13 (3));
    Operative brings it back Available, not Reserved."""
    h = await charger(csms)
    assert await reserve(h, csms, 1, 4) == "Accepted"
    await wait_status(h, 1, "Reserved")
    n = len(statuses(h, 1))
    assert await req(csms, "ChangeAvailability", {"connectorId": 1, "type": "Inoperative"}) == {
        "status": "Accepted"
    }
    await wait_status(h, 1, "Unavailable", after=n)
    assert reservation_rows(h) == {}
    assert await req(csms, "ChangeAvailability", {"connectorId": 1, "type": "Operative"}) == {
        "status": "Accepted"
    }
    await wait_status(h, 1, "Available", after=n)


# ----------------------------------------------------------------------------- connector 0


async def test_reserve_connector_zero(csms: DevCsms, charger: Any) -> None:
    """5.13 connector 0: no connector is reserved while enough are free; once only one is
    left it is kept for the reserved idTag (Reserved; a specific reservation of it is
    Occupied; another card is refused); the reserved card uses it with the reservationId.

    OCTT: TC_049_CS (1.6)
    """
    h = await charger(csms, connectors=2)
    assert await reserve(h, csms, 0, 20) == "Accepted"
    await h.advance(2)
    assert statuses(h, 1)[-1] == statuses(h, 2)[-1] == "Available"
    assert set(reservation_rows(h)) == {"reservation.20"}
    # A second reservation for any connector: two free connectors, one already promised.
    assert await reserve(h, csms, 0, 21, tag=THIRD_CARD) == "Accepted"
    assert await reserve(h, csms, 0, 22, tag=THIRD_CARD) == "Occupied"
    assert await req(csms, "CancelReservation", {"reservationId": 21}) == {"status": "Accepted"}

    # Someone else charges on connector 1: connector 2 is the last one, kept for CARD.
    await start_session(h, csms, 1, card=OTHER_CARD)
    await wait_status(h, 2, "Reserved")
    assert shown(h, 2)["reservation_id"] == 20 and shown(h, 2)["any_connector"] is True
    assert await reserve(h, csms, 2, 23, tag=THIRD_CARD) == "Occupied"
    assert await reserve(h, csms, 0, 24, tag=THIRD_CARD) == "Occupied"
    h.tap(THIRD_CARD)
    await h.advance(2)
    assert statuses(h, 2)[-1] == "Reserved"

    h.tap(CARD)
    start = await plug_and_wait_start(h, csms, 2)
    assert (start.payload["connectorId"], start.payload["reservationId"]) == (2, 20)
    assert reservation_rows(h) == {}


async def test_connector_zero_reservation_used_on_a_free_connector(
    csms: DevCsms, charger: Any
) -> None:
    """3.11: a reservation for any connector is released when the reserved idTag is used on
    any connector: the StartTransaction carries its reservationId there too."""
    h = await charger(csms, connectors=2)
    assert await reserve(h, csms, 0, 30) == "Accepted"
    await start_session(h, csms, 1, card=CARD)
    start = h.frames("StartTransaction")[-1].payload
    assert (start["connectorId"], start["reservationId"]) == (1, 30)
    assert reservation_rows(h) == {}
    await h.advance(2)
    assert statuses(h, 2)[-1] == "Available"


async def test_reserve_connector_zero_supported_key(csms: DevCsms, charger: Any) -> None:
    """9.3.1: ReserveConnectorZeroSupported is true and read-only (the CSMS cannot change it,
    nor can the TOML [ocpp] table); SupportedFeatureProfiles lists Reservation (9.1.31). The
    Rejected answer for connector 0 when it is false is tested on the runtime.
    """
    await charger(csms)
    result = await req(
        csms, "ChangeConfiguration", {"key": "ReserveConnectorZeroSupported", "value": "false"}
    )
    assert result == {"status": "Rejected"}
    conf = await req(csms, "GetConfiguration", {"key": ["ReserveConnectorZeroSupported"]})
    assert conf["configurationKey"] == [
        {"key": "ReserveConnectorZeroSupported", "readonly": True, "value": "true"}
    ]
    profiles = await req(csms, "GetConfiguration", {"key": ["SupportedFeatureProfiles"]})
    assert "Reservation" in profiles["configurationKey"][0]["value"].split(",")


# ----------------------------------------------------------------------------- parent idTag


async def test_parent_id_tag_via_authorize(csms: DevCsms, charger: Any) -> None:
    """5.13 (errata 4.12): a card not in the list or cache is authorized with Authorize.req;
    Authorize.conf's parentIdTag equal to the reservation's admits it (StartTransaction with
    the reservationId); a card of another group is refused after its Authorize.

    OCTT: TC_053_CS (1.6)
    """
    parents = {OTHER_CARD: GROUP, THIRD_CARD: "OTHER-GROUP"}
    csms.id_tag_info = lambda tag: IdTagInfo(  # type: ignore[method-assign]
        status="Accepted", parent_id_tag=parents.get(tag)
    )
    h = await charger(csms)
    assert await reserve(h, csms, 1, 50, parentIdTag=GROUP) == "Accepted"
    await wait_status(h, 1, "Reserved")
    h.plug()
    h.tap(THIRD_CARD)
    await h.settle(lambda: len(h.frames("Authorize")) == 1)
    await h.advance(2)
    assert h.frames("StartTransaction") == [] and statuses(h, 1)[-1] == "Reserved"
    h.tap(OTHER_CARD)
    start = await csms.wait_for(lambda f: f.action == "StartTransaction", timeout_s=5)
    assert [f.payload["idTag"] for f in h.frames("Authorize")] == [THIRD_CARD, OTHER_CARD]
    assert (start.payload["idTag"], start.payload["reservationId"]) == (OTHER_CARD, 50)


async def test_parent_id_tag_via_local_list(csms: DevCsms, charger: Any) -> None:
    """5.13: the parent idTag MAY be looked up in the Local Authorization List: with
    LocalPreAuthorize the listed group card uses the reservation without an Authorize.req."""
    h = await charger(csms, ocpp={"LocalPreAuthorize": True})
    entry = {"idTag": OTHER_CARD, "idTagInfo": {"status": "Accepted", "parentIdTag": GROUP}}
    sent = await req(
        csms,
        "SendLocalList",
        {"listVersion": 1, "updateType": "Full", "localAuthorizationList": [entry]},
    )
    assert sent == {"status": "Accepted"}
    assert await reserve(h, csms, 1, 51, parentIdTag=GROUP) == "Accepted"
    await wait_status(h, 1, "Reserved")
    h.tap(OTHER_CARD)
    start = await plug_and_wait_start(h, csms)
    assert h.frames("Authorize") == []
    assert (start.payload["idTag"], start.payload["reservationId"]) == (OTHER_CARD, 51)


# ----------------------------------------------------------------------------- restart


async def test_reservation_survives_a_restart(csms: DevCsms, charger: Any, tmp_path: Path) -> None:
    """Persisted (2.0.1 B01.FR.13 / B11.FR.05 state it: Reserved persists across reboot): a
    valid reservation is Reserved again after a restart and still works; one whose
    expiryDate passed while the charger was off is gone when it starts."""
    h = await charger(csms, connectors=2)
    assert await reserve(h, csms, 1, 60) == "Accepted"
    later = iso_utc(datetime(2026, 1, 1, 14, 0, tzinfo=UTC))
    assert await reserve(h, csms, 2, 61, tag=OTHER_CARD, expiry=later) == "Accepted"
    await wait_status(h, 2, "Reserved")
    await h.app.stop(reason=None)
    await csms.wait_disconnected(STATION_ID, timeout_s=5)
    csms.clear_records()

    # Back at 13:30: reservation 60 (expires 13:00 + a few s) is over, 61 (14:00) is not.
    clock = ManualClock(start=datetime(2026, 1, 1, 13, 30, tzinfo=UTC))
    config = parse(charger_config(tmp_path, csms.url, connectors=2))
    app = App(config, clock=clock, boot_id="boot-2")
    await app.start()
    try:
        h2 = Harness(app, clock, csms)
        await csms.wait_connected(STATION_ID, timeout_s=5)
        await wait_status(h2, 2, "Reserved")
        await wait_status(h2, 1, "Available")
        assert list(reservation_rows(h2)) == ["reservation.61"]
        assert shown(h2, 2)["expiry"].startswith("2026-01-01T14:00:00")
        assert await req(csms, "CancelReservation", {"reservationId": 60}) == {"status": "Rejected"}
        h2.tap(OTHER_CARD)
        start = await plug_and_wait_start(h2, csms, 2)
        assert (start.payload["idTag"], start.payload["reservationId"]) == (OTHER_CARD, 61)
    finally:
        await app.stop(reason=None)
