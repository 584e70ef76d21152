"""OCPP-J 2.0.1 RPC framework (part 4 4.2.3, 4.3, 4.4) on the station side, over a real
WebSocket: unreadable, malformed and unknown frames get the 2.0.1 CALLERROR codes, with
"-1" as the message id when it cannot be read; requests are schema-checked first."""

from __future__ import annotations

from typing import Any

import pytest

from controller.dev.devcsms import DevCsms
from controller.ocpp201 import rpc as rpc201
from tests.conftest import STATION_ID, Harness


@pytest.fixture
async def station(charger: Any, csms: DevCsms) -> Harness:
    h: Harness = await charger(csms, wait_accepted=False, ocpp_version="2.0.1")
    await csms.wait_connected(STATION_ID, timeout_s=5)
    port = h.app.port
    await h.settle(lambda: port is not None and port.connection_state() == "accepted")
    return h


async def error_of(csms: DevCsms, text: str) -> list[Any]:
    await csms.send_text(STATION_ID, text)
    frame = await csms.next_raw_response(STATION_ID, timeout_s=5)
    assert frame[0] == 4 and len(frame) == 5 and frame[4] == {}
    return frame


@pytest.mark.parametrize(
    ("text", "message_id", "code"),
    [
        ("not json at all", "-1", "FormatViolation"),
        ('[2,"id-17","Heartbeat",{', "id-17", "FormatViolation"),
        ('{"a": 1}', "-1", "RpcFrameworkError"),
        ("[]", "-1", "RpcFrameworkError"),
        ('[2,"id-18","Heartbeat"]', "id-18", "RpcFrameworkError"),
        ('[2, 5, "Heartbeat", {}]', "-1", "RpcFrameworkError"),
        ('[2,"' + "x" * 37 + '","Heartbeat",{}]', "x" * 37, "RpcFrameworkError"),
        ('[7,"id-19",{}]', "id-19", "MessageTypeNotSupported"),
    ],
)
async def test_unreadable_and_malformed_frames(
    station: Harness, csms: DevCsms, text: str, message_id: str, code: str
) -> None:
    """4.2.3: a CALLERROR for a corrupt message, "-1" when the message id cannot be read;
    4.3 RpcFrameworkError for what is no valid RPC request; 4.4 MessageTypeNotSupported."""
    frame = await error_of(csms, text)
    assert frame[1] == message_id
    assert frame[2] == code
    assert code in rpc201.ERROR_CODES


FULL = {"requestId": 1, "reportBase": "FullInventory"}


@pytest.mark.parametrize(
    ("action", "payload", "code"),
    [
        ("FlyToTheMoon", {}, "NotImplemented"),  # not an OCPP 2.0.1 action
        # A Local Controller's action: a charging station does not support it.
        (
            "PublishFirmware",
            {"location": "http://x/fw", "checksum": "0", "requestId": 1},
            "NotSupported",
        ),
        ("GetBaseReport", {"requestId": 1}, "OccurrenceConstraintViolation"),
        ("GetBaseReport", {**FULL, "requestId": "1"}, "TypeConstraintViolation"),
        ("GetBaseReport", {**FULL, "reportBase": "Everything"}, "PropertyConstraintViolation"),
        ("GetBaseReport", {**FULL, "x": 1}, "FormatViolation"),
        ("Reset", [], "FormatViolation"),
    ],
)
async def test_requests_are_checked_then_not_supported(
    station: Harness, csms: DevCsms, action: str, payload: Any, code: str
) -> None:
    """Unknown actions are NotImplemented ("not known by receiver"); a 2.0.1 action is
    schema-checked first (the 2.0.1 code of the violation), and a valid one that this
    station does not implement yet is NotSupported ("recognized but not supported")."""
    frame = await csms.call_raw(STATION_ID, action, payload)
    assert frame[0] == 4
    assert frame[2] == code


async def test_station_frames_are_valid_201(station: Harness, csms: DevCsms) -> None:
    """Everything the station sent passed the dev CSMS's 2.0.1 schema check (no CALLERROR
    from the CSMS) and every answer it got was a CALLRESULT."""
    await station.settle(lambda: len(station.frames("StatusNotification")) >= 1)
    assert [r.error_code for r in csms.sent_results if r.error_code] == []
    for frame in csms.received:
        rpc201.validate(2, frame.action, frame.payload)


async def test_data_transfer_unknown_vendor(station: Harness, csms: DevCsms) -> None:
    """P01.FR.05: evsed implements no vendor extension: any vendorId is UnknownVendorId."""
    request = {"vendorId": "com.example.widget", "messageId": "Ping", "data": {"x": 1}}
    frame = await csms.call_raw(STATION_ID, "DataTransfer", request)
    assert frame[0] == 3 and frame[2] == {"status": "UnknownVendorId"}
    rpc201.validate(3, "DataTransfer", frame[2])
