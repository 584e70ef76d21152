"""Tests for the development CSMS, driven by a raw websockets client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from ocpp.exceptions import OCPPError
from ocpp.v16 import call
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from controller.dev.devcsms import (
    CsmsEvent,
    DevCsms,
    FrameReceived,
    FrameSent,
    StationConnected,
    StationDisconnected,
    format_event,
    station_id_from_path,
)

OCPP16 = [Subprotocol("ocpp1.6")]
BOOT = {"chargePointVendor": "evsed", "chargePointModel": "dev"}


@pytest.fixture
async def csms() -> AsyncIterator[DevCsms]:
    async with DevCsms(host="127.0.0.1", port=0) as server:
        yield server


async def _connect(csms: DevCsms, station_id: str = "CP1", **kwargs: Any) -> ClientConnection:
    return await connect(f"{csms.url}/{station_id}", subprotocols=OCPP16, **kwargs)


async def _call(ws: ClientConnection, uid: str, action: str, payload: dict[str, Any]) -> list[Any]:
    await ws.send(json.dumps([2, uid, action, payload]))
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


async def _answer_calls(ws: ClientConnection, answers: dict[str, list[Any]]) -> None:
    """Client side: answer each CSMS CALL by action with [3, payload] or [4, code, ...]."""
    async for text in ws:
        msg = json.loads(text)
        if msg[0] != 2:
            continue
        answer = answers[msg[2]]
        if answer[0] == 3:
            await ws.send(json.dumps([3, msg[1], answer[1]]))
        else:
            await ws.send(json.dumps([4, msg[1], answer[1], "nope", {}]))


def test_station_id_from_path() -> None:
    assert station_id_from_path("/ocpp/CP1") == "CP1"
    assert station_id_from_path("/ocpp/CP%201/") == "CP 1"
    assert station_id_from_path("/CP2?x=1") == "CP2"
    assert station_id_from_path("/") == ""


async def test_port_and_url(csms: DevCsms) -> None:
    assert csms.port > 0
    assert csms.url == f"ws://127.0.0.1:{csms.port}/ocpp"


async def test_boot_notification_accepted(csms: DevCsms) -> None:
    async with await _connect(csms) as ws:
        assert ws.subprotocol == "ocpp1.6"
        await csms.wait_connected("CP1")
        assert csms.connected("CP1")
        resp = await _call(ws, "b1", "BootNotification", BOOT)
    assert resp[0] == 3 and resp[1] == "b1"
    assert resp[2]["status"] == "Accepted"
    assert resp[2]["interval"] == 300
    assert datetime.fromisoformat(resp[2]["currentTime"]).utcoffset() is not None
    frame = csms.received[0]
    assert (frame.station_id, frame.action, frame.unique_id) == ("CP1", "BootNotification", "b1")
    assert frame.payload == BOOT
    assert csms.sent_results[0].action == "BootNotification"
    assert csms.sent_results[0].payload["status"] == "Accepted"
    assert csms.max_outstanding_calls == 1
    await csms.wait_disconnected("CP1")
    assert not csms.connected("CP1")


async def test_boot_status_runtime_change() -> None:
    async with DevCsms(boot_status="Pending", boot_retry_interval_s=7) as csms:
        async with await _connect(csms) as ws:
            resp = await _call(ws, "1", "BootNotification", BOOT)
            assert resp[2]["status"] == "Pending" and resp[2]["interval"] == 7
            csms.boot_status = "Rejected"
            resp = await _call(ws, "2", "BootNotification", BOOT)
            assert resp[2]["status"] == "Rejected" and resp[2]["interval"] == 7
            csms.boot_status = "Accepted"
            resp = await _call(ws, "3", "BootNotification", BOOT)
            assert resp[2]["status"] == "Accepted" and resp[2]["interval"] == 300


async def test_core_actions(csms: DevCsms) -> None:
    async with await _connect(csms) as ws:
        resp = await _call(ws, "1", "Heartbeat", {})
        assert datetime.fromisoformat(resp[2]["currentTime"]).utcoffset() is not None
        status = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
        assert await _call(ws, "2", "StatusNotification", status) == [3, "2", {}]
        resp = await _call(ws, "3", "Authorize", {"idTag": "04A1B2C3"})
        assert resp[2] == {"idTagInfo": {"status": "Accepted"}}
        start = {
            "connectorId": 1,
            "idTag": "04A1B2C3",
            "meterStart": 0,
            "timestamp": "2024-01-01T00:00:00Z",
        }
        resp = await _call(ws, "4", "StartTransaction", start)
        assert resp[2] == {"transactionId": 1, "idTagInfo": {"status": "Accepted"}}
        resp = await _call(ws, "5", "StartTransaction", start)
        assert resp[2]["transactionId"] == 2
        meter = {
            "connectorId": 1,
            "transactionId": 1,
            "meterValue": [
                {"timestamp": "2024-01-01T00:01:00Z", "sampledValue": [{"value": "12"}]}
            ],
        }
        assert await _call(ws, "6", "MeterValues", meter) == [3, "6", {}]
        stop = {"transactionId": 1, "meterStop": 12, "timestamp": "2024-01-01T00:02:00Z"}
        assert await _call(ws, "7", "StopTransaction", stop) == [3, "7", {}]
        resp = await _call(ws, "8", "StopTransaction", {**stop, "idTag": "04A1B2C3"})
        assert resp[2] == {"idTagInfo": {"status": "Accepted"}}
        resp = await _call(ws, "9", "DataTransfer", {"vendorId": "acme"})
        assert resp[2] == {"status": "UnknownVendorId"}
        resp = await _call(ws, "10", "DiagnosticsStatusNotification", {"status": "Idle"})
        assert resp == [3, "10", {}]
        resp = await _call(ws, "11", "FirmwareStatusNotification", {"status": "Installed"})
        assert resp == [3, "11", {}]
    assert [f.action for f in csms.received][:3] == ["Heartbeat", "StatusNotification", "Authorize"]
    assert csms.received[3].payload == start
    assert len(csms.sent_results) == 11
    assert csms.max_outstanding_calls == 1


async def test_transaction_ids_are_per_instance() -> None:
    start = {"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": "2024-01-01T00:00:00Z"}
    for _ in range(2):
        async with DevCsms() as csms, await _connect(csms) as ws:
            resp = await _call(ws, "1", "StartTransaction", start)
            assert resp[2]["transactionId"] == 1


async def test_id_tag_lists() -> None:
    async with DevCsms(accept_id_tags={"GOOD", "BAD"}, invalid_id_tags={"BAD"}) as csms:
        async with await _connect(csms) as ws:
            for uid, tag, expected in [
                ("1", "GOOD", "Accepted"),
                ("2", "BAD", "Invalid"),
                ("3", "OTHER", "Invalid"),
            ]:
                resp = await _call(ws, uid, "Authorize", {"idTag": tag})
                assert resp[2]["idTagInfo"]["status"] == expected
            start = {
                "connectorId": 1,
                "idTag": "OTHER",
                "meterStart": 0,
                "timestamp": "2024-01-01T00:00:00Z",
            }
            resp = await _call(ws, "4", "StartTransaction", start)
            assert resp[2] == {"transactionId": 1, "idTagInfo": {"status": "Invalid"}}


async def test_schema_violation_gets_callerror(csms: DevCsms) -> None:
    async with await _connect(csms) as ws:
        resp = await _call(ws, "x", "BootNotification", {"chargePointVendor": "evsed"})
        assert resp[0] == 4 and resp[1] == "x"
        assert isinstance(resp[2], str) and resp[2]
        # The CALLERROR counts as the answer.
        assert csms.sent_results[-1].message_type == 4
        assert csms.outstanding_calls("CP1") == 0
        # Invalid JSON is tolerated and the session keeps working.
        await ws.send("this is not json")
        resp = await _call(ws, "y", "Heartbeat", {})
        assert resp[0] == 3


async def test_any_path_takes_last_segment(csms: DevCsms) -> None:
    async with await connect(f"ws://127.0.0.1:{csms.port}/some/where/CP9", subprotocols=OCPP16):
        await csms.wait_connected("CP9")


async def test_missing_subprotocol_rejected(csms: DevCsms) -> None:
    with pytest.raises(InvalidStatus) as info:
        await connect(f"{csms.url}/CP1")
    assert info.value.response.status_code == 400


async def test_basic_auth() -> None:
    async with DevCsms(passwords={"CP1": "s3cret"}) as csms:
        base = f"127.0.0.1:{csms.port}/ocpp/CP1"
        async with await connect(f"ws://CP1:s3cret@{base}", subprotocols=OCPP16) as ws:
            resp = await _call(ws, "1", "Heartbeat", {})
            assert resp[0] == 3
        for uri, status in [
            (f"ws://CP1:wrong@{base}", 401),
            (f"ws://{base}", 401),
            (f"ws://CP2:s3cret@{base}", 401),  # user must equal the station id
            (f"ws://CP2:s3cret@127.0.0.1:{csms.port}/ocpp/CP2", 404),  # unknown station
        ]:
            with pytest.raises(InvalidStatus) as info:
                await connect(uri, subprotocols=OCPP16)
            assert info.value.response.status_code == status, uri
        with pytest.raises(InvalidStatus) as info:
            await connect(f"ws://{base}", subprotocols=OCPP16)
        assert "Basic" in info.value.response.headers["WWW-Authenticate"]


async def test_refuse_connections(csms: DevCsms) -> None:
    csms.refuse_connections = True
    with pytest.raises(InvalidStatus) as info:
        await _connect(csms)
    assert info.value.response.status_code == 503
    csms.refuse_connections = False
    async with await _connect(csms):
        await csms.wait_connected("CP1")


async def test_black_hole(csms: DevCsms) -> None:
    async with await _connect(csms) as ws:
        csms.black_hole = True
        await ws.send(json.dumps([2, "lost", "Heartbeat", {}]))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.3)
        frame = await csms.wait_for(lambda f: f.unique_id == "lost", timeout_s=1)
        assert frame.black_holed
        assert csms.sent_results == []
        assert csms.outstanding_calls("CP1") == 0
        csms.black_hole = False
        resp = await _call(ws, "next", "Heartbeat", {})
        assert resp[1] == "next"
    assert csms.max_outstanding_calls == 1


async def test_error_actions(csms: DevCsms) -> None:
    start = {"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": "2024-01-01T00:00:00Z"}
    csms.error_actions["StartTransaction"] = "InternalError"
    csms.error_actions_once["Heartbeat"] = "GenericError"
    async with await _connect(csms) as ws:
        resp = await _call(ws, "1", "StartTransaction", start)
        assert resp[:3] == [4, "1", "InternalError"]
        resp = await _call(ws, "2", "StartTransaction", start)
        assert resp[:3] == [4, "2", "InternalError"]
        resp = await _call(ws, "3", "Heartbeat", {})
        assert resp[:3] == [4, "3", "GenericError"]
        resp = await _call(ws, "4", "Heartbeat", {})
        assert resp[0] == 3
        del csms.error_actions["StartTransaction"]
        resp = await _call(ws, "5", "StartTransaction", start)
        assert resp[2]["transactionId"] == 1  # errors did not consume ids
    errors = [f for f in csms.sent_results if f.message_type == 4]
    assert [(f.action, f.error_code) for f in errors] == [
        ("StartTransaction", "InternalError"),
        ("StartTransaction", "InternalError"),
        ("Heartbeat", "GenericError"),
    ]


async def test_max_outstanding_calls_counts_pipelined_calls(csms: DevCsms) -> None:
    async with await _connect(csms) as ws:
        await _call(ws, "0", "Heartbeat", {})
        assert csms.max_outstanding_calls == 1
        await ws.send(json.dumps([2, "a", "BootNotification", BOOT]))
        await ws.send(json.dumps([2, "b", "Heartbeat", {}]))
        answers = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
    assert sorted(a[1] for a in answers) == ["a", "b"]
    assert csms.max_outstanding_calls == 2


async def test_call_round_trip(csms: DevCsms) -> None:
    async with await _connect(csms) as ws:
        await csms.wait_connected("CP1")
        answerer = asyncio.create_task(
            _answer_calls(
                ws,
                {
                    "RemoteStartTransaction": [3, {"status": "Accepted"}],
                    "Reset": [4, "NotSupported"],
                    "ChangeConfiguration": [4, "FormationViolation"],
                    "TriggerMessage": [3, {"status": "Accepted"}],
                },
            )
        )
        result = await csms.call(
            "CP1", call.RemoteStartTransaction(id_tag="04A1B2C3", connector_id=1)
        )
        assert result.status == "Accepted"
        sent = csms.sent_calls[-1]
        assert sent.action == "RemoteStartTransaction"
        assert sent.payload == {"idTag": "04A1B2C3", "connectorId": 1}
        assert csms.received_responses[-1].payload == {"status": "Accepted"}

        with pytest.raises(OCPPError):
            await csms.call("CP1", call.Reset(type="Hard"))

        # Schema-violating payload (key must be a string, value is missing) goes out unvalidated.
        raw = await csms.call_raw("CP1", "ChangeConfiguration", {"key": 5})
        assert raw[0] == 4 and raw[2] == "FormationViolation"

        # A frame sent as text: its answer is not claimed by call()/call_raw().
        await csms.send_text("CP1", '[2,"t1","TriggerMessage",{"requestedMessage":"Heartbeat"}]')
        assert await csms.next_raw_response("CP1", timeout_s=5) == [3, "t1", {"status": "Accepted"}]
        answerer.cancel()


async def test_call_timeout_and_unknown_station(csms: DevCsms) -> None:
    with pytest.raises(ConnectionError):
        await csms.call("nobody", call.Reset(type="Soft"))
    async with await _connect(csms):
        await csms.wait_connected("CP1")
        with pytest.raises(TimeoutError):
            await csms.call_raw("CP1", "Reset", {"type": "Soft"}, timeout_s=0.2)
        with pytest.raises(TimeoutError):
            await csms.next_raw_response("CP1", timeout_s=0.1)


async def test_wait_for_future_frame(csms: DevCsms) -> None:
    waiter = asyncio.create_task(csms.wait_for(lambda f: f.action == "Authorize", timeout_s=5))
    async with await _connect(csms) as ws:
        await _call(ws, "1", "Heartbeat", {})
        assert not waiter.done()
        await _call(ws, "2", "Authorize", {"idTag": "X"})
        frame = await waiter
    assert frame.unique_id == "2" and frame.payload == {"idTag": "X"}
    with pytest.raises(TimeoutError):
        await csms.wait_for(lambda f: f.action == "MeterValues", timeout_s=0.1)


async def test_disconnect_and_reconnect(csms: DevCsms) -> None:
    ws = await _connect(csms)
    await csms.wait_connected("CP1")
    await csms.disconnect("CP1")
    assert not csms.connected("CP1")
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 5)
    async with await _connect(csms) as ws2:
        await csms.wait_connected("CP1")
        # A second connection for the same station replaces the first.
        async with await _connect(csms) as ws3:
            await csms.wait_connected("CP1")
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws2.recv(), 5)
            resp = await _call(ws3, "1", "Heartbeat", {})
            assert resp[0] == 3
            assert csms.connected("CP1")
    await csms.disconnect("CP1", abort=True)  # no-op once gone


async def test_events_and_format() -> None:
    events: list[CsmsEvent] = []
    async with DevCsms(on_event=events.append) as csms:
        async with await _connect(csms) as ws:
            start = {"connectorId": 1, "idTag": "04A1B2C3", "meterStart": 0}
            csms.black_hole = True  # payload is not schema-valid; just record and format it
            await ws.send(json.dumps([2, "1", "StartTransaction", start]))
            await csms.wait_for(lambda f: f.action == "StartTransaction", timeout_s=5)
            csms.black_hole = False
            await _call(ws, "2", "Heartbeat", {})
        await csms.wait_disconnected("CP1")
    kinds = [type(e) for e in events]
    assert kinds[0] is StationConnected and kinds[-1] is StationDisconnected
    assert FrameReceived in kinds and FrameSent in kinds
    lines = [format_event(e) for e in events]
    assert "→ CSMS  StartTransaction {connectorId: 1, idTag: 04A1B2C3, meterStart: 0}" in lines
    assert any(line.startswith("← CSMS  Heartbeat.conf {currentTime: ") for line in lines)
    assert format_event(events[1], with_station=True).startswith("[CP1] → CSMS")
    assert "CP1" in lines[0] and "CP1" in lines[-1]


async def test_stop_closes_clients() -> None:
    csms = DevCsms()
    await csms.start()
    ws = await _connect(csms)
    await csms.wait_connected("CP1")
    await csms.stop()
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 5)
    assert not csms.connected("CP1")
