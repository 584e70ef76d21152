"""OCPP 2.0.1 over a real WebSocket against the dev CSMS: boot (B01-B03), heartbeat (G02) and
connector statuses (G01, B01.FR.05), with time on a manual clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from controller.dev.devcsms import DevCsms
from controller.ocpp201.client import HEARTBEAT_KEY, Ocpp201Client
from tests.conftest import STATION_ID, Harness


async def start(charger: Any, csms: DevCsms, **kwargs: Any) -> Harness:
    kwargs.setdefault("ocpp_version", "2.0.1")
    h: Harness = await charger(csms, wait_accepted=False, **kwargs)
    await csms.wait_connected(STATION_ID, timeout_s=5)
    return h


def client(h: Harness) -> Ocpp201Client:
    adapter = h.app.adapter
    assert isinstance(adapter, Ocpp201Client)
    return adapter


async def accepted(h: Harness) -> None:
    await h.settle(lambda: client(h).connection_state() == "accepted")


def statuses(h: Harness, evse_id: int = 1) -> list[str]:
    return [
        f.payload["connectorStatus"]
        for f in h.frames("StatusNotification")
        if f.payload["evseId"] == evse_id
    ]


async def wait_status(h: Harness, evse_id: int, status: str) -> None:
    await h.settle(lambda: statuses(h, evse_id)[-1:] == [status])


async def advance_until(h: Harness, predicate: Callable[[], bool], *, limit_s: int) -> int:
    """Simulated seconds (1 s steps) until ``predicate`` holds."""
    for elapsed_s in range(1, limit_s + 1):
        await h.advance(1)
        await asyncio.sleep(0.01)  # let the frame of this second arrive
        if predicate():
            return elapsed_s
    raise AssertionError(f"not reached within {limit_s} simulated seconds")


def security_errors(csms: DevCsms) -> list[Any]:
    return [r for r in csms.sent_results if r.error_code == "SecurityError"]


async def test_boot_accepted_reports_every_connector(charger: Any, csms: DevCsms) -> None:
    """TC_B_01_CS (B01.FR.01, B01.FR.05, B01.FR.09): BootNotificationRequest with reason
    PowerUp and the station's identity, over subprotocol ocpp2.0.1; once Accepted, one
    StatusNotificationRequest per EVSE and connector (evseId N, connectorId 1), Available."""
    h = await start(charger, csms, connectors=2)
    await accepted(h)
    await h.settle(lambda: len(h.frames("StatusNotification")) >= 2)
    boot = h.frames("BootNotification")[0]
    assert boot.payload["reason"] == "PowerUp"
    station = boot.payload["chargingStation"]
    assert station["vendorName"] and station["model"]
    sent = sorted(
        (f.payload["evseId"], f.payload["connectorId"], f.payload["connectorStatus"])
        for f in h.frames("StatusNotification")
    )
    assert sent == [(1, 1, "Available"), (2, 1, "Available")]
    assert h.app.store is not None
    assert h.app.store.get_setting("csms.ocpp_version") == "2.0.1"
    assert security_errors(csms) == []


async def test_pending_then_accepted(charger: Any, csms: DevCsms) -> None:
    """TC_B_02_CS (B02.FR.02, B02.FR.04, B02.FR.06, B02.FR.08): while Pending nothing but
    BootNotification is sent, not before the interval, and the connection stays open; the
    CSMS may ask meanwhile (B02.FR.01: GetBaseReport answered, its NotifyReport pages sent,
    as B02.FR.02 allows); Accepted follows."""
    csms.boot_status = "Pending"
    csms.boot_retry_interval_s = 30
    h = await start(charger, csms)
    await h.settle(lambda: client(h).boot_statuses == ["Pending"])
    assert client(h).connection_state() == "pending"
    report = {"requestId": 1, "reportBase": "FullInventory"}
    answer = await csms.call_raw(STATION_ID, "GetBaseReport", report)
    assert answer[0] == 3 and answer[2] == {"status": "Accepted"}
    await h.settle(
        lambda: bool(h.frames("NotifyReport")) and not h.frames("NotifyReport")[-1].payload["tbc"]
    )
    await h.advance(29)
    assert len(h.frames("BootNotification")) == 1  # B02.FR.04: not before the interval
    csms.boot_status = "Accepted"
    await h.advance(2)
    await accepted(h)
    await wait_status(h, 1, "Available")
    assert {f.action for f in csms.received} == {
        "BootNotification",
        "NotifyReport",
        "StatusNotification",
        "SecurityEventNotification",  # StartupOfTheDevice, queued since the start (A04)
    }
    assert client(h).connects == 1  # B02.FR.06: the connection was not closed
    assert security_errors(csms) == []


async def test_rejected_waits_for_the_retry_interval(charger: Any, csms: DevCsms) -> None:
    """TC_B_03_CS (B03.FR.02, B03.FR.06) and TC_B_30_CS (B03.FR.08): after Rejected the
    station sends nothing until the interval passed, answers every CSMS request with
    SecurityError, then boots again."""
    csms.boot_status = "Rejected"
    csms.boot_retry_interval_s = 120
    h = await start(charger, csms)
    await h.settle(lambda: client(h).boot_statuses == ["Rejected"])
    assert client(h).connection_state() == "rejected"
    answer = await csms.call_raw(STATION_ID, "Reset", {"type": "Immediate"})
    assert answer[0] == 4 and answer[2] == "SecurityError"
    await h.advance(119)
    assert [f.action for f in csms.received] == ["BootNotification"]
    csms.boot_status = "Accepted"
    await h.advance(2)
    await accepted(h)
    assert len(h.frames("BootNotification")) == 2
    assert client(h).boot_statuses == ["Rejected", "Accepted"]
    # Accepted: requests are handled again.
    answer = await csms.call_raw(
        STATION_ID, "ChangeAvailability", {"operationalStatus": "Operative"}
    )
    assert answer[0] == 3 and answer[2] == {"status": "Accepted"}


async def test_heartbeat_interval_from_the_boot(charger: Any, csms: DevCsms) -> None:
    """B01.FR.04 / G02.FR.01-02: the heartbeat interval is the one of BootNotification-
    Response (remembered); G02.FR.05: any other message restarts the timer."""
    csms.heartbeat_interval_s = 90
    h = await start(charger, csms)
    await accepted(h)
    assert h.app.store is not None
    assert h.app.store.get_setting(HEARTBEAT_KEY) == "90"
    await wait_status(h, 1, "Available")
    first_s = await advance_until(h, lambda: len(h.frames("Heartbeat")) == 1, limit_s=200)
    second_s = await advance_until(h, lambda: len(h.frames("Heartbeat")) == 2, limit_s=200)
    # Simulated seconds: the timer starts at the last frame (the answer to the status).
    assert 88 <= first_s <= 92
    assert 88 <= second_s <= 92
    assert security_errors(csms) == []


async def test_statuses_on_plug_fault_and_unavailable(charger: Any, csms: DevCsms) -> None:
    """TC_G_01_CS / TC_G_02_CS (G01.FR.01, G01.FR.03, G01.FR.04): plugging in makes the
    connector Occupied, unplugging Available again; a fault is Faulted; an EVSE taken out
    of service is Unavailable (G03.FR.04, through the station; ChangeAvailability comes
    later). Only the connector that changed is reported (G01.FR.08)."""
    h = await start(charger, csms, connectors=2)
    await accepted(h)
    await h.settle(lambda: len(h.frames("StatusNotification")) >= 2)
    h.plug(1)
    await h.advance(1)
    await wait_status(h, 1, "Occupied")
    h.unplug(1)
    await h.advance(1)
    await wait_status(h, 1, "Available")
    h.rig(2).fault.inject("GroundFailure")
    await h.advance(1)
    await wait_status(h, 2, "Faulted")
    h.rig(2).fault.clear()
    await h.advance(1)
    await wait_status(h, 2, "Available")
    assert h.station is not None
    h.station.change_availability(1, False)
    await h.advance(1)
    await wait_status(h, 1, "Unavailable")
    assert statuses(h, 1) == ["Available", "Occupied", "Available", "Unavailable"]
    assert statuses(h, 2) == ["Available", "Faulted", "Available"]
    for f in h.frames("StatusNotification"):
        assert f.payload["connectorId"] == 1 and f.payload["timestamp"]


async def test_reconnect_reports_only_changes_after_a_short_outage(
    charger: Any, csms: DevCsms
) -> None:
    """B04.FR.02: back within the offline threshold, only the connectors whose status
    changed meanwhile are reported; no second BootNotification (B01.FR.03: once per boot)."""
    h = await start(charger, csms, connectors=2)
    await accepted(h)
    await h.settle(lambda: len(h.frames("StatusNotification")) >= 2)
    await client(h).hold_offline("test outage")
    await h.settle(lambda: client(h).connection_state() == "offline")
    h.plug(2)
    await h.advance(1)
    client(h).release_offline()
    await accepted(h)
    await wait_status(h, 2, "Occupied")
    assert statuses(h, 1) == ["Available"]
    assert len(h.frames("BootNotification")) == 1


async def test_boot_reason_after_a_reset(charger: Any, csms: DevCsms) -> None:
    """B01.FR.09: the next boot after a reset says RemoteReset (the reason is kept in the
    store across the restart and cleared once that boot was accepted)."""
    h = await start(charger, csms)
    await accepted(h)
    h.app._on_reset("Soft")
    await h.app.stop(reason=None)
    again = await start(charger, csms)
    await accepted(again)
    reasons = [f.payload["reason"] for f in again.frames("BootNotification")]
    assert reasons == ["PowerUp", "RemoteReset"]
    assert again.app.store is not None
    assert again.app.store.get_setting("csms.boot_reason") is None
