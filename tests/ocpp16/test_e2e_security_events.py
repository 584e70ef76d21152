"""Security events reach the CSMS as SecurityEventNotification (1.6 security whitepaper A04)."""

from __future__ import annotations

import json
from typing import Any

from conftest import STATION_ID

from controller.dev.devcsms import DevCsms

SEN = "SecurityEventNotification"


def events(csms: DevCsms, kind: str | None = None) -> list[Any]:
    return [f for f in csms.frames(STATION_ID, SEN) if kind is None or f.payload["type"] == kind]


async def test_startup_of_the_device_is_delivered_once_a04_fr_01(
    csms: DevCsms, charger: Any
) -> None:
    h = await charger(csms)
    await csms.wait_for(lambda f: f.action == SEN)
    await h.advance(5)
    (startup,) = events(csms)
    assert startup.payload["type"] == "StartupOfTheDevice"
    assert h.app.port.queued_messages() == 0  # removed once confirmed (A04.FR.03)
    entries = list(h.app.security_log.entries())
    assert [e["kind"] for e in entries] == ["StartupOfTheDevice"]


async def test_invalid_frames_are_one_invalid_messages_event_per_burst(
    csms: DevCsms, charger: Any
) -> None:
    h = await charger(csms)
    await csms.wait_for(lambda f: f.action == SEN)
    for _ in range(20):
        await csms.send_text(STATION_ID, "this is not OCPP")
    await csms.send_text(STATION_ID, json.dumps([2, "x1", "Reset", {"type": "Sideways"}]))
    frame = await csms.wait_for(
        lambda f: f.action == SEN and f.payload["type"] == "InvalidMessages"
    )
    assert frame.payload["techInfo"] == "frame is not valid JSON"
    await h.advance(5)
    assert len(events(csms, "InvalidMessages")) == 1  # the flood is folded in the log
    assert h.station.connectors[1].state.phase.name == "AVAILABLE"  # nothing else happened


async def test_a_replayed_call_is_refused_and_reported(csms: DevCsms, charger: Any) -> None:
    """A CALL reusing a message id of this connection is not executed (a frame cannot be
    lost and resent within one TCP connection): CALLERROR + AttemptedReplayAttacks."""
    h = await charger(csms)
    frame = [2, "same-id", "ChangeConfiguration", {"key": "HeartbeatInterval", "value": "77"}]
    await csms.send_text(STATION_ID, json.dumps(frame))
    first = await csms.next_raw_response(STATION_ID, timeout_s=5)
    assert first == [3, "same-id", {"status": "Accepted"}]
    frame[3] = {"key": "HeartbeatInterval", "value": "5"}
    await csms.send_text(STATION_ID, json.dumps(frame))
    second = await csms.next_raw_response(STATION_ID, timeout_s=5)
    assert second[0] == 4 and second[1] == "same-id" and second[2] == "ProtocolError"
    assert h.app.settings.get("HeartbeatInterval") == "77"
    report = await csms.wait_for(
        lambda f: f.action == SEN and f.payload["type"] == "AttemptedReplayAttacks"
    )
    assert "ChangeConfiguration" in report.payload["techInfo"]


async def test_a_csms_without_the_security_extension_does_not_block_the_queue(
    csms: DevCsms, charger: Any
) -> None:
    """A plain 1.6 CSMS answers NotImplemented: the event stays in the security log only,
    the transaction messages behind it are delivered at once (no retry interval)."""
    csms.error_actions[SEN] = "NotImplemented"
    h = await charger(csms)
    h.plug()
    await h.advance(1)
    h.tap()
    await csms.wait_for(lambda f: f.action == "StartTransaction", timeout_s=5)
    assert len(events(csms)) == 1
    assert [e["kind"] for e in h.app.security_log.entries()] == ["StartupOfTheDevice"]


async def test_reset_is_a_reset_or_reboot_event(csms: DevCsms, charger: Any) -> None:
    h = await charger(csms)
    await csms.wait_for(lambda f: f.action == SEN)
    frame = await csms.call_raw(STATION_ID, "Reset", {"type": "Soft"}, timeout_s=5)
    assert frame[2] == {"status": "Accepted"}
    await h.settle(lambda: h.app.reset_requested == "Soft")
    kinds = [e["kind"] for e in h.app.security_log.entries()]
    assert kinds == ["StartupOfTheDevice", "ResetOrReboot"]


async def test_tamper_switch_stops_charging_and_is_reported(csms: DevCsms, charger: Any) -> None:
    """Whitepaper section 8 TamperDetectionActivated (critical): a lid switch wired as the
    connector's fault input with code "Tamper" opens the contactor like any fault (Faulted,
    OtherError: 1.6 has no tamper code) and is sent as a security event; a second
    opening is reported again (critical events are never folded)."""
    h = await charger(csms)
    h.plug()
    await h.advance(1)
    h.tap()
    await h.settle(lambda: h.connector().hw.contactor.closed)
    h.rig().fault.inject("Tamper")
    await h.settle(lambda: not h.connector().hw.contactor.closed)
    event = await csms.wait_for(
        lambda f: f.action == SEN and f.payload["type"] == "TamperDetectionActivated"
    )
    assert event.payload["techInfo"] == "connector 1: tamper input (input)"
    faulted = await csms.wait_for(
        lambda f: f.action == "StatusNotification" and f.payload["status"] == "Faulted"
    )
    assert faulted.payload["errorCode"] == "OtherError"
    h.rig().fault.clear()
    await h.advance(2)
    h.rig().fault.inject("Tamper")
    await h.settle(lambda: len(events(csms, "TamperDetectionActivated")) == 2)
    assert not h.connector().hw.contactor.closed
