"""The station forwards the state machine's session events to the port, in order, with the
time they happened, and to its listeners; the OCPP 1.6 messages do not change."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import pytest

from controller.core.connector import Command, SessionEvent, SessionEventKind, StopCause
from tests.conftest import CARD

K = SessionEventKind


async def test_session_events_reach_the_port_and_the_listeners(
    csms: Any, charger: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="controller.csms.hub")
    h = await charger(csms)
    port = h.app.port
    forwarded: list[tuple[int, SessionEvent, str]] = []
    real = port.session_event

    def record(connector_id: int, event: SessionEvent, at: str) -> None:
        forwarded.append((connector_id, event, at))
        real(connector_id, event, at)

    port.session_event = record
    heard: list[SessionEvent] = []

    def listener(connector_id: int, command: Command) -> None:
        if isinstance(command, SessionEvent):
            heard.append(command)

    h.station.add_listener(listener)

    h.plug()
    await h.advance(2)
    h.tap(CARD)
    await h.settle(lambda: h.connector().hw.contactor.closed)
    await h.advance(5)
    h.unplug()
    await h.settle(lambda: h.connector().tx_key is None)
    await h.settle(lambda: len(h.frames("StopTransaction")) == 1)

    events = [e for _, e, _ in forwarded]
    assert events == heard
    assert all(cid == 1 for cid, _, _ in forwarded)
    # Every timestamp carries its UTC offset, as the port's other calls do.
    assert all(datetime.fromisoformat(at).utcoffset() is not None for _, _, at in forwarded)
    kinds = [e.kind for e in events]
    assert kinds[0] is K.EV_CONNECTED
    assert kinds[1:3] == [K.AUTHORIZED, K.TRANSACTION_STARTED]
    assert K.ENERGY_FLOWING in kinds
    assert kinds[-2:] == [K.EV_DISCONNECTED, K.TRANSACTION_ENDED]
    assert events[1] == SessionEvent(K.AUTHORIZED, id_tag=CARD)
    assert events[-1].cause is StopCause.EV_DISCONNECTED
    # OCPP 1.6 has no message for them: the port logs them at DEBUG only.
    logged = [r.getMessage() for r in caplog.records if r.name == "controller.csms.hub"]
    assert any("TransactionStarted" in m for m in logged), logged
    assert len(h.frames("StartTransaction")) == 1
