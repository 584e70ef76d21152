"""OCPP 2.0.1 Reset over a real WebSocket against the dev CSMS (B11, B12): of the station
(OnIdle, Immediate, Scheduled while transactions run; the application's restart request and
the next boot's reason) and of one EVSE (its transaction ended, the EVSE back in service)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.core.reservations import Reservation, ReserveResult
from controller.dev.devcsms import DevCsms
from controller.ocpp201.availability import HELD_KEY
from tests.conftest import STATION_ID, Harness
from tests.e2e.test_kill9 import CARD as PROC_CARD
from tests.e2e.test_kill9 import STATION, boot, charging, wait_until
from tests.ocpp201.test_e2e_availability import (
    after_boot,
    change,
    restart,
    start_transaction,
    two_connectors,
)
from tests.ocpp201.test_e2e_boot import client, statuses, wait_status
from tests.ocpp201.test_e2e_transactions import assert_one_transaction, events
from tests.procs import Evsed, free_port, write_config


@pytest.fixture
def evsed() -> Iterator[dict[str, Any]]:
    """Holds the `evsed run` child of a test; killed (by pid) at teardown."""
    holder: dict[str, Any] = {}
    yield holder
    ev = holder.get("ev")
    if ev is not None:
        ev.cleanup()


async def reset(csms: DevCsms, kind: str, evse_id: int | None = None) -> dict[str, Any]:
    """ResetResponse payload (a CALLRESULT is asserted)."""
    payload: dict[str, Any] = {"type": kind}
    if evse_id is not None:
        payload["evseId"] = evse_id
    answer = await csms.call_raw(STATION_ID, "Reset", payload)
    assert answer[0] == 3, answer
    result: dict[str, Any] = answer[2]
    return result


async def restart_requested(h: Harness, kind: str) -> None:
    await h.settle(lambda: h.app.reset_requested == kind)


def boot_reasons(h: Harness) -> list[str]:
    return [f.payload["reason"] for f in h.frames("BootNotification")]


def ended(h: Harness) -> dict[str, Any]:
    last = events(h)[-1]
    assert last["eventType"] == "Ended", last
    return last


async def test_on_idle_without_transaction(charger: Any, csms: DevCsms) -> None:
    """TC_B_20_CS (B11.FR.01/03/04, B01.FR.03): OnIdle on an idle station: Accepted, the
    connectors out of service (B11.FR.03 may: Unavailable), the application restarts; the
    next boot says RemoteReset and every connector is Available again. A failed reboot is
    tried OCPPCommCtrlr.ResetRetries times (the device model's value)."""
    h = await two_connectors(charger, csms)
    retries = {
        "component": {"name": "OCPPCommCtrlr"},
        "variable": {"name": "ResetRetries"},
        "attributeValue": "5",
    }
    answer = await csms.call_raw(STATION_ID, "SetVariables", {"setVariableData": [retries]})
    assert answer[2]["setVariableResult"][0]["attributeStatus"] == "Accepted"
    assert await reset(csms, "OnIdle") == {"status": "Accepted"}
    await restart_requested(h, "Soft")
    assert h.app.reset_retries == 5
    await wait_status(h, 1, "Unavailable")
    assert events(h) == []
    again = await restart(h, charger, csms)
    assert boot_reasons(again) == ["RemoteReset"]
    assert after_boot(again) == {1: "Available", 2: "Available"}
    assert again.app.store is not None
    assert again.app.store.get_setting(HELD_KEY) is None


async def test_immediate_ends_the_transaction_then_restarts(charger: Any, csms: DevCsms) -> None:
    """TC_B_22_CS (B12.FR.02/04, E07.FR.03, B01.FR.03): Immediate while charging: Accepted;
    the transaction ends with triggerReason ResetCommand, stoppedReason ImmediateReset,
    chargingState EVConnected and no idToken, delivered before the restart; the contactor
    is open; the next boot says RemoteReset."""
    h = await two_connectors(charger, csms)
    await start_transaction(h, 1)
    await h.advance(5)
    assert await reset(csms, "Immediate") == {"status": "Accepted"}
    await restart_requested(h, "Hard")
    last = ended(h)
    assert last["triggerReason"] == "ResetCommand"
    assert last["transactionInfo"]["stoppedReason"] == "ImmediateReset"
    assert last["transactionInfo"]["chargingState"] == "EVConnected"
    assert "idToken" not in last
    assert_one_transaction(events(h))
    assert not h.connector(1).hw.contactor.closed
    assert h.app.store is not None
    assert not h.app.store.tx_messages_queued(client(h).backend)  # delivered first
    again = await restart(h, charger, csms)
    assert boot_reasons(again) == ["RemoteReset"]
    assert after_boot(again) == {1: "Available", 2: "Available"}


async def test_on_idle_waits_for_the_transaction(charger: Any, csms: DevCsms) -> None:
    """TC_B_21_CS (B12.FR.01/03, B12 3a): OnIdle while charging: Scheduled; the idle EVSE is
    Unavailable at once and takes no session, the charging one goes on until its driver
    ends it (E06, stoppedReason Local); then the restart, whose boot says ScheduledReset;
    the EVSEs are back as they were (Available)."""
    h = await two_connectors(charger, csms)
    await start_transaction(h, 1)
    assert await reset(csms, "OnIdle") == {"status": "Scheduled"}
    await wait_status(h, 2, "Unavailable")
    h.plug(2)
    await h.advance(30)
    assert h.connector(1).hw.contactor.closed
    assert not h.connector(2).hw.contactor.closed
    assert h.app.reset_requested is None
    assert await reset(csms, "OnIdle") == {"status": "Scheduled"}  # the same reset
    h.tap()
    await restart_requested(h, "Scheduled")
    assert ended(h)["transactionInfo"]["stoppedReason"] == "Local"
    assert [e["eventType"] for e in events(h)].count("Started") == 1
    again = await restart(h, charger, csms)
    assert boot_reasons(again) == ["ScheduledReset"]
    assert after_boot(again) == {1: "Available", 2: "Available"}


async def test_immediate_overtakes_a_waiting_on_idle_reset(charger: Any, csms: DevCsms) -> None:
    """B12.FR.02/04: an Immediate reset while an OnIdle one waits: Accepted, the transaction
    ends with ImmediateReset and the station restarts (as Immediate)."""
    h = await two_connectors(charger, csms)
    await start_transaction(h, 1)
    assert await reset(csms, "OnIdle") == {"status": "Scheduled"}
    await h.advance(5)
    assert await reset(csms, "Immediate") == {"status": "Accepted"}
    await restart_requested(h, "Hard")
    assert ended(h)["transactionInfo"]["stoppedReason"] == "ImmediateReset"


async def test_unavailable_persists_a_reset(charger: Any, csms: DevCsms) -> None:
    """TC_B_23_CS (B11.FR.02, B12.FR.06): EVSE 1 set Inoperative before an OnIdle reset is
    Unavailable after it, EVSE 2 Available; the boot says RemoteReset."""
    h = await two_connectors(charger, csms)
    assert await change(csms, "Inoperative", 1) == {"status": "Accepted"}
    await wait_status(h, 1, "Unavailable")
    assert await reset(csms, "OnIdle") == {"status": "Accepted"}
    await restart_requested(h, "Soft")
    again = await restart(h, charger, csms)
    assert boot_reasons(again) == ["RemoteReset"]
    assert after_boot(again) == {1: "Unavailable", 2: "Available"}


async def test_reserved_persists_a_reset(charger: Any, csms: DevCsms) -> None:
    """TC_B_24_CS (B11.FR.05): a reserved EVSE keeps its reservation through the reset:
    Reserved after the restart, the other Available."""
    h = await two_connectors(charger, csms)
    expiry = h.clock.utc_now() + timedelta(hours=1)
    made = h.station.reserve(Reservation(7, 1, "04A1B2C3", expiry), any_connector_supported=True)
    assert made is ReserveResult.ACCEPTED
    await wait_status(h, 1, "Reserved")
    assert await reset(csms, "OnIdle") == {"status": "Accepted"}
    await restart_requested(h, "Soft")
    assert statuses(h, 1)[-1] == "Reserved"
    again = await restart(h, charger, csms)
    assert after_boot(again) == {1: "Reserved", 2: "Available"}


async def test_a_crash_while_waiting_leaves_no_connector_held(charger: Any, csms: DevCsms) -> None:
    """B12.FR.06: the station stops (power loss, crash) while an OnIdle reset waits: after
    the start the connectors the reset took out of service are as their availability says
    (Available), not left Unavailable."""
    h = await two_connectors(charger, csms)
    await start_transaction(h, 1)
    assert await reset(csms, "OnIdle") == {"status": "Scheduled"}
    await wait_status(h, 2, "Unavailable")
    again = await restart(h, charger, csms)
    assert boot_reasons(again) == ["PowerUp"]
    assert after_boot(again)[2] == "Available"
    assert again.app.store is not None
    assert again.app.store.get_setting(HELD_KEY) is None


async def test_evse_reset_without_transaction(charger: Any, csms: DevCsms) -> None:
    """TC_B_25_CS (B11.FR.01/08/10): OnIdle of EVSE 1 while idle: Accepted; EVSE 1 is out
    of service for a moment (StatusNotification Unavailable) and Available again; EVSE 2
    and the application are untouched; the device model says AllowReset for each EVSE."""
    h = await two_connectors(charger, csms)
    request = {
        "getVariableData": [
            {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "AllowReset"}}
        ]
    }
    answer = await csms.call_raw(STATION_ID, "GetVariables", request)
    assert answer[2]["getVariableResult"][0]["attributeValue"] == "true"
    assert await reset(csms, "OnIdle", 1) == {"status": "Accepted"}
    await h.settle(lambda: statuses(h, 1)[-2:] == ["Unavailable", "Available"])
    assert statuses(h, 2) == ["Available"]
    assert h.app.reset_requested is None
    assert client(h).resets.evse_resets == {}


