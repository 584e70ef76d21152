"""End-to-end sessions over a real WebSocket against the dev CSMS (OCPP 1.6 sections 4 and 5)."""

from __future__ import annotations

from typing import Any

from controller.dev.devcsms import DevCsms
from tests.conftest import CARD


async def test_local_session_start_to_stop(csms: DevCsms, charger: Any) -> None:
    """4.8 StartTransaction / 4.10 StopTransaction with reason Local, energy billed exactly."""
    h = await charger(csms)
    h.plug()
    await h.advance(2)
    h.tap()
    start = await csms.wait_for(lambda f: f.action == "StartTransaction")
    assert start.payload["meterStart"] == 1000
    assert start.payload["idTag"] == CARD
    await h.settle(lambda: h.connector().hw.contactor.closed)
    await h.advance(600, step_s=10)
    h.tap()
    stop = await csms.wait_for(lambda f: f.action == "StopTransaction")
    assert stop.payload["reason"] == "Local"
    assert stop.payload["transactionId"] == 1
    # 11 kW for 600 s = 1833.3 Wh (+ up to one tick of slack before the stop)
    assert 1833 <= stop.payload["meterStop"] - 1000 <= 1833 + 4
    assert not h.connector().hw.contactor.closed
    assert csms.max_outstanding_calls == 1


async def test_stop_opens_every_contactor_even_when_stopping_fails(
    csms: DevCsms, charger: Any
) -> None:
    """Safety: an error while stopping sessions, and a contactor driver that raises, must not
    keep the other connector's contactor closed or leave the hardware unreleased."""
    h = await charger(csms, connectors=2)
    for connector_id, card in ((1, "04A1B2C3"), (2, "04A1B2C4")):
        h.plug(connector_id)
        await h.advance(2)
        h.tap(card)
        await h.settle(lambda cid=connector_id: h.connector(cid).hw.contactor.closed)
    station = h.app.station

    async def broken_stop_all(reason: Any) -> None:
        raise RuntimeError("injected: stopping the sessions failed")

    def broken_switch(closed: bool) -> None:
        raise OSError("injected: GPIO write failed")

    station.stop_all = broken_stop_all
    h.connector(1).hw.contactor.set_closed = broken_switch
    await h.app.stop()
    assert not h.connector(2).hw.contactor.closed
    assert h.app.store is None  # stop() went on to release everything
