"""OCPP 2.0.1 transactions over a real WebSocket against the dev CSMS (E01-E14):
TransactionEvent Started / Updated / Ended with gap-free seqNo and the charger's own
transactionId, trigger and stopped reasons, offline delivery in order, retries, the
idTokenInfo of the response, and GetTransactionStatus."""

from __future__ import annotations

from typing import Any

from controller.dev.devcsms import DevCsms
from controller.ocpp201 import rpc as rpc201
from tests.conftest import CARD, STATION_ID, Harness
from tests.e2e.test_e2e_durability import come_back, go_offline
from tests.ocpp201.test_e2e_boot import accepted, client, start, wait_status


def events(h: Harness) -> list[dict[str, Any]]:
    """The TransactionEvent payloads the CSMS received (also repeated ones)."""
    return [f.payload for f in h.frames("TransactionEvent")]


def answered_events(csms: DevCsms) -> list[dict[str, Any]]:
    """TransactionEvent payloads the CSMS confirmed (a CALLRESULT), in the order received."""
    ok = {r.unique_id for r in csms.sent_results if r.error_code is None}
    return [
        f.payload for f in csms.received if f.action == "TransactionEvent" and f.unique_id in ok
    ]


def energy_wh(event: dict[str, Any], context: str | None = None) -> int | None:
    for mv in event.get("meterValue", []):
        for sv in mv["sampledValue"]:
            if sv.get("measurand") == "Energy.Active.Import.Register" and (
                context is None or sv.get("context") == context
            ):
                return int(sv["value"])
    return None


def assert_one_transaction(sent: list[dict[str, Any]]) -> str:
    """Started first, Ended last, Updated between; one transactionId; seqNo 0, 1, 2, ...
    without gaps or repeats (E01.FR.07, Part 2 E 1.3.2); every payload schema-valid."""
    assert sent, "no TransactionEvent"
    for payload in sent:
        rpc201.validate(2, "TransactionEvent", payload)
    kinds = [e["eventType"] for e in sent]
    assert kinds[0] == "Started" and kinds[-1] == "Ended", kinds
    assert set(kinds[1:-1]) <= {"Updated"}, kinds
    assert [e["seqNo"] for e in sent] == list(range(len(sent)))
    ids = {e["transactionInfo"]["transactionId"] for e in sent}
    assert len(ids) == 1, ids
    (tx_id,) = ids
    assert 0 < len(tx_id) <= 36
    return str(tx_id)


async def charging(h: Harness) -> None:
    await h.settle(lambda: h.connector().hw.contactor.closed)


async def test_cable_first_session_started_updated_ended(charger: Any, csms: DevCsms) -> None:
    """TC_E_01_CS / TC_E_03_CS (E01.FR.05, E01.FR.09, E01.FR.16, E03.FR.01, E02.FR.10) and
    TC_E_07_CS / TC_E_15_CS (E06, E07.FR.02): plug, then the card: Started with
    triggerReason Authorized, the evse, the idToken and the start register; Updated
    MeterValuePeriodic every TxUpdatedInterval; the card again: Ended StopAuthorized /
    Local with its idToken and the end register."""
    h = await start(charger, csms)
    await accepted(h)
    await wait_status(h, 1, "Available")
    h.plug()
    await h.advance(1)
    h.tap()
    await h.settle(lambda: len(events(h)) >= 1)
    await charging(h)
    started = events(h)[0]
    assert started["eventType"] == "Started"
    assert started["triggerReason"] == "Authorized"
    assert started["seqNo"] == 0
    assert started["evse"] == {"id": 1, "connectorId": 1}
    assert started["idToken"] == {"idToken": CARD, "type": "ISO14443"}
    assert started["transactionInfo"]["chargingState"] in ("Charging", "EVConnected")
    assert energy_wh(started, "Transaction.Begin") == 1000
    assert "offline" not in started
    await h.advance(125)  # TxUpdatedInterval 60 s: two periodic samples
    await h.settle(lambda: sum(e["triggerReason"] == "MeterValuePeriodic" for e in events(h)) >= 2)
    h.tap()
    await h.settle(lambda: events(h)[-1]["eventType"] == "Ended")
    sent = events(h)
    assert_one_transaction(sent)
    periodic = [e for e in sent if e["triggerReason"] == "MeterValuePeriodic"]
    measurands = {sv["measurand"] for sv in periodic[0]["meterValue"][0]["sampledValue"]}
    assert measurands == {"Energy.Active.Import.Register", "Power.Active.Import"}
    ended = sent[-1]
    assert ended["triggerReason"] == "StopAuthorized"
    assert ended["transactionInfo"]["stoppedReason"] == "Local"
    assert ended["idToken"] == {"idToken": CARD, "type": "ISO14443"}
    end_wh = energy_wh(ended, "Transaction.End")
    assert end_wh is not None and end_wh > 1000
    assert all("offline" not in e for e in sent)
    assert [r.error_code for r in csms.sent_results if r.error_code] == []