async def test_evse_reset_on_idle_waits_for_its_transaction(charger: Any, csms: DevCsms) -> None:
    """TC_B_26_CS (B12.FR.01/07): OnIdle of the charging EVSE: Scheduled; its transaction
    goes on until the driver ends it (stoppedReason Local), then the EVSE is reset (out of
    service, then back: Occupied while the EV is still plugged); no restart."""
    h = await two_connectors(charger, csms)
    await start_transaction(h, 1)
    assert await reset(csms, "OnIdle", 1) == {"status": "Scheduled"}
    await h.advance(10)
    assert h.connector(1).hw.contactor.closed
    h.tap()
    await h.settle(lambda: events(h)[-1]["eventType"] == "Ended")
    assert ended(h)["transactionInfo"]["stoppedReason"] == "Local"
    await h.settle(lambda: client(h).resets.evse_resets == {})
    await h.settle(lambda: statuses(h, 1)[-2:] == ["Unavailable", "Occupied"])
    assert h.app.reset_requested is None
    assert statuses(h, 2) == ["Available"]


async def test_evse_reset_immediate_ends_its_transaction(charger: Any, csms: DevCsms) -> None:
    """TC_B_27_CS (B12.FR.02/08, E07.FR.03): Immediate of the charging EVSE: Accepted; its
    transaction ends with ResetCommand / ImmediateReset, chargingState EVConnected; the
    other EVSE's transaction goes on; no restart."""
    h = await two_connectors(charger, csms)
    await start_transaction(h, 1)
    await start_transaction(h, 2, "04D5E6F7")
    assert await reset(csms, "Immediate", 1) == {"status": "Accepted"}
    await h.settle(lambda: events(h)[-1]["eventType"] == "Ended")
    last = ended(h)
    started = [e for e in events(h) if e["eventType"] == "Started"]
    (on_evse_1,) = [e for e in started if e["evse"]["id"] == 1]
    assert len(started) == 2
    tx_id = on_evse_1["transactionInfo"]["transactionId"]
    assert last["transactionInfo"]["transactionId"] == tx_id
    assert last["triggerReason"] == "ResetCommand"
    assert last["transactionInfo"]["stoppedReason"] == "ImmediateReset"
    assert last["transactionInfo"]["chargingState"] == "EVConnected"
    await h.settle(lambda: client(h).resets.evse_resets == {})
    assert h.connector(2).hw.contactor.closed
    assert not h.connector(1).hw.contactor.closed
    assert h.app.reset_requested is None
    await h.settle(lambda: statuses(h, 1)[-1] == "Occupied")


