"""OCPP 2.0.1 monitoring over a real WebSocket (N02-N08): SetVariableMonitoring,
ClearVariableMonitoring, SetMonitoringBase, SetMonitoringLevel, GetMonitoringReport pages and
NotifyEvent from monitors and faults."""

from __future__ import annotations

from typing import Any

from controller.dev.devcsms import DevCsms
from controller.ocpp201 import rpc as rpc201
from tests.conftest import STATION_ID, Harness
from tests.e2e.test_e2e_durability import come_back, go_offline
from tests.ocpp201.test_e2e_boot import accepted, start, wait_status

EVSE1 = {"name": "EVSE", "evse": {"id": 1}}
AVAILABILITY = {"name": "AvailabilityState"}
PRECONFIGURED_ID = 101  # EVSE 1 AvailabilityState Delta, 8-Informational


async def ask(csms: DevCsms, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    frame = await csms.call_raw(STATION_ID, action, payload)
    assert frame[0] == 3, frame
    rpc201.validate(3, action, frame[2])
    answer: dict[str, Any] = frame[2]
    return answer


def monitor(
    component: dict[str, Any], variable: dict[str, Any], kind: str, value: float, severity: int
) -> dict[str, Any]:
    return {
        "component": component,
        "variable": variable,
        "type": kind,
        "value": value,
        "severity": severity,
    }


async def report(h: Harness, csms: DevCsms, request_id: int, **filters: Any) -> list[Any]:
    """GetMonitoringReport; the monitors of its NotifyMonitoringReport pages, or the status
    when it is not Accepted."""
    answer = await ask(csms, "GetMonitoringReport", {"requestId": request_id, **filters})
    if answer["status"] != "Accepted":
        return [answer["status"]]

    def pages() -> list[dict[str, Any]]:
        return [
            f.payload
            for f in h.frames("NotifyMonitoringReport")
            if f.payload["requestId"] == request_id
        ]

    await h.settle(lambda: bool(pages()) and not pages()[-1].get("tbc", False))
    sent = pages()
    assert [p["seqNo"] for p in sent] == list(range(len(sent)))
    for payload in sent:
        rpc201.validate(2, "NotifyMonitoringReport", payload)
    return [m for p in sent for m in p["monitor"]]


def events(h: Harness) -> list[dict[str, Any]]:
    out = []
    for frame in h.frames("NotifyEvent"):
        rpc201.validate(2, "NotifyEvent", frame.payload)
        assert frame.payload["seqNo"] == 0
        out += frame.payload["eventData"]
    return out


async def ready(charger: Any, csms: DevCsms) -> Harness:
    h = await start(charger, csms)
    await accepted(h)
    await wait_status(h, 1, "Available")
    return h


async def test_set_report_replace_clear(charger: Any, csms: DevCsms) -> None:
    """TC_N_08/09/10_CS (N04.FR.01/02/08/11): monitors set, ids given by the station;
    TC_N_11_CS, TC_N_37_CS (N04.FR.03/04), TC_N_38_CS (N04.FR.05: a threshold on an option
    list), TC_N_12_CS (N04.FR.14: negative delta), TC_N_13_CS (N04.FR.06: threshold beyond
    maxLimit), TC_N_15_CS (N04.FR.10 Duplicate), TC_N_43_CS (each item its own answer);
    TC_N_47_CS / TC_N_01_CS / TC_N_02_CS / TC_N_03_CS (N02.FR.01/04/05/09-14/16): reports;
    TC_N_40_CS / TC_N_39_CS (N04.FR.12/16); TC_N_18/19_CS (N06.FR.01/02/05)."""
    h = await ready(charger, csms)
    power = {"name": "Power"}
    answer = await ask(
        csms,
        "SetVariableMonitoring",
        {
            "setMonitoringData": [
                monitor(EVSE1, power, "UpperThreshold", 5000, 4),
                monitor(EVSE1, power, "LowerThreshold", -1, 4),  # below minLimit? none: ok
                monitor(EVSE1, power, "UpperThreshold", 1e9, 3),  # beyond the rated power
                monitor({"name": "Nothing"}, power, "Delta", 1, 5),
                monitor(EVSE1, {"name": "unknownVariable"}, "Delta", 1, 5),
                monitor(EVSE1, AVAILABILITY, "UpperThreshold", 1, 5),
                monitor(EVSE1, power, "Delta", -5, 5),
                monitor(EVSE1, power, "UpperThreshold", 6000, 4),
                monitor(EVSE1, power, "Periodic", 60, 7),
                monitor(EVSE1, power, "PeriodicClockAligned", 900, 7),
            ]
        },
    )
    results = answer["setMonitoringResult"]
    assert [r["status"] for r in results] == [
        "Accepted",
        "Accepted",
        "Rejected",
        "UnknownComponent",
        "UnknownVariable",
        "UnsupportedMonitorType",
        "Rejected",
        "Duplicate",
        "Accepted",
        "Accepted",
    ]
    assert results[2]["statusInfo"]["reasonCode"] == "ValueOutOfRange"
    assert all(("id" in r) == (r["status"] == "Accepted") for r in results)
    upper_id = results[0]["id"]
    ids = [r["id"] for r in results if "id" in r]
    assert len(set(ids)) == len(ids)

    every = await report(h, csms, 1)
    by_id = {m["id"]: m for entry in every for m in entry["variableMonitoring"]}
    assert set(ids) | {PRECONFIGURED_ID} <= set(by_id)
    thresholds = await report(h, csms, 2, monitoringCriteria=["ThresholdMonitoring"])
    types = {m["type"] for entry in thresholds for m in entry["variableMonitoring"]}
    assert types == {"UpperThreshold", "LowerThreshold"}
    periodic = await report(h, csms, 3, monitoringCriteria=["PeriodicMonitoring"])
    types = {m["type"] for entry in periodic for m in entry["variableMonitoring"]}
    assert types == {"Periodic", "PeriodicClockAligned"}
    of_evse = await report(h, csms, 4, componentVariable=[{"component": EVSE1}])
    assert {e["variable"]["name"] for e in of_evse} == {"Power", "AvailabilityState"}
    nothing = await report(
        h, csms, 5, componentVariable=[{"component": {"name": "ChargingStation"}}]
    )
    assert nothing == ["EmptyResultSet"]
    # TC_N_03_CS (N02.FR.05/10/13): criteria and componentVariable together.
    wanted = [{"component": EVSE1, "variable": AVAILABILITY}]
    assert await report(
        h, csms, 7, monitoringCriteria=["ThresholdMonitoring"], componentVariable=wanted
    ) == ["EmptyResultSet"]
    (entry,) = await report(
        h, csms, 8, monitoringCriteria=["DeltaMonitoring"], componentVariable=wanted
    )
    assert [m["id"] for m in entry["variableMonitoring"]] == [PRECONFIGURED_ID]

    # Replace by id (same component/variable); another variable is Rejected.
    replaced = await ask(
        csms,
        "SetVariableMonitoring",
        {
            "setMonitoringData": [
                {**monitor(EVSE1, power, "UpperThreshold", 7000, 4), "id": upper_id},
                {**monitor(EVSE1, AVAILABILITY, "Delta", 1, 4), "id": upper_id},
                {**monitor(EVSE1, power, "Delta", 1, 4), "id": 99999},
            ]
        },
    )
    assert [r["status"] for r in replaced["setMonitoringResult"]] == [
        "Accepted",
        "Rejected",
        "Rejected",
    ]
    assert replaced["setMonitoringResult"][0]["id"] == upper_id
    cleared = await ask(csms, "ClearVariableMonitoring", {"id": [upper_id, 424242]})
    assert cleared["clearMonitoringResult"] == [
        {"id": upper_id, "status": "Accepted"},
        {"id": 424242, "status": "NotFound"},
    ]
    again = await report(h, csms, 6, monitoringCriteria=["ThresholdMonitoring"])
    assert upper_id not in {m["id"] for e in again for m in e["variableMonitoring"]}


async def test_base_and_level(charger: Any, csms: DevCsms) -> None:
    """TC_N_05_CS (N03.FR.01/03/04/05), TC_N_06_CS (HardWiredOnly removes the preconfigured
    AvailabilityState monitor), TC_N_41_CS (N03.FR.04, N04.FR.15: a replaced preconfigured
    monitor is custom until FactoryDefault), TC_N_16/17_CS (N05.FR.01/02/03)."""
    h = await ready(charger, csms)
    changed = await ask(
        csms,
        "SetVariableMonitoring",
        {
            "setMonitoringData": [
                {**monitor(EVSE1, AVAILABILITY, "Delta", 1, 9), "id": PRECONFIGURED_ID},
                monitor(EVSE1, {"name": "Power"}, "UpperThreshold", 100, 5),
            ]
        },
    )
    assert [r["status"] for r in changed["setMonitoringResult"]] == ["Accepted", "Accepted"]
    custom_id = changed["setMonitoringResult"][1]["id"]
    (entry,) = await report(
        h, csms, 1, componentVariable=[{"component": EVSE1, "variable": AVAILABILITY}]
    )
    assert entry["variableMonitoring"][0]["severity"] == 9
    assert await ask(csms, "SetMonitoringBase", {"monitoringBase": "All"}) == {"status": "Accepted"}
    ids = {m["id"] for e in await report(h, csms, 2) for m in e["variableMonitoring"]}
    assert {PRECONFIGURED_ID, custom_id} <= ids
    assert await ask(csms, "SetMonitoringBase", {"monitoringBase": "FactoryDefault"}) == {
        "status": "Accepted"
    }
    every = await report(h, csms, 3)
    ids = {m["id"] for e in every for m in e["variableMonitoring"]}
    assert custom_id not in ids and PRECONFIGURED_ID in ids
    (entry,) = await report(
        h, csms, 4, componentVariable=[{"component": EVSE1, "variable": AVAILABILITY}]
    )
    assert entry["variableMonitoring"][0]["severity"] == 8
    assert await ask(csms, "SetMonitoringBase", {"monitoringBase": "HardWiredOnly"}) == {
        "status": "Accepted"
    }
    assert await report(h, csms, 5) == ["EmptyResultSet"]
    assert await ask(csms, "SetMonitoringLevel", {"severity": 4}) == {"status": "Accepted"}
    assert (await ask(csms, "SetMonitoringLevel", {"severity": 10}))["status"] == "Rejected"
    got = await ask(
        csms,
        "GetVariables",
        {
            "getVariableData": [
                {"component": {"name": "MonitoringCtrlr"}, "variable": {"name": name}}
                for name in ("ActiveMonitoringLevel", "ActiveMonitoringBase")
            ]
        },
    )
    values = [r["attributeValue"] for r in got["getVariableResult"]]
    assert values == ["4", "HardWiredOnly"]


async def test_delta_event_and_level(charger: Any, csms: DevCsms) -> None:
    """TC_N_56_CS / TC_N_45_CS (N07.FR.06/07/19): the preconfigured Delta monitor on EVSE 1
    AvailabilityState reports Occupied at the plug-in (trigger Delta, variableMonitoringId,
    eventNotificationType PreconfiguredMonitor); TC_N_16_CS (N07.FR.15): at a level below
    its severity nothing is sent."""
    h = await ready(charger, csms)
    h.plug()
    await h.advance(1)
    await h.settle(lambda: any(e.get("actualValue") == "Occupied" for e in events(h)))
    (event,) = [e for e in events(h) if e.get("variableMonitoringId") == PRECONFIGURED_ID]
    assert event["trigger"] == "Delta"
    assert event["eventNotificationType"] == "PreconfiguredMonitor"
    assert event["component"] == EVSE1 and event["variable"] == AVAILABILITY
    assert await ask(csms, "SetMonitoringLevel", {"severity": 7}) == {"status": "Accepted"}
    h.unplug()
    await h.advance(2)
    await wait_status(h, 1, "Available")
    await h.advance(2)
    assert not any(e.get("actualValue") == "Available" for e in events(h))


async def test_threshold_periodic_and_fault(charger: Any, csms: DevCsms) -> None:
    """N07.FR.16 / N07.FR.02: an UpperThreshold on EVSE 1 Power (sampled only while the
    monitor is set) reports Alerting while charging and cleared after; TC_N_24_CS
    (N08.FR.05/06): a Periodic monitor reports every interval with trigger Periodic;
    TC_N_21_CS: a ground fault is a HardWiredNotification (techCode GroundFailure), cleared
    when it goes."""
    h = await ready(charger, csms)
    answer = await ask(
        csms,
        "SetVariableMonitoring",
        {
            "setMonitoringData": [
                monitor(EVSE1, {"name": "Power"}, "UpperThreshold", 1000, 4),
                monitor(EVSE1, AVAILABILITY, "Periodic", 30, 6),
            ]
        },
    )
    upper_id, periodic_id = [r["id"] for r in answer["setMonitoringResult"]]
    await h.advance(61)
    periodic = [e for e in events(h) if e.get("variableMonitoringId") == periodic_id]
    assert len(periodic) >= 2
    assert all(e["trigger"] == "Periodic" and e["actualValue"] == "Available" for e in periodic)
    h.plug()
    await h.advance(1)
    h.tap()
    await h.settle(lambda: bool(h.frames("TransactionEvent")))
    for _ in range(40):
        await h.advance(1)
        if any(e.get("variableMonitoringId") == upper_id for e in events(h)):
            break
    (alert,) = [e for e in events(h) if e.get("variableMonitoringId") == upper_id]
    assert alert["trigger"] == "Alerting" and "cleared" not in alert
    assert float(alert["actualValue"]) > 1000
    h.tap()
    for _ in range(40):
        await h.advance(1)
        if len([e for e in events(h) if e.get("variableMonitoringId") == upper_id]) == 2:
            break
    *_, back = [e for e in events(h) if e.get("variableMonitoringId") == upper_id]
    assert back["cleared"] is True
    h.rig(1).fault.inject("GroundFailure")
    await h.advance(1)
    await h.settle(lambda: any(e.get("techCode") == "GroundFailure" for e in events(h)))
    h.rig(1).fault.clear()
    await h.advance(1)
    await h.settle(
        lambda: any(e.get("techCode") == "GroundFailure" and e.get("cleared") for e in events(h))
    )
    fault = [e for e in events(h) if e.get("techCode") == "GroundFailure"]
    assert [e["eventNotificationType"] for e in fault] == ["HardWiredNotification"] * 2


async def test_offline_queueing(charger: Any, csms: DevCsms) -> None:
    """TC_N_22_CS (N07.FR.04): with OfflineQueuingSeverity 8 the preconfigured monitor's
    event (8-Informational) of a plug-in while offline is delivered after the reconnect;
    TC_N_23_CS: at 7 it is not queued."""
    h = await ready(charger, csms)
    got = await ask(
        csms,
        "SetVariables",
        {
            "setVariableData": [
                {
                    "component": {"name": "MonitoringCtrlr"},
                    "variable": {"name": "OfflineQueuingSeverity"},
                    "attributeValue": "8",
                }
            ]
        },
    )
    assert got["setVariableResult"][0]["attributeStatus"] == "Accepted"
    await go_offline(h, csms)
    h.plug()
    await h.advance(1)
    await come_back(h, csms)
    await h.settle(lambda: any(e.get("actualValue") == "Occupied" for e in events(h)))
    got = await ask(
        csms,
        "SetVariables",
        {
            "setVariableData": [
                {
                    "component": {"name": "MonitoringCtrlr"},
                    "variable": {"name": "OfflineQueuingSeverity"},
                    "attributeValue": "7",
                }
            ]
        },
    )
    await go_offline(h, csms)
    h.unplug()
    await h.advance(1)
    await come_back(h, csms)
    await h.advance(2)
    assert not any(e.get("actualValue") == "Available" for e in events(h))


async def test_a_fault_during_a_transaction_names_it(charger: Any, csms: DevCsms) -> None:
    """N07 EventDataType.transactionId: the HardWiredNotification of a fault on an EVSE
    with a running transaction carries that transaction's id (the one of its
    TransactionEvents); a fault without a transaction carries none."""
    h = await ready(charger, csms)
    h.plug()
    await h.advance(1)
    h.tap()
    await h.settle(lambda: bool(h.frames("TransactionEvent")))
    tx_id = h.frames("TransactionEvent")[0].payload["transactionInfo"]["transactionId"]
    h.rig(1).fault.inject("GroundFailure")
    await h.advance(1)
    await h.settle(lambda: any(e.get("techCode") == "GroundFailure" for e in events(h)))
    (fault,) = [e for e in events(h) if e.get("techCode") == "GroundFailure"]
    assert fault["transactionId"] == tx_id
    h.rig(1).fault.clear()
    h.unplug()
    await h.advance(2)
    await h.settle(lambda: h.connector().tx_key is None)
    h.rig(1).fault.inject("OverCurrentFailure")
    await h.advance(1)
    await h.settle(lambda: any(e.get("techCode") == "OverCurrentFailure" for e in events(h)))
    (idle,) = [e for e in events(h) if e.get("techCode") == "OverCurrentFailure"]
    assert "transactionId" not in idle
