"""OCPP 2.0.1 against an independent CSMS: tests/conformance/csms.js (npm ocpp-rpc, strict
mode, its own 2.0.1 schemas) with CSMS_PROTOCOLS=ocpp2.0.1. Boot, statuses, heartbeat and
CALLERRORs of the station must pass its checks: no violation recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import STATION_ID
from tests.ocpp16.test_conformance_ocpp_rpc import NodeCsms, pytestmark  # noqa: F401


@pytest.fixture
async def node_csms_201(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[NodeCsms]:
    monkeypatch.setenv("CSMS_PROTOCOLS", "ocpp2.0.1")
    monkeypatch.setenv("CSMS_HEARTBEAT_INTERVAL", "60")
    server = NodeCsms()
    try:
        await server.start()
        yield server
    finally:
        await server.close()


async def test_boot_status_heartbeat_and_errors_pass_strict_201(
    charger: Any, node_csms_201: NodeCsms
) -> None:
    """TC_B_01_CS, TC_G_01_CS and G02 against ocpp-rpc strict mode: the BootNotification,
    every StatusNotification (Available, Occupied) and Heartbeat are schema-valid 2.0.1, and
    the station's CALLERROR (a request it does not support) uses a 2.0.1 error code."""
    csms = node_csms_201
    h = await charger(csms, wait_accepted=False, ocpp_version=["2.0.1", "1.6"])
    await csms.wait_connected(STATION_ID)
    connected = next(e for e in csms.events if e["event"] == "connected")
    assert connected["protocol"] == "ocpp2.0.1"
    boot = await csms.wait_call("BootNotification")
    assert boot["reason"] == "PowerUp"
    await csms.wait_call("StatusNotification", lambda p: p["connectorStatus"] == "Available")
    h.plug(1)
    await h.advance(1)
    await csms.wait_call("StatusNotification", lambda p: p["connectorStatus"] == "Occupied")
    for _ in range(65):
        await h.advance(1)
    await csms.wait_call("Heartbeat")
    reply = await csms.command("call", method="ClearDisplayMessage", params={"id": 1})
    assert reply["error"]["code"] == "NotSupported"
    stats = await csms.stats()
    assert stats["violations"] == []
    assert stats["maxOutstanding"] == 1


async def test_transaction_events_pass_strict_201(charger: Any, node_csms_201: NodeCsms) -> None:
    """TC_E_03_CS / TC_E_07_CS against ocpp-rpc strict mode: a whole session's
    TransactionEvent Started, Updated (charging state, periodic samples) and Ended are
    schema-valid 2.0.1, one at a time, with seqNo 0, 1, 2, ... and one transactionId."""
    csms = node_csms_201
    h = await charger(csms, wait_accepted=False, ocpp_version="2.0.1")
    await csms.wait_connected(STATION_ID)
    await csms.wait_call("StatusNotification", lambda p: p["connectorStatus"] == "Available")
    h.plug(1)
    await h.advance(1)
    h.tap()
    await csms.wait_call("TransactionEvent", lambda p: p["eventType"] == "Started")
    for _ in range(125):
        await h.advance(1)
    await csms.wait_call("TransactionEvent", lambda p: p["triggerReason"] == "MeterValuePeriodic")
    h.tap()
    await csms.wait_call("TransactionEvent", lambda p: p["eventType"] == "Ended")
    sent = [f.payload for f in csms.received if f.action == "TransactionEvent"]
    assert [p["seqNo"] for p in sent] == list(range(len(sent)))
    assert len({p["transactionInfo"]["transactionId"] for p in sent}) == 1
    stats = await csms.stats()
    assert stats["violations"] == []
    assert stats["maxOutstanding"] == 1