async def test_rejected_resets(charger: Any, csms: DevCsms) -> None:
    """B11.FR.06, B11.FR.09 / B12.FR.09 do not apply (each EVSE can be reset: TC_B_28_CS and
    TC_B_29_CS are for stations that cannot); an EVSE the station does not have is
    Rejected (UnknownEvse), a station reset nothing can carry out (no restart hook) is
    Rejected, a malformed request is a CALLERROR; none has any effect."""
    h = await two_connectors(charger, csms)
    assert await reset(csms, "Immediate", 3) == {
        "status": "Rejected",
        "statusInfo": {"reasonCode": "UnknownEvse"},
    }
    bad = await csms.call_raw(STATION_ID, "Reset", {"type": "Sometime"})
    assert bad[0] == 4
    client(h).on_reset = None
    assert (await reset(csms, "Immediate"))["status"] == "Rejected"
    await h.advance(2)
    assert h.app.reset_requested is None
    assert statuses(h, 1) == ["Available"] and statuses(h, 2) == ["Available"]


async def test_immediate_reset_restarts_the_real_process(tmp_path: Path, evsed: dict) -> None:
    """TC_B_22_CS end to end with the real `evsed run` (B12.FR.04/05, B11.FR.04, B01.FR.09):
    Immediate while charging: the Ended TransactionEvent (ImmediateReset) reaches the CSMS,
    the process restarts itself in place (same pid) and boots again with reason
    RemoteReset, reporting its connector Available (the reset's hold undone)."""
    async with DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as csms:
        api_port = free_port()
        cfg = write_config(
            tmp_path,
            station_id=STATION,
            csms_url=csms.url,
            api_port=api_port,
            ocpp_version="2.0.1",
        )
        ev = evsed["ev"] = Evsed(cfg, api_port, tmp_path)
        await boot(ev, csms)
        pid = ev.pid
        await ev.post("/api/sim/plug", {"connector": 1})
        assert (await ev.post("/api/sim/card", {"uid": PROC_CARD}))["delivered"]
        await ev.wait_status(charging, what="charging")
        answer = await csms.call_raw(STATION, "Reset", {"type": "Immediate"})
        assert answer[2] == {"status": "Accepted"}
        await wait_until(lambda: len(csms.frames(STATION, "BootNotification")) >= 2, 30, "reboot")
        assert ev.pid == pid and ev.proc is not None and ev.proc.poll() is None
        reasons = [f.payload["reason"] for f in csms.frames(STATION, "BootNotification")]
        assert reasons == ["PowerUp", "RemoteReset"]
        tx = [f.payload for f in csms.frames(STATION, "TransactionEvent")]
        (last,) = [e for e in tx if e["eventType"] == "Ended"]
        assert last["transactionInfo"]["stoppedReason"] == "ImmediateReset"
        assert last["triggerReason"] == "ResetCommand"
        boot_at = csms.frames(STATION, "BootNotification")[1].received_at
        assert all(
            f.received_at < boot_at
            for f in csms.frames(STATION, "TransactionEvent")
            if f.payload["eventType"] == "Ended"
        )
        await wait_until(
            lambda: any(
                f.received_at > boot_at and f.payload["connectorStatus"] == "Available"
                for f in csms.frames(STATION, "StatusNotification")
            ),
            15,
            "Available after the restart",
        )
