"""The dev CSMS speaks OCPP 2.0.1: subprotocol choice, schema checks, answers, records, and
`evsed dev-csms --ocpp 2.0.1`."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from controller.dev.devcsms import DevCsms

BOOT = {
    "reason": "PowerUp",
    "chargingStation": {"vendorName": "evsed", "model": "test"},
}


async def call(ws: ClientConnection, uid: str, action: str, payload: Any) -> list[Any]:
    await ws.send(json.dumps([2, uid, action, payload]))
    answer: list[Any] = json.loads(await ws.recv())
    assert answer[1] == uid
    return answer


async def test_picks_the_stations_first_version_by_default(csms: DevCsms) -> None:
    for offer, picked in (
        (["ocpp2.0.1", "ocpp1.6"], "ocpp2.0.1"),
        (["ocpp1.6", "ocpp2.0.1"], "ocpp1.6"),
        (["ocpp2.1", "ocpp2.0.1"], "ocpp2.0.1"),
    ):
        async with connect(f"{csms.url}/CP1", subprotocols=offer) as ws:  # type: ignore[arg-type]
            assert ws.subprotocol == picked


async def test_a_configured_order_wins() -> None:
    async with DevCsms(ocpp_versions=("2.0.1", "1.6")) as csms:
        offer: Any = ["ocpp1.6", "ocpp2.0.1"]
        async with connect(f"{csms.url}/CP1", subprotocols=offer) as ws:
            assert ws.subprotocol == "ocpp2.0.1"


async def test_201_session_answers_checks_and_records(csms: DevCsms) -> None:
    """B01.FR.02 (the CSMS answers the boot), B02.FR.09 / B03.FR.07 (before Accepted any
    other CALL is a SecurityError), schema checks of the ocpp library, and the
    minimal answer to a station message the dev CSMS has no logic for."""
    csms.boot_status = "Pending"
    offer: Any = ["ocpp2.0.1"]
    async with connect(f"{csms.url}/CP1", subprotocols=offer) as ws:
        hb = await call(ws, "1", "Heartbeat", {})
        assert hb[0] == 4 and hb[2] == "SecurityError"
        boot = await call(ws, "2", "BootNotification", BOOT)
        assert boot[0] == 3 and boot[2]["status"] == "Pending" and boot[2]["interval"] > 0
        csms.boot_status = "Accepted"
        boot = await call(ws, "3", "BootNotification", BOOT)
        assert boot[2]["status"] == "Accepted"
        bad = await call(ws, "4", "BootNotification", {"reason": "PowerUp"})
        # The ocpp library's choice for a missing field (the station says
        # OccurrenceConstraintViolation, controller/ocpp201/rpc.py).
        assert bad[0] == 4 and bad[2] == "ProtocolError"
        status = {
            "timestamp": "2026-01-01T00:00:00Z",
            "connectorStatus": "Occupied",
            "evseId": 1,
            "connectorId": 1,
        }
        assert (await call(ws, "5", "StatusNotification", status))[:3] == [3, "5", {}]
        hb = await call(ws, "6", "Heartbeat", {})
        assert hb[0] == 3 and "currentTime" in hb[2]
        event = {
            "generatedAt": "2026-01-01T00:00:00Z",
            "seqNo": 0,
            "eventData": [
                {
                    "eventId": 1,
                    "timestamp": "2026-01-01T00:00:00Z",
                    "trigger": "Delta",
                    "actualValue": "Occupied",
                    "eventNotificationType": "HardWiredNotification",
                    "component": {"name": "Connector"},
                    "variable": {"name": "AvailabilityState"},
                }
            ],
        }
        assert (await call(ws, "7", "NotifyEvent", event))[0] == 3
        auth = await call(ws, "8", "Authorize", {"idToken": {"idToken": "AB", "type": "ISO14443"}})
        assert auth[2] == {"idTokenInfo": {"status": "Accepted"}}
    assert [f.action for f in csms.frames("CP1")][:3] == [
        "Heartbeat",
        "BootNotification",
        "BootNotification",
    ]
    assert csms.frames("CP1", "StatusNotification")[0].payload["connectorStatus"] == "Occupied"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_cli_dev_csms_ocpp_201() -> None:
    """`evsed dev-csms --ocpp 2.0.1`: speaks 2.0.1 only, whatever else is offered."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "controller.cli",
        "dev-csms",
        "--port",
        str(port),
        "--ocpp",
        "2.0.1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert f"ws://127.0.0.1:{port}/ocpp" in line.decode()
        assert "OCPP 2.0.1" in (await asyncio.wait_for(proc.stdout.readline(), 5)).decode()
        offer: Any = ["ocpp1.6", "ocpp2.0.1"]
        async with connect(f"ws://127.0.0.1:{port}/ocpp/CP1", subprotocols=offer) as ws:
            assert ws.subprotocol == "ocpp2.0.1"
            boot = await call(ws, "1", "BootNotification", BOOT)
            assert boot[2]["status"] == "Accepted"
    finally:
        proc.terminate()
        await proc.wait()
