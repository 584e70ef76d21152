"""OCPP 2.0.1 ChangeAvailability over a real WebSocket against the dev CSMS (G03, G04): the
station, an EVSE and a connector, Accepted / Scheduled / Rejected, the StatusNotifications
that follow, the device model's AvailabilityState, the separate tiers and persistence."""

from __future__ import annotations

from typing import Any

from controller.dev.devcsms import DevCsms
from tests.conftest import CARD, STATION_ID, Harness
from tests.ocpp201.test_e2e_boot import accepted, start, statuses, wait_status
from tests.ocpp201.test_e2e_transactions import charging, events


async def change(
    csms: DevCsms, status: str, evse_id: int | None = None, connector_id: int | None = None
) -> dict[str, Any]:
    """ChangeAvailabilityResponse payload (a CALLRESULT is asserted)."""
    payload: dict[str, Any] = {"operationalStatus": status}
    if evse_id is not None:
        payload["evse"] = {"id": evse_id}
        if connector_id is not None:
            payload["evse"]["connectorId"] = connector_id
    answer = await csms.call_raw(STATION_ID, "ChangeAvailability", payload)
    assert answer[0] == 3, answer
    result: dict[str, Any] = answer[2]
    return result


async def availability_state(csms: DevCsms, component: dict[str, Any]) -> str:
    """AvailabilityState of ``component`` read with GetVariables (the device model)."""
    request = {
        "getVariableData": [{"component": component, "variable": {"name": "AvailabilityState"}}]
    }
    answer = await csms.call_raw(STATION_ID, "GetVariables", request)
    (result,) = answer[2]["getVariableResult"]
    assert result["attributeStatus"] == "Accepted", result
    return str(result["attributeValue"])


async def two_connectors(charger: Any, csms: DevCsms) -> Harness:
    h = await start(charger, csms, connectors=2)
    await accepted(h)
    await wait_status(h, 1, "Available")
    await wait_status(h, 2, "Available")
    return h


async def start_transaction(h: Harness, connector_id: int = 1, card: str = CARD) -> None:
    h.plug(connector_id)
    await h.advance(1)
    h.tap(card)
    await h.settle(lambda: len(events(h)) >= 1)
    await h.settle(lambda: h.connector(connector_id).hw.contactor.closed)


async def test_evse_inoperative_then_operative(charger: Any, csms: DevCsms) -> None:
    """TC_G_03_CS / TC_G_04_CS (G03.FR.01/02/04/06/07): EVSE 1 Inoperative: Accepted, its
    connector Unavailable (StatusNotification and AvailabilityState), EVSE 2 untouched; no
    session can start there; Operative again: Available."""
    h = await two_connectors(charger, csms)
    assert await change(csms, "Inoperative", 1) == {"status": "Accepted"}
    await wait_status(h, 1, "Unavailable")
    assert await availability_state(csms, {"name": "EVSE", "evse": {"id": 1}}) == "Unavailable"
    assert await availability_state(csms, {"name": "EVSE", "evse": {"id": 2}}) == "Available"
    assert statuses(h, 2) == ["Available"]
    h.plug(1)
    await h.advance(1)
    h.tap()
    await h.advance(2)
    assert events(h) == [] and not h.connector(1).hw.contactor.closed
    h.unplug(1)
    await h.advance(1)
    assert await change(csms, "Operative", 1) == {"status": "Accepted"}
    await wait_status(h, 1, "Available")
    assert await availability_state(csms, {"name": "EVSE", "evse": {"id": 1}}) == "Available"


async def test_connector_inoperative_then_operative(charger: Any, csms: DevCsms) -> None:
    """TC_G_07_CS / TC_G_08_CS (G03.FR.04): one connector of an EVSE (evse.id and
    connectorId): Unavailable, then Available again, reported with that evseId and
    connectorId."""
    h = await two_connectors(charger, csms)
    assert await change(csms, "Inoperative", 2, 1) == {"status": "Accepted"}
    await wait_status(h, 2, "Unavailable")
    last = h.frames("StatusNotification")[-1].payload
    assert (last["evseId"], last["connectorId"]) == (2, 1)
    component = {"name": "Connector", "evse": {"id": 2, "connectorId": 1}}
    assert await availability_state(csms, component) == "Unavailable"
    assert await change(csms, "Operative", 2, 1) == {"status": "Accepted"}
    await wait_status(h, 2, "Available")
    assert statuses(h, 1) == ["Available"]