async def test_card_first_then_plug_and_unplug(charger: Any, csms: DevCsms) -> None:
    """TC_E_04_CS (E01.FR.05) and TC_E_37_CS / TC_E_20_CS (E06, E09): the card first, then
    the cable: Started with CablePluggedIn; unplugged at the EV: Ended with
    EVCommunicationLost, stoppedReason EVDisconnected, chargingState Idle."""
    h = await start(charger, csms)
    await accepted(h)
    await wait_status(h, 1, "Available")
    h.tap()
    await h.settle(lambda: bool(h.frames("Authorize")))
    await h.advance(1)
    h.plug()
    await h.settle(lambda: len(events(h)) >= 1)
    assert events(h)[0]["triggerReason"] == "CablePluggedIn"
    await charging(h)
    await h.advance(5)
    h.unplug()
    await h.settle(lambda: events(h)[-1]["eventType"] == "Ended")
    sent = events(h)
    assert_one_transaction(sent)
    ended = sent[-1]
    assert ended["triggerReason"] == "EVCommunicationLost"
    assert ended["transactionInfo"]["stoppedReason"] == "EVDisconnected"
    assert ended["transactionInfo"]["chargingState"] == "Idle"
    assert "idToken" not in ended


async def test_connection_loss_during_transaction(charger: Any, csms: DevCsms) -> None:
    """TC_E_40_CS / TC_E_44_CS (E11, E12, E08): the CSMS goes away mid-session; samples and
    the stop are journaled with offline true and delivered after the reconnect, in order,
    each exactly once, seqNo without gaps."""
    h = await start(charger, csms)
    await accepted(h)
    await wait_status(h, 1, "Available")
    h.plug()
    await h.advance(1)
    h.tap()
    await h.settle(lambda: len(answered_events(csms)) >= 1)
    await charging(h)
    await h.settle(lambda: client(h).queued_messages() == 0)
    online = len(answered_events(csms))
    await go_offline(h, csms)
    await h.advance(130)
    h.tap()
    await h.settle(lambda: not h.connector().hw.contactor.closed)
    await h.advance(1)
    assert client(h).queued_messages() >= 3
    await come_back(h, csms)
    await h.settle(lambda: client(h).queued_messages() == 0)
    await h.settle(lambda: answered_events(csms)[-1]["eventType"] == "Ended")
    sent = answered_events(csms)
    assert_one_transaction(sent)
    assert all("offline" not in e for e in sent[:online])
    assert len(sent) >= online + 3  # two periodic samples and the end
    assert all(e.get("offline") is True for e in sent[online:])
    ids = [f.unique_id for f in csms.received]
    assert len(ids) == len(set(ids))


async def test_retry_then_id_token_invalid_deauthorizes(charger: Any, csms: DevCsms) -> None:
    """TC_E_51_CS (E13.FR.02/03): a CALLERROR to Started is retried after
    MessageAttemptInterval; TC_E_16_CS (E05.FR.10): the retried Started is answered with an
    Invalid idTokenInfo, so the transaction ends Deauthorized / DeAuthorized
    (StopTxOnInvalidId true)."""
    h = await start(charger, csms)
    await accepted(h)
    await wait_status(h, 1, "Available")
    csms.error_actions_once["TransactionEvent"] = "InternalError"
    h.plug()
    await h.advance(1)
    h.tap()
    await h.settle(lambda: len(events(h)) == 1)
    await h.settle(lambda: any(r.error_code == "InternalError" for r in csms.sent_results))
    csms.invalid_id_tags.add(CARD)
    await h.advance(29)
    assert len(events(h)) == 1  # MessageAttemptInterval[TransactionEvent] 30 s
    await h.advance(2)
    await h.settle(lambda: events(h)[-1]["eventType"] == "Ended", timeout_s=10)
    sent = answered_events(csms)
    assert_one_transaction(sent)
    assert sent[0] == events(h)[0]  # the same Started again
    ended = sent[-1]
    assert ended["triggerReason"] == "Deauthorized"
    assert ended["transactionInfo"]["stoppedReason"] == "DeAuthorized"
    assert not h.connector().hw.contactor.closed


