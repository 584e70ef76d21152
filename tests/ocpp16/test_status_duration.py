"""MinimumStatusDuration (issue 4 item 2).

OCPP 1.6 4.9: "the Charge Point MAY omit sending a StatusNotification.req if it was active
for less time than defined in the optional configuration key MinimumStatusDuration" and "will
only send the StatusNotification.req once the MinimumStatusDuration time is passed"; errata
3.19: "SHALL send a StatusNotification.req ... taking into account some minimum status
duration". 9.1.20 MinimumStatusDuration: seconds a status must be stable before it is sent.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from controller.dev.devcsms import DevCsms
from hal.base import FaultKind


def connector_statuses(h: Any, connector_id: int = 1) -> list[tuple[str, str]]:
    """(status, timestamp) of every StatusNotification for the connector, in order."""
    return [
        (f.payload["status"], f.payload["timestamp"])
        for f in h.frames("StatusNotification")
        if f.payload["connectorId"] == connector_id
    ]


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_short_status_is_not_reported(csms: DevCsms, charger: Any) -> None:
    h = await charger(csms, ocpp={"MinimumStatusDuration": 5})
    assert [s for s, _ in connector_statuses(h)] == ["Available"]
    h.plug()
    await h.advance(2)  # Preparing for 2 s only
    h.unplug()
    await h.advance(10)
    assert [s for s, _ in connector_statuses(h)] == ["Available"]  # neither Preparing nor
    # a repeated Available (the CSMS already knows it)


async def test_stable_status_is_reported_once_with_its_start_time(
    csms: DevCsms, charger: Any
) -> None:
    h = await charger(csms, ocpp={"MinimumStatusDuration": 5})
    h.plug()
    await h.advance(1)
    await h.settle(lambda: h.connector().state.phase.value == "Preparing")
    began = h.clock.utc_now()  # the station noticed the plug by now
    await h.advance(4)
    await h.settle(lambda: True)
    assert [s for s, _ in connector_statuses(h)] == ["Available"]  # not yet: < 5 s
    await h.advance(1)
    await h.settle(lambda: len(connector_statuses(h)) == 2)
    await h.advance(20)
    statuses = connector_statuses(h)
    assert [s for s, _ in statuses] == ["Available", "Preparing"]  # exactly once
    at = ts(statuses[1][1])
    # The time the status began, not the time it was sent (>= 5 s later).
    assert began - timedelta(seconds=1) <= at <= began


async def test_faulted_is_reported_at_once(csms: DevCsms, charger: Any) -> None:
    h = await charger(csms, ocpp={"MinimumStatusDuration": 30})
    h.station.set_connector_fault(1, FaultKind.GROUND)
    await h.advance(1)
    await h.settle(lambda: any(s == "Faulted" for s, _ in connector_statuses(h)))
    h.station.set_connector_fault(1, None)
    await h.advance(10)
    assert [s for s, _ in connector_statuses(h)][-1] == "Faulted"  # Available not yet stable
    await h.advance(25)
    await h.settle(lambda: [s for s, _ in connector_statuses(h)][-1] == "Available")


async def test_zero_sends_every_status(csms: DevCsms, charger: Any) -> None:
    h = await charger(csms, ocpp={"MinimumStatusDuration": 0})
    h.plug()
    await h.advance(2)
    await h.settle(lambda: len(connector_statuses(h)) == 2)
    h.unplug()
    await h.advance(2)
    await h.settle(lambda: len(connector_statuses(h)) == 3)
    assert [s for s, _ in connector_statuses(h)] == ["Available", "Preparing", "Available"]


async def test_lowering_the_duration_releases_a_waiting_status(csms: DevCsms, charger: Any) -> None:
    h = await charger(csms, ocpp={"MinimumStatusDuration": 600})
    h.plug()
    await h.advance(3)
    assert [s for s, _ in connector_statuses(h)] == ["Available"]
    assert h.app.settings.change("MinimumStatusDuration", "2") == "Accepted"
    await h.advance(1)
    await h.settle(lambda: [s for s, _ in connector_statuses(h)] == ["Available", "Preparing"])


async def test_reconnect_sends_the_current_status_at_once(csms: DevCsms, charger: Any) -> None:
    h = await charger(csms, ocpp={"MinimumStatusDuration": 60})
    h.plug()
    await h.advance(2)
    await csms.disconnect("CP-TEST")
    await h.settle(lambda: h.app.port.connection_state() != "accepted")
    before = len(connector_statuses(h))
    while h.app.port.connection_state() != "accepted":
        await h.advance(0.25, step_s=0.25)
    await h.settle(lambda: len(connector_statuses(h)) > before)
    assert connector_statuses(h)[-1][0] == "Preparing"
