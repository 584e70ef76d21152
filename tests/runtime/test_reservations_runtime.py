"""The station runtime's reservations (controller/runtime/reservations.py) through
StationControl: what the 1.6 adapter and a future 2.0.1 adapter both call."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from controller.core.connector import Command, Phase, SessionEvent, SessionEventKind
from controller.core.control import CancelResult, Reservation, ReserveResult
from tests.conftest import CARD
from tests.ocpp16.test_e2e_csms_requests import OTHER_CARD, start_session


def reservation(h: Any, rid: int, cid: int, tag: str = CARD, seconds: float = 3600) -> Reservation:
    return Reservation(rid, cid, tag, h.clock.utc_now() + timedelta(seconds=seconds))


def phase(h: Any, cid: int = 1) -> Phase:
    return h.station.view(cid).phase


async def test_connector_zero_rejected_when_the_adapter_does_not_support_it(
    csms: Any, charger: Any
) -> None:
    """5.13 / 9.3.1 (2.0.1 H01.FR.19 ReservationNonEvseSpecific false): Rejected."""
    h = await charger(csms)
    r = reservation(h, 1, 0)
    assert h.station.reserve(r, any_connector_supported=False) is ReserveResult.REJECTED
    assert h.station.reserve(r, any_connector_supported=True) is ReserveResult.ACCEPTED


async def test_expiry_on_the_injected_clock(csms: Any, charger: Any) -> None:
    """5.13 (2): the tick that reaches expiryDate ends it; its settings row goes too."""
    h = await charger(csms)
    assert h.station.reserve(reservation(h, 3, 1, seconds=5), any_connector_supported=True) == (
        ReserveResult.ACCEPTED
    )
    assert phase(h) is Phase.RESERVED
    assert set(h.app.store.settings_with_prefix("reservation.")) == {"reservation.3"}
    await h.advance(4)
    assert phase(h) is Phase.RESERVED
    await h.advance(2)
    assert phase(h) is Phase.AVAILABLE
    assert h.app.store.settings_with_prefix("reservation.") == {}
    assert h.station.cancel_reservation(3) is CancelResult.REJECTED


async def test_transaction_started_session_event_carries_the_reservation(
    csms: Any, charger: Any
) -> None:
    """For a 2.0.1 adapter (H01.FR.15: reservationId in the TransactionEvent): the neutral
    TRANSACTION_STARTED session event names the reservation the transaction ends."""
    h = await charger(csms)
    heard: list[SessionEvent] = []

    def listener(connector_id: int, command: Command) -> None:
        if isinstance(command, SessionEvent):
            heard.append(command)

    h.station.add_listener(listener)
    h.station.reserve(reservation(h, 12, 1), any_connector_supported=True)
    await start_session(h, csms)
    started = [e for e in heard if e.kind is SessionEventKind.TRANSACTION_STARTED]
    assert [e.reservation_id for e in started] == [12]
    assert h.station.snapshot()["connectors"][0]["reservation"] is None


async def test_connector_zero_reservation_outlives_a_fault_of_its_connector(
    csms: Any, charger: Any
) -> None:
    """A reservation for any connector is the Charge Point's: when the connector kept for it
    faults it is not cancelled (only 5.13 (3) "the Charge Point" faulted/unavailable would);
    it keeps the next connector that becomes idle."""
    h = await charger(csms, connectors=2)
    await start_session(h, csms, 1, card=OTHER_CARD)
    assert h.station.reserve(reservation(h, 20, 0), any_connector_supported=True) == (
        ReserveResult.ACCEPTED
    )
    assert phase(h, 2) is Phase.RESERVED
    h.rig(2).fault.inject("GroundFailure")
    await h.settle(lambda: phase(h, 2) is Phase.FAULTED)
    assert set(h.app.store.settings_with_prefix("reservation.")) == {"reservation.20"}
    h.rig(2).fault.clear()
    await h.settle(lambda: phase(h, 2) is Phase.RESERVED)
    # The whole Charge Point set Unavailable ends it (5.13 (3)).
    h.station.change_availability(0, False)
    assert h.app.store.settings_with_prefix("reservation.") == {}
    assert h.station.cancel_reservation(20) is CancelResult.REJECTED
