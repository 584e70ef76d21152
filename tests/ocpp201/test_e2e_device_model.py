"""The 2.0.1 device model over a real WebSocket (B05-B08): GetVariables, SetVariables,
GetBaseReport and GetReport from the dev CSMS, answered by the charger's model, reports sent
as NotifyReport pages; the heartbeat follows OCPPCommCtrlr.HeartbeatInterval."""

from __future__ import annotations

from typing import Any

from controller.dev.devcsms import DevCsms
from controller.ocpp201 import rpc as rpc201
from tests.conftest import STATION_ID
from tests.ocpp201.test_e2e_boot import accepted, advance_until, start, wait_status

HEARTBEAT = {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}


async def result(csms: DevCsms, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    frame = await csms.call_raw(STATION_ID, action, payload)
    assert frame[0] == 3, frame
    rpc201.validate(3, action, frame[2])  # the answer is valid 2.0.1
    answer: dict[str, Any] = frame[2]
    return answer


async def test_get_variables_reads_the_interval_of_the_boot(charger: Any, csms: DevCsms) -> None:
    """TC_B_06_CS (B06.FR.01, B06.FR.02) and B01.FR.04: the HeartbeatInterval the charger
    uses is the one of the accepted boot; unknown names get UnknownComponent/Variable."""
    csms.heartbeat_interval_s = 90
    h = await start(charger, csms)
    await accepted(h)
    answer = await result(
        csms,
        "GetVariables",
        {
            "getVariableData": [
                HEARTBEAT,
                {"component": {"name": "Teleporter"}, "variable": {"name": "Range"}},
                {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "Warp"}},
            ]
        },
    )
    got = [(r["attributeStatus"], r.get("attributeValue")) for r in answer["getVariableResult"]]
    assert got == [("Accepted", "90"), ("UnknownComponent", None), ("UnknownVariable", None)]


async def test_set_heartbeat_interval_moves_the_heartbeat(charger: Any, csms: DevCsms) -> None:
    """TC_B_09_CS / TC_B_10_CS (B05.FR.01, B05.FR.02, B05.FR.05): SetVariables of a
    read-write value is Accepted and the charger follows it (G02.FR.01); a ReadOnly value
    is Rejected; an out-of-range value is Rejected and nothing changes."""
    csms.heartbeat_interval_s = 300
    h = await start(charger, csms)
    await accepted(h)
    await wait_status(h, 1, "Available")
    answer = await result(
        csms,
        "SetVariables",
        {
            "setVariableData": [
                {**HEARTBEAT, "attributeValue": "60"},
                {
                    "component": {"name": "DeviceDataCtrlr"},
                    "variable": {"name": "ItemsPerMessage", "instance": "GetReport"},
                    "attributeValue": "1",
                },
            ]
        },
    )
    statuses = [r["attributeStatus"] for r in answer["setVariableResult"]]
    assert statuses == ["Accepted", "Rejected"]
    too_small = {"setVariableData": [{**HEARTBEAT, "attributeValue": "0"}]}
    answer = await result(csms, "SetVariables", too_small)
    assert answer["setVariableResult"][0]["attributeStatus"] == "Rejected"
    beat_s = await advance_until(h, lambda: len(h.frames("Heartbeat")) == 1, limit_s=400)
    assert 58 <= beat_s <= 62
    # Persistent: the value is what a GetVariables reads now.
    got = await result(csms, "GetVariables", {"getVariableData": [HEARTBEAT]})
    assert got["getVariableResult"][0]["attributeValue"] == "60"


async def test_full_inventory_in_pages(charger: Any, csms: DevCsms) -> None:
    """TC_B_12_CS (B07.FR.01, B07.FR.03, B07.FR.04, B07.FR.10): GetBaseReport FullInventory is
    Accepted, then NotifyReport pages with the requestId, seqNo from 0 without gaps, tbc on
    all but the last; the station's EVSE, connector and required controllers are in it."""
    h = await start(charger, csms, connectors=2)
    await accepted(h)
    answer = await result(csms, "GetBaseReport", {"requestId": 7, "reportBase": "FullInventory"})
    assert answer == {"status": "Accepted"}

    def done() -> bool:
        pages = h.frames("NotifyReport")
        return bool(pages) and not pages[-1].payload["tbc"]

    await h.settle(done)
    pages = [f.payload for f in h.frames("NotifyReport")]
    assert [p["seqNo"] for p in pages] == list(range(len(pages)))
    assert {p["requestId"] for p in pages} == {7}
    assert all(p["tbc"] for p in pages[:-1])
    data = [d for p in pages for d in p.get("reportData", [])]
    components = {(d["component"]["name"], d["component"].get("evse", {}).get("id")) for d in data}
    assert {("EVSE", 1), ("EVSE", 2), ("Connector", 1), ("OCPPCommCtrlr", None)} <= components
    assert [r.error_code for r in csms.sent_results if r.error_code] == []


async def test_get_report_by_criteria_and_an_empty_result(charger: Any, csms: DevCsms) -> None:
    """TC_B_14_CS / TC_B_18_CS (B08.FR.01, B08.FR.15): GetReport for one variable is
    Accepted and reported; a filter that matches nothing is EmptyResultSet, no report."""
    h = await start(charger, csms)
    await accepted(h)
    answer = await result(csms, "GetReport", {"requestId": 3, "componentVariable": [HEARTBEAT]})
    assert answer == {"status": "Accepted"}
    await h.settle(lambda: len(h.frames("NotifyReport")) == 1)
    (page,) = [f.payload for f in h.frames("NotifyReport")]
    assert [d["variable"]["name"] for d in page["reportData"]] == ["HeartbeatInterval"]
    empty = await result(
        csms,
        "GetReport",
        {"requestId": 4, "componentVariable": [{"component": {"name": "Teleporter"}}]},
    )
    assert empty == {"status": "EmptyResultSet"}