async def test_station_inoperative_then_operative(charger: Any, csms: DevCsms) -> None:
    """TC_G_05_CS / TC_G_06_CS (G04.FR.01/05/07/08): no evse: the whole station; every
    connector Unavailable, ChargingStation AvailabilityState Unavailable; Operative: every
    connector Available again."""
    h = await two_connectors(charger, csms)
    assert await change(csms, "Inoperative") == {"status": "Accepted"}
    await wait_status(h, 1, "Unavailable")
    await wait_status(h, 2, "Unavailable")
    assert await availability_state(csms, {"name": "ChargingStation"}) == "Unavailable"
    assert await change(csms, "Operative") == {"status": "Accepted"}
    await wait_status(h, 1, "Available")
    await wait_status(h, 2, "Available")
    assert await availability_state(csms, {"name": "ChargingStation"}) == "Available"


async def test_the_state_it_is_already_in_is_accepted(charger: Any, csms: DevCsms) -> None:
    """TC_G_09_CS, TC_G_10_CS, TC_G_12_CS, TC_G_13_CS, TC_G_15_CS, TC_G_16_CS (G03.FR.03,
    G04.FR.04/05): asking for the state a tier is already in is Accepted, and the
    connectors concerned are reported again (where they stand)."""
    h = await two_connectors(charger, csms)
    for evse_id, connector_id in ((1, None), (None, None), (1, 1)):
        before = len(h.frames("StatusNotification"))
        assert await change(csms, "Operative", evse_id, connector_id) == {"status": "Accepted"}
        await h.settle(lambda b=before: len(h.frames("StatusNotification")) > b)  # type: ignore[misc]
    assert await change(csms, "Inoperative") == {"status": "Accepted"}
    await wait_status(h, 2, "Unavailable")
    before = len(h.frames("StatusNotification"))
    assert await change(csms, "Inoperative") == {"status": "Accepted"}  # TC_G_13_CS
    await h.settle(lambda: len(h.frames("StatusNotification")) >= before + 2)
    assert {f.payload["connectorStatus"] for f in h.frames("StatusNotification")[before:]} == {
        "Unavailable"
    }
    assert await change(csms, "Inoperative", 1) == {"status": "Accepted"}  # TC_G_10_CS
    assert await change(csms, "Inoperative", 1) == {"status": "Accepted"}
    assert await change(csms, "Inoperative", 1, 1) == {"status": "Accepted"}  # TC_G_16_CS
    assert await change(csms, "Inoperative", 1, 1) == {"status": "Accepted"}


async def test_tiers_are_separate(charger: Any, csms: DevCsms) -> None:
    """G03 / G04 Note 1 (G03.FR.07, G04.FR.08): the station, EVSEs and connectors have their
    own states: a connector set Inoperative stays so when its EVSE, then the station, go
    Inoperative and back to Operative; the other EVSE returns to Available."""
    h = await two_connectors(charger, csms)
    assert await change(csms, "Inoperative", 1, 1) == {"status": "Accepted"}
    await wait_status(h, 1, "Unavailable")
    assert await change(csms, "Inoperative", 1) == {"status": "Accepted"}
    assert await change(csms, "Operative", 1) == {"status": "Accepted"}
    assert await change(csms, "Inoperative") == {"status": "Accepted"}
    await wait_status(h, 2, "Unavailable")
    assert await change(csms, "Operative") == {"status": "Accepted"}
    await wait_status(h, 2, "Available")
    await h.advance(1)
    assert statuses(h, 1)[-1] == "Unavailable"
    assert "Available" not in statuses(h, 1)[1:]
    assert h.station.view(1).phase.value == "Unavailable"
    assert await change(csms, "Operative", 1, 1) == {"status": "Accepted"}
    await wait_status(h, 1, "Available")


async def test_evse_inoperative_during_a_transaction_is_scheduled(
    charger: Any, csms: DevCsms
) -> None:
    """TC_G_11_CS (G03.FR.05): EVSE 1 Inoperative while it charges: Scheduled; the session
    goes on; when the driver ends it and unplugs, the EVSE is Unavailable and no new
    session starts there."""
    h = await two_connectors(charger, csms)
    await start_transaction(h, 1)
    assert await change(csms, "Inoperative", 1) == {"status": "Scheduled"}
    await h.advance(5)
    assert h.connector(1).hw.contactor.closed
    assert events(h)[-1]["eventType"] != "Ended"
    h.tap()
    await h.settle(lambda: events(h)[-1]["eventType"] == "Ended")
    await wait_status(h, 1, "Unavailable")
    assert events(h)[-1]["transactionInfo"]["stoppedReason"] == "Local"
    h.unplug(1)
    await h.advance(1)
    h.plug(1)
    await h.advance(1)
    h.tap()
    await h.advance(2)
    assert [e["eventType"] for e in events(h)].count("Started") == 1
    assert not h.connector(1).hw.contactor.closed
    assert statuses(h, 1)[-1] == "Unavailable"