async def status(csms: DevCsms, payload: dict[str, Any]) -> dict[str, Any]:
    frame = await csms.call_raw(STATION_ID, "GetTransactionStatus", payload)
    assert frame[0] == 3, frame
    rpc201.validate(3, "GetTransactionStatus", frame[2])
    answer: dict[str, Any] = frame[2]
    return answer


async def test_get_transaction_status(charger: Any, csms: DevCsms) -> None:
    """TC_E_28_CS .. TC_E_34_CS (E14.FR.01-08): unknown id; ongoing with and without queued
    messages; ended with and without; without an id only messagesInQueue."""
    h = await start(charger, csms)
    await accepted(h)
    await wait_status(h, 1, "Available")
    assert await status(csms, {"transactionId": "nope"}) == {
        "ongoingIndicator": False,
        "messagesInQueue": False,
    }
    assert await status(csms, {}) == {"messagesInQueue": False}
    h.plug()
    await h.advance(1)
    h.tap()
    await h.settle(lambda: len(answered_events(csms)) >= 1)
    tx_id = answered_events(csms)[0]["transactionInfo"]["transactionId"]
    await h.settle(lambda: client(h).queued_messages() == 0)
    assert await status(csms, {"transactionId": tx_id}) == {
        "ongoingIndicator": True,
        "messagesInQueue": False,
    }
    # A message the CSMS refuses stays queued until its retry.
    csms.error_actions_once["TransactionEvent"] = "InternalError"
    await h.advance(61)
    await h.settle(lambda: any(r.error_code == "InternalError" for r in csms.sent_results))
    assert await status(csms, {"transactionId": tx_id}) == {
        "ongoingIndicator": True,
        "messagesInQueue": True,
    }
    assert await status(csms, {}) == {"messagesInQueue": True}
    h.tap()
    await h.settle(lambda: not h.connector().hw.contactor.closed)
    await h.advance(1)
    answer = await status(csms, {"transactionId": tx_id})
    assert answer == {"ongoingIndicator": False, "messagesInQueue": True}
    await h.advance(31)
    await h.settle(lambda: client(h).queued_messages() == 0)
    assert await status(csms, {"transactionId": tx_id}) == {
        "ongoingIndicator": False,
        "messagesInQueue": False,
    }
    assert_one_transaction(answered_events(csms))


async def test_clock_aligned_samples_in_and_outside_a_transaction(
    charger: Any, csms: DevCsms
) -> None:
    """J01 / J02 (AlignedDataCtrlr.Interval set over SetVariables steers the station,
    controller/ocpp201/policy.py): idle, a MeterValuesRequest per boundary with the
    AlignedDataCtrlr.Measurands, context Sample.Clock; in a transaction the same sample is a
    TransactionEvent Updated with triggerReason MeterValueClock."""
    h = await start(charger, csms)
    await accepted(h)
    await wait_status(h, 1, "Available")
    frame = await csms.call_raw(
        STATION_ID,
        "SetVariables",
        {
            "setVariableData": [
                {
                    "component": {"name": "AlignedDataCtrlr"},
                    "variable": {"name": "Interval"},
                    "attributeValue": "60",
                }
            ]
        },
    )
    assert frame[2]["setVariableResult"][0]["attributeStatus"] == "Accepted"
    await h.advance(125)
    await h.settle(lambda: len(h.frames("MeterValues")) >= 2)
    idle = h.frames("MeterValues")[0].payload
    rpc201.validate(2, "MeterValues", idle)
    assert idle["evseId"] == 1
    (value,) = idle["meterValue"][0]["sampledValue"]
    assert value["context"] == "Sample.Clock"
    assert value["measurand"] == "Energy.Active.Import.Register"
    h.plug()
    await h.advance(1)
    h.tap()
    await h.settle(lambda: len(events(h)) >= 1)
    await h.advance(125)
    await h.settle(lambda: any(e["triggerReason"] == "MeterValueClock" for e in events(h)))