async def test_station_inoperative_during_a_transaction_is_scheduled(
    charger: Any, csms: DevCsms
) -> None:
    """TC_G_14_CS (G04.FR.06/07): the station Inoperative while EVSE 1 charges: Scheduled;
    the EVSE without a transaction is Unavailable at once, the charging one when its
    transaction ends."""
    h = await two_connectors(charger, csms)
    await start_transaction(h, 1)
    assert await change(csms, "Inoperative") == {"status": "Scheduled"}
    await wait_status(h, 2, "Unavailable")
    assert h.connector(1).hw.contactor.closed
    assert statuses(h, 1)[-1] == "Occupied"
    h.tap()
    await h.settle(lambda: events(h)[-1]["eventType"] == "Ended")
    await wait_status(h, 1, "Unavailable")


async def test_connector_inoperative_during_a_transaction_is_scheduled(
    charger: Any, csms: DevCsms
) -> None:
    """TC_G_17_CS (G03.FR.05): one connector Inoperative while it charges: Scheduled;
    Unavailable once the transaction ended. Operative before it ends cancels that."""
    h = await two_connectors(charger, csms)
    await start_transaction(h, 1)
    assert await change(csms, "Inoperative", 1, 1) == {"status": "Scheduled"}
    assert await change(csms, "Operative", 1, 1) == {"status": "Accepted"}
    assert await change(csms, "Inoperative", 1, 1) == {"status": "Scheduled"}
    await charging(h)
    h.tap()
    await h.settle(lambda: events(h)[-1]["eventType"] == "Ended")
    await wait_status(h, 1, "Unavailable")


async def test_unknown_evse_or_connector_rejected(charger: Any, csms: DevCsms) -> None:
    """G03.FR.02: an EVSE or connector the station does not have: Rejected with reason
    UnknownEvse / UnknownConnectorId, and nothing changes; a payload that breaks the
    schema is a CALLERROR (untrusted input, no effect)."""
    h = await two_connectors(charger, csms)
    assert await change(csms, "Inoperative", 3) == {
        "status": "Rejected",
        "statusInfo": {"reasonCode": "UnknownEvse"},
    }
    assert await change(csms, "Inoperative", 1, 2) == {
        "status": "Rejected",
        "statusInfo": {"reasonCode": "UnknownConnectorId"},
    }
    assert (await change(csms, "Inoperative", 0, 1))["status"] == "Rejected"
    bad = await csms.call_raw(STATION_ID, "ChangeAvailability", {"operationalStatus": "Maybe"})
    assert bad[0] == 4
    await h.advance(1)
    assert statuses(h, 1) == ["Available"] and statuses(h, 2) == ["Available"]
    assert h.station.station_operative


async def test_availability_persists_across_a_restart(charger: Any, csms: DevCsms) -> None:
    """TC_G_18_CS / TC_G_19_CS / TC_G_21_CS (G03.FR.08, G04.FR.09): after a restart EVSE 1
    (set Inoperative) and a connector set Inoperative stay Unavailable, the others are
    Available; the station set Inoperative stays so, and its tiers are kept apart."""
    h = await two_connectors(charger, csms)
    assert await change(csms, "Inoperative", 1) == {"status": "Accepted"}
    await wait_status(h, 1, "Unavailable")
    again = await restart(h, charger, csms)
    assert after_boot(again) == {1: "Unavailable", 2: "Available"}
    assert await change(csms, "Inoperative", 2, 1) == {"status": "Accepted"}
    assert await change(csms, "Inoperative") == {"status": "Accepted"}
    await wait_status(again, 2, "Unavailable")
    third = await restart(again, charger, csms)
    assert after_boot(third) == {1: "Unavailable", 2: "Unavailable"}
    assert await availability_state(csms, {"name": "ChargingStation"}) == "Unavailable"
    assert await change(csms, "Operative") == {"status": "Accepted"}
    assert await change(csms, "Operative", 1) == {"status": "Accepted"}
    await wait_status(third, 1, "Available")
    await third.advance(1)
    assert statuses(third, 2)[-1] == "Unavailable"  # its connector's own state


async def restart(h: Harness, charger: Any, csms: DevCsms) -> Harness:
    """Stop the charger and start it again on the same database; once its boot was
    accepted and both connectors reported."""
    await h.app.stop(reason=None)
    csms.received.clear()
    again = await start(charger, csms, connectors=2)
    await accepted(again)
    await again.settle(lambda: len(again.frames("StatusNotification")) >= 2)
    return again


def after_boot(h: Harness) -> dict[int, str]:
    """evseId -> connectorStatus of the StatusNotifications after the boot."""
    frames = h.frames("StatusNotification")
    return {f.payload["evseId"]: f.payload["connectorStatus"] for f in frames}
