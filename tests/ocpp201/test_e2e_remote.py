"""OCPP 2.0.1 remote control over a real WebSocket against the dev CSMS (F01-F06, K05):
RequestStartTransaction (remoteStartId, idToken type, AuthorizeRemoteStart, chargingProfile),
RequestStopTransaction, UnlockConnector and TriggerMessage, with time on a manual clock."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.core.reservations import Reservation
from controller.dev.devcsms import DevCsms
from controller.ocpp201 import rpc as rpc201
from hal.base import FaultKind
from tests.conftest import STATION_ID, Harness
from tests.ocpp16.test_fuzz_inbound import check_station, valid_value
from tests.ocpp201.test_e2e_boot import accepted, client, start, wait_status
from tests.ocpp201.test_e2e_transactions import assert_one_transaction, charging, events

APP_TOKEN = {"idToken": "APP-USER-0001", "type": "eMAID"}


async def req(csms: DevCsms, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A CSMS request; the answer must be a schema-valid CALLRESULT."""
    rpc201.validate(2, action, payload)
    frame = await csms.call_raw(STATION_ID, action, payload)
    assert frame[0] == 3, frame
    answer: dict[str, Any] = frame[2]
    rpc201.validate(3, action, answer)
    return answer


def answered_at(csms: DevCsms, action: str) -> float:
    """When the station's answer to the CSMS's latest ``action`` arrived."""
    return [r for r in csms.received_responses if r.action == action][-1].received_at


async def ready(charger: Any, csms: DevCsms, **kwargs: Any) -> Harness:
    h = await start(charger, csms, **kwargs)
    await accepted(h)
    for evse in range(1, kwargs.get("connectors", 1) + 1):
        await wait_status(h, evse, "Available")
    return h


async def set_variable(csms: DevCsms, component: str, variable: str, value: str) -> None:
    answer = await req(
        csms,
        "SetVariables",
        {
            "setVariableData": [
                {
                    "attributeValue": value,
                    "component": {"name": component},
                    "variable": {"name": variable},
                }
            ]
        },
    )
    assert answer["setVariableResult"][0]["attributeStatus"] == "Accepted", answer


def start_request(remote_start_id: int = 7, **extra: Any) -> dict[str, Any]:
    return {"idToken": APP_TOKEN, "remoteStartId": remote_start_id, **extra}


async def session(h: Harness) -> dict[str, Any]:
    """A card-started transaction on connector 1, charging; its Started payload."""
    h.plug()
    await h.advance(1)
    h.tap()
    await h.settle(lambda: len(events(h)) >= 1)
    await charging(h)
    return events(h)[0]


def tx_profile(profile_id: int = 20, limit_a: float = 7, **extra: Any) -> dict[str, Any]:
    return {
        "id": profile_id,
        "stackLevel": 0,
        "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Relative",
        "chargingSchedule": [
            {
                "id": 1,
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit_a}],
            }
        ],
        **extra,
    }


def offered_a(h: Harness) -> float:
    return float(h.rig().vehicle.max_current_a)


# ----------------------------------------------------------------------------- F01, F02


async def test_remote_start_cable_first(charger: Any, csms: DevCsms) -> None:
    """TC_F_01_CS (F01.FR.03/04/05/17/19, F02.FR.01, F01.FR.25): the cable first, then
    RequestStartTransaction for evse 1: Accepted; the transaction's first TransactionEvent
    has triggerReason RemoteStart, the remoteStartId and the CSMS's idToken with its type;
    energy flows (AuthorizeRemoteStart false: no Authorize, F01.FR.02)."""
    h = await ready(charger, csms)
    h.plug()
    await wait_status(h, 1, "Occupied")
    answer = await req(csms, "RequestStartTransaction", start_request(7, evseId=1))
    assert answer == {"status": "Accepted"}
    await h.settle(lambda: len(events(h)) >= 1)
    await charging(h)
    started = events(h)[0]
    assert started["eventType"] == "Started"
    assert started["triggerReason"] == "RemoteStart"
    assert started["transactionInfo"]["remoteStartId"] == 7
    assert started["idToken"] == APP_TOKEN
    assert started["evse"] == {"id": 1, "connectorId": 1}
    assert h.frames("Authorize") == []
    # Only the first TransactionEvent carries it (F02.FR.01).
    await h.advance(65)
    await h.settle(lambda: len(events(h)) >= 2)
    assert all("remoteStartId" not in e["transactionInfo"] for e in events(h)[1:])


async def test_remote_start_first_with_authorize_remote_start(charger: Any, csms: DevCsms) -> None:
    """TC_F_02_CS (F02.FR.01, F01.FR.01, F02.FR.09): AuthorizeRemoteStart true: the station
    answers first, then authorizes the idToken like a local action (AuthorizeRequest);
    the cable follows; Started with RemoteStart and the remoteStartId."""
    h = await ready(charger, csms)
    await set_variable(csms, "AuthCtrlr", "AuthorizeRemoteStart", "true")
    answer = await req(csms, "RequestStartTransaction", start_request(11, evseId=1))
    assert answer == {"status": "Accepted"}
    authorize = await csms.wait_for(lambda f: f.action == "Authorize", timeout_s=5)
    assert authorize.received_at >= answered_at(csms, "RequestStartTransaction")
    assert authorize.payload["idToken"] == APP_TOKEN  # the CSMS's type, not ISO14443
    await h.advance(2)
    h.plug()
    await h.settle(lambda: len(events(h)) >= 1)
    await charging(h)
    started = events(h)[0]
    assert started["triggerReason"] == "RemoteStart"
    assert started["transactionInfo"]["remoteStartId"] == 11
    assert started["idToken"] == APP_TOKEN


async def test_remote_start_not_authorized_starts_nothing(charger: Any, csms: DevCsms) -> None:
    """F01.FR.01 / F02.FR.09: with AuthorizeRemoteStart true, an idToken the CSMS answers
    Invalid in the AuthorizeRequest starts nothing, even when the EV is connected; the
    next card session is an ordinary Authorized start without remoteStartId."""
    h = await ready(charger, csms)
    await set_variable(csms, "AuthCtrlr", "AuthorizeRemoteStart", "true")
    csms.invalid_id_tags.add(APP_TOKEN["idToken"])
    h.plug()
    await wait_status(h, 1, "Occupied")
    assert await req(csms, "RequestStartTransaction", start_request(12, evseId=1)) == {
        "status": "Accepted"
    }
    await csms.wait_for(lambda f: f.action == "Authorize", timeout_s=5)
    await h.advance(3)
    assert events(h) == []
    assert not h.connector().hw.contactor.closed
    h.tap()
    await h.settle(lambda: len(events(h)) >= 1)
    assert events(h)[0]["triggerReason"] == "Authorized"
    assert "remoteStartId" not in events(h)[0]["transactionInfo"]


async def test_remote_start_first_without_authorization(charger: Any, csms: DevCsms) -> None:
    """TC_F_03_CS (F02.FR.01, F01.FR.02, F02.FR.10, F02.FR.21): AuthorizeRemoteStart false:
    no AuthorizeRequest; the cable is plugged within EVConnectionTimeOut; Started with
    RemoteStart, the remoteStartId and the idToken; a RemoteStop ends it (TC_F_08_CS)."""
    h = await ready(charger, csms)
    answer = await req(csms, "RequestStartTransaction", start_request(13, evseId=1))
    assert answer == {"status": "Accepted"}
    await h.advance(10)
    h.plug()
    await h.settle(lambda: len(events(h)) >= 1)
    await charging(h)
    started = events(h)[0]
    assert started["triggerReason"] == "RemoteStart"
    assert started["transactionInfo"]["remoteStartId"] == 13
    assert h.frames("Authorize") == []


async def test_remote_start_with_no_authorization_token(charger: Any, csms: DevCsms) -> None:
    """F01 remark, F01.FR.02: an idToken of type NoAuthorization starts without an
    AuthorizeRequest even with AuthorizeRemoteStart true; Started carries it as sent."""
    h = await ready(charger, csms)
    await set_variable(csms, "AuthCtrlr", "AuthorizeRemoteStart", "true")
    token = {"idToken": "", "type": "NoAuthorization"}
    body = {"idToken": token, "remoteStartId": 16, "evseId": 1}
    assert await req(csms, "RequestStartTransaction", body) == {"status": "Accepted"}
    h.plug()
    await h.settle(lambda: len(events(h)) >= 1)
    await charging(h)
    started = events(h)[0]
    assert started["idToken"] == token
    assert started["transactionInfo"]["remoteStartId"] == 16
    assert h.frames("Authorize") == []


async def test_remote_start_cable_timeout_ends_the_authorization(
    charger: Any, csms: DevCsms
) -> None:
    """TC_F_04_CS (E03.FR.05, C01.FR.26): no cable within TxCtrlr.EVConnectionTimeOut (60 s):
    the remote authorization ends. TxStartPoint is PowerPathClosed, so no transaction had
    started and no TransactionEvent is sent; a later card session is not a remote start."""
    h = await ready(charger, csms)
    assert await req(csms, "RequestStartTransaction", start_request(14, evseId=1)) == {
        "status": "Accepted"
    }
    await h.settle(lambda: h.connector().state.authorized_tag is not None)
    await h.advance(65)
    await h.settle(lambda: h.connector().state.authorized_tag is None)
    assert events(h) == []
    started = await session(h)
    assert started["triggerReason"] == "Authorized"
    assert "remoteStartId" not in started["transactionInfo"]
    assert started["idToken"]["type"] == "ISO14443"


async def test_remote_start_without_evse_picks_the_plugged_connector(
    charger: Any, csms: DevCsms
) -> None:
    """F01.FR.20 / F02.FR.22: without evseId the station selects the EVSE: the one with
    the EV plugged in (evse 2 here); Started names it."""
    h = await ready(charger, csms, connectors=2)
    h.plug(2)
    await wait_status(h, 2, "Occupied")
    assert await req(csms, "RequestStartTransaction", start_request(15)) == {"status": "Accepted"}
    await h.settle(lambda: len(events(h)) >= 1)
    started = events(h)[0]
    assert started["evse"] == {"id": 2, "connectorId": 1}
    assert started["transactionInfo"]["remoteStartId"] == 15


async def test_remote_start_rejections(charger: Any, csms: DevCsms) -> None:
    """Rejected, with nothing started: an unknown EVSE (reasonCode UnknownEvse); a faulted
    EVSE (F01.FR.23); an EVSE reserved for another idToken (F01.FR.21, H); an EVSE whose
    transaction is authorized (F01.FR.24: TxInProgress with its transactionId, F01.FR.13)."""
    h = await ready(charger, csms, connectors=2)
    answer = await req(csms, "RequestStartTransaction", start_request(evseId=5))
    assert answer["status"] == "Rejected"
    assert answer["statusInfo"]["reasonCode"] == "UnknownEvse"
    expiry = h.clock.utc_now() + timedelta(hours=1)
    reservation = Reservation(3, 1, "SOMEONE-ELSE", expiry)
    assert h.station.reserve(reservation, any_connector_supported=True).value == "Accepted"
    await wait_status(h, 1, "Reserved")
    answer = await req(csms, "RequestStartTransaction", start_request(evseId=1))
    assert answer["status"] == "Rejected"
    assert h.station.cancel_reservation(3).value == "Accepted"
    await wait_status(h, 1, "Available")
    h.station.set_connector_fault(2, FaultKind.GROUND)
    await wait_status(h, 2, "Faulted")
    answer = await req(csms, "RequestStartTransaction", start_request(evseId=2))
    assert answer["status"] == "Rejected"
    started = await session(h)
    answer = await req(csms, "RequestStartTransaction", start_request(evseId=1))
    assert answer["status"] == "Rejected"
    assert answer["statusInfo"]["reasonCode"] == "TxInProgress"
    assert answer["transactionId"] == started["transactionInfo"]["transactionId"]
    # No evse: none is free (1 charges, 2 is faulted).
    assert (await req(csms, "RequestStartTransaction", start_request()))["status"] == "Rejected"
    await h.advance(2)
    assert {e["transactionInfo"]["transactionId"] for e in events(h)} == {
        started["transactionInfo"]["transactionId"]
    }
    assert h.connector(2).state.authorized_tag is None


async def test_second_remote_start_on_an_authorized_evse(charger: Any, csms: DevCsms) -> None:
    """F01.FR.24 / F02.FR.26: once a remote start authorized the EVSE (EV not yet there), a
    second RequestStartTransaction for it is Rejected; the transaction that follows carries
    the first request's remoteStartId."""
    h = await ready(charger, csms)
    assert await req(csms, "RequestStartTransaction", start_request(31, evseId=1)) == {
        "status": "Accepted"
    }
    await h.settle(lambda: h.connector().state.authorized_tag is not None)
    second = await req(csms, "RequestStartTransaction", start_request(32, evseId=1))
    assert second["status"] == "Rejected"
    h.plug()
    await h.settle(lambda: len(events(h)) >= 1)
    assert events(h)[0]["transactionInfo"]["remoteStartId"] == 31


async def test_remote_start_and_stop_rejected_while_pending(charger: Any, csms: DevCsms) -> None:
    """B02.FR.05: while the boot is Pending, RequestStartTransaction and
    RequestStopTransaction are Rejected (reasonCode CSNotAccepted)."""
    csms.boot_status = "Pending"
    csms.boot_retry_interval_s = 30
    h = await start(charger, csms)
    await h.settle(lambda: client(h).boot_statuses == ["Pending"])
    answer = await req(csms, "RequestStartTransaction", start_request(evseId=1))
    assert answer == {"status": "Rejected", "statusInfo": {"reasonCode": "CSNotAccepted"}}
    answer = await req(csms, "RequestStopTransaction", {"transactionId": "x"})
    assert answer["status"] == "Rejected"
    assert h.connector().state.authorized_tag is None


# ----------------------------------------------------------------------------- K05


async def test_remote_start_with_a_tx_profile(charger: Any, csms: DevCsms) -> None:
    """K05.FR.01/03, F01.FR.08/10: the TxProfile of the request limits the transaction it
    starts, bound to that transaction, and goes when it ends."""
    h = await ready(charger, csms)
    h.plug()
    await wait_status(h, 1, "Occupied")
    body = start_request(21, evseId=1, chargingProfile=tx_profile(20, 7))
    assert await req(csms, "RequestStartTransaction", body) == {"status": "Accepted"}
    await h.settle(lambda: h.connector().tx_key is not None)
    await h.settle(lambda: offered_a(h) == 7.0)
    installed = h.station.installed_profiles()
    assert [(p.profile_id, p.tx_key) for p in installed] == [(20, h.connector().tx_key)]
    h.unplug()
    await h.settle(lambda: h.connector().tx_key is None)
    await h.settle(lambda: h.station.installed_profiles() == ())


async def test_remote_start_with_an_invalid_profile_is_rejected(
    charger: Any, csms: DevCsms
) -> None:
    """F01.FR.09/11/26, K05.FR.02/05: a profile that is not a TxProfile, one with a
    transactionId, an invalid schedule (first period not at 0, K01.FR.31), a unit the
    station does not offer, or several schedules (ISO 15118 only): Rejected with
    reasonCode InvalidProfile / InvalidSchedule, nothing started or installed."""
    h = await ready(charger, csms)
    h.plug()
    await wait_status(h, 1, "Occupied")
    schedule = tx_profile()["chargingSchedule"][0]
    bad = [
        (tx_profile(chargingProfilePurpose="TxDefaultProfile"), "InvalidProfile"),
        (tx_profile(transactionId="abc"), "InvalidProfile"),
        (
            tx_profile(
                chargingSchedule=[
                    {**schedule, "chargingSchedulePeriod": [{"startPeriod": 5, "limit": 7}]}
                ]
            ),
            "InvalidProfile",
        ),
        (tx_profile(chargingSchedule=[schedule, {**schedule, "id": 2}]), "InvalidSchedule"),
        (tx_profile(chargingProfileKind="Absolute"), "InvalidProfile"),  # K01.FR.40
    ]
    for profile, reason in bad:
        body = start_request(evseId=1, chargingProfile=profile)
        answer = await req(csms, "RequestStartTransaction", body)
        assert answer["status"] == "Rejected", profile
        assert answer["statusInfo"]["reasonCode"] == reason, answer
    await h.advance(2)
    assert events(h) == []
    assert h.station.installed_profiles() == ()


async def test_profile_ignored_when_smart_charging_is_disabled(charger: Any, csms: DevCsms) -> None:
    """F01.FR.12 / K05.FR.04: SmartChargingCtrlr.Enabled false: the chargingProfile is
    ignored (even an invalid one) and the transaction starts without it."""
    h = await ready(charger, csms)
    await set_variable(csms, "SmartChargingCtrlr", "Enabled", "false")
    h.plug()
    await wait_status(h, 1, "Occupied")
    body = start_request(
        evseId=1, chargingProfile=tx_profile(chargingProfilePurpose="TxDefaultProfile")
    )
    assert await req(csms, "RequestStartTransaction", body) == {"status": "Accepted"}
    await h.settle(lambda: len(events(h)) >= 1)
    assert h.station.installed_profiles() == ()


# ----------------------------------------------------------------------------- F03


async def test_remote_stop(charger: Any, csms: DevCsms) -> None:
    """TC_F_08_CS (F03.FR.03, F03.FR.07, F03.FR.09) and TC_F_09_CS (F03.FR.08): an unknown
    transactionId is Rejected and changes nothing; the running one is Accepted and ends
    with TransactionEvent Ended, triggerReason RemoteStop, stoppedReason Remote."""
    h = await ready(charger, csms)
    started = await session(h)
    tx_id = started["transactionInfo"]["transactionId"]
    answer = await req(csms, "RequestStopTransaction", {"transactionId": "not-" + tx_id[:30]})
    assert answer["status"] == "Rejected"
    await h.advance(1)
    assert h.connector().hw.contactor.closed
    answer = await req(csms, "RequestStopTransaction", {"transactionId": tx_id})
    assert answer == {"status": "Accepted"}
    await h.settle(lambda: events(h)[-1]["eventType"] == "Ended")
    assert not h.connector().hw.contactor.closed
    sent = events(h)
    assert_one_transaction(sent)
    ended = sent[-1]
    assert ended["triggerReason"] == "RemoteStop"
    assert ended["transactionInfo"]["stoppedReason"] == "Remote"
    # An ended transaction is not active any more (F03.FR.08).
    answer = await req(csms, "RequestStopTransaction", {"transactionId": tx_id})
    assert answer["status"] == "Rejected"


# ----------------------------------------------------------------------------- F05


async def test_unlock_during_an_authorized_transaction(charger: Any, csms: DevCsms) -> None:
    """TC_F_05_CS (F05.FR.01/02): OngoingAuthorizedTransaction; the cable stays locked
    and the transaction goes on (2.0.1 does not stop it for an unlock)."""
    h = await ready(charger, csms)
    await session(h)
    await h.settle(lambda: h.rig().lock.locked)
    answer = await req(csms, "UnlockConnector", {"evseId": 1, "connectorId": 1})
    assert answer == {"status": "OngoingAuthorizedTransaction"}
    await h.advance(2)
    assert h.rig().lock.locked
    assert h.connector().hw.contactor.closed
    assert all(e["eventType"] != "Ended" for e in events(h))


async def test_unlock_without_transaction(charger: Any, csms: DevCsms) -> None:
    """TC_F_06_CS (F05.FR.04): after the transaction, a cable stuck in the lock is
    Unlocked; TC_F_07_CS (F05.FR.06): with no cable the unlock is attempted too;
    F05.FR.05: a lock that does not move is UnlockFailed; TC_F_10_CS (F05.FR.03):
    connector 999 or EVSE 9 is UnknownConnector."""
    h = await ready(charger, csms)
    assert await req(csms, "UnlockConnector", {"evseId": 1, "connectorId": 1}) == {
        "status": "Unlocked"
    }
    assert await req(csms, "UnlockConnector", {"evseId": 1, "connectorId": 999}) == {
        "status": "UnknownConnector"
    }
    assert await req(csms, "UnlockConnector", {"evseId": 9, "connectorId": 1}) == {
        "status": "UnknownConnector"
    }
    started = await session(h)
    tx_id = started["transactionInfo"]["transactionId"]
    assert await req(csms, "RequestStopTransaction", {"transactionId": tx_id}) == {
        "status": "Accepted"
    }
    await h.settle(lambda: events(h)[-1]["eventType"] == "Ended")
    h.rig().lock.set_failing(True)
    assert await req(csms, "UnlockConnector", {"evseId": 1, "connectorId": 1}) == {
        "status": "UnlockFailed"
    }
    h.rig().lock.set_failing(False)
    assert await req(csms, "UnlockConnector", {"evseId": 1, "connectorId": 1}) == {
        "status": "Unlocked"
    }
    assert not h.rig().lock.locked
    # A connector without a cable lock has nothing to release (Appendix 5 FixedCable).
    h.connector().hw.lock = None
    answer = await req(csms, "UnlockConnector", {"evseId": 1, "connectorId": 1})
    assert answer == {"status": "UnlockFailed", "statusInfo": {"reasonCode": "FixedCable"}}


# ----------------------------------------------------------------------------- F06


async def trigger(
    csms: DevCsms, message: str, evse: dict[str, Any] | None = None
) -> dict[str, Any]:
    payload: dict[str, Any] = {"requestedMessage": message}
    if evse is not None:
        payload["evse"] = evse
    return await req(csms, "TriggerMessage", payload)


async def triggered(h: Harness, action: str, before: int, count: int = 1) -> list[Any]:
    """The ``count`` ``action`` frames after the first ``before``, each received after the
    TriggerMessage answer (F06.FR.04)."""
    assert h.csms is not None
    await h.settle(lambda: len(h.frames(action)) >= before + count)
    frames = h.frames(action)[before:]
    answered = answered_at(h.csms, "TriggerMessage")
    assert all(f.received_at >= answered for f in frames)
    return frames


async def test_trigger_meter_values(charger: Any, csms: DevCsms) -> None:
    """TC_F_11_CS (F06.FR.02/04/05/06/10): MeterValues for evse 1: one MeterValuesRequest
    with evseId 1, the AlignedDataCtrlr.Measurands of the live reading, context Trigger;
    TC_F_12_CS (F06.FR.11): without evse, one per EVSE; an unknown EVSE is Rejected."""
    h = await ready(charger, csms, connectors=2)
    assert await trigger(csms, "MeterValues", {"id": 1}) == {"status": "Accepted"}
    (frame,) = await triggered(h, "MeterValues", 0)
    assert frame.payload["evseId"] == 1
    values = frame.payload["meterValue"][0]["sampledValue"]
    assert [v["context"] for v in values] == ["Trigger"]
    assert values[0]["measurand"] == "Energy.Active.Import.Register"
    assert values[0]["value"] == 1000
    assert await trigger(csms, "MeterValues") == {"status": "Accepted"}
    frames = await triggered(h, "MeterValues", 1, 2)
    assert sorted(f.payload["evseId"] for f in frames) == [1, 2]
    assert await trigger(csms, "MeterValues", {"id": 3}) == {"status": "Rejected"}


async def test_trigger_transaction_event(charger: Any, csms: DevCsms) -> None:
    """TC_F_13_CS (F06.FR.07): TransactionEvent for evse 1 while charging: Updated with
    triggerReason Trigger, chargingState Charging, the evse and the TxUpdatedMeasurands of
    the live reading with context Trigger, journaled like the other messages (seqNo in
    order, E01.FR.07); TC_F_14_CS: without evse, for every running transaction; Rejected
    where none runs."""
    h = await ready(charger, csms, connectors=2)
    assert await trigger(csms, "TransactionEvent", {"id": 1}) == {"status": "Rejected"}
    await session(h)
    await h.settle(lambda: client(h).queued_messages() == 0)
    before = len(events(h))
    assert await trigger(csms, "TransactionEvent", {"id": 1}) == {"status": "Accepted"}
    (frame,) = await triggered(h, "TransactionEvent", before)
    event = frame.payload
    assert event["eventType"] == "Updated"
    assert event["triggerReason"] == "Trigger"
    assert event["transactionInfo"]["chargingState"] == "Charging"
    assert event["evse"] == {"id": 1, "connectorId": 1}
    values = event["meterValue"][0]["sampledValue"]
    assert {v["context"] for v in values} == {"Trigger"}
    assert {v["measurand"] for v in values} == {
        "Energy.Active.Import.Register",
        "Power.Active.Import",
    }
    assert await trigger(csms, "TransactionEvent", {"id": 2}) == {"status": "Rejected"}
    assert await trigger(csms, "TransactionEvent") == {"status": "Accepted"}
    await triggered(h, "TransactionEvent", before + 1)
    h.tap()
    await h.settle(lambda: events(h)[-1]["eventType"] == "Ended")
    assert_one_transaction(events(h))


async def test_trigger_status_notification(charger: Any, csms: DevCsms) -> None:
    """TC_F_23_CS (F06.FR.02/04/05/10): StatusNotification for evse 1 connector 1:
    Available, sent after the answer; TC_F_24_CS: Occupied with the EV plugged; without
    evse every connector (F06.FR.11); an unknown connector is Rejected."""
    h = await ready(charger, csms, connectors=2)
    before = len(h.frames("StatusNotification"))
    evse = {"id": 1, "connectorId": 1}
    assert await trigger(csms, "StatusNotification", evse) == {"status": "Accepted"}
    (frame,) = await triggered(h, "StatusNotification", before)
    assert (frame.payload["evseId"], frame.payload["connectorId"]) == (1, 1)
    assert frame.payload["connectorStatus"] == "Available"
    h.plug()
    await wait_status(h, 1, "Occupied")
    before = len(h.frames("StatusNotification"))
    assert await trigger(csms, "StatusNotification", evse) == {"status": "Accepted"}
    (frame,) = await triggered(h, "StatusNotification", before)
    assert frame.payload["connectorStatus"] == "Occupied"
    before = len(h.frames("StatusNotification"))
    assert await trigger(csms, "StatusNotification") == {"status": "Accepted"}
    frames = await triggered(h, "StatusNotification", before, 2)
    assert sorted((f.payload["evseId"], f.payload["connectorStatus"]) for f in frames) == [
        (1, "Occupied"),
        (2, "Available"),
    ]
    bad = {"id": 1, "connectorId": 2}
    assert await trigger(csms, "StatusNotification", bad) == {"status": "Rejected"}


async def test_trigger_heartbeat_firmware_and_log_status(charger: Any, csms: DevCsms) -> None:
    """TC_F_20_CS (F06.FR.04/05/10): Heartbeat; TC_F_18_CS (F06.FR.16): FirmwareStatus-
    Notification Idle; TC_F_17_CS (F06.FR.03): an EVSE given for it is not relevant and is
    ignored; TC_F_15_CS (F06.FR.15): LogStatusNotification Idle."""
    h = await ready(charger, csms)
    assert await trigger(csms, "Heartbeat") == {"status": "Accepted"}
    await triggered(h, "Heartbeat", 0)
    assert await trigger(csms, "FirmwareStatusNotification") == {"status": "Accepted"}
    (frame,) = await triggered(h, "FirmwareStatusNotification", 0)
    assert frame.payload == {"status": "Idle"}
    evse = {"id": 1}
    assert await trigger(csms, "FirmwareStatusNotification", evse) == {"status": "Accepted"}
    await triggered(h, "FirmwareStatusNotification", 1)
    assert await trigger(csms, "LogStatusNotification") == {"status": "Accepted"}
    (frame,) = await triggered(h, "LogStatusNotification", 0)
    assert frame.payload == {"status": "Idle"}
    assert [r.error_code for r in csms.sent_results if r.error_code] == []


async def test_trigger_boot_notification_and_not_implemented(charger: Any, csms: DevCsms) -> None:
    """TC_F_26_CS (F06.FR.17): BootNotification after an Accepted boot is Rejected and
    nothing is sent; TC_F_27_CS (F06.FR.08): a message the station does not produce is
    NotImplemented."""
    h = await ready(charger, csms)
    assert await trigger(csms, "BootNotification") == {"status": "Rejected"}
    for message in ("SignCombinedCertificate", "SignV2GCertificate"):
        assert await trigger(csms, message) == {"status": "NotImplemented"}
    await h.advance(2)
    assert len(h.frames("BootNotification")) == 1


async def test_trigger_boot_notification_while_pending(charger: Any, csms: DevCsms) -> None:
    """B02.FR.04, F06.FR.17: while Pending, a triggered BootNotification is Accepted and
    sent at once, not after the interval; the Accepted answer to it ends Pending."""
    csms.boot_status = "Pending"
    csms.boot_retry_interval_s = 300
    h = await start(charger, csms)
    await h.settle(lambda: client(h).boot_statuses == ["Pending"])
    csms.boot_status = "Accepted"
    assert await trigger(csms, "BootNotification") == {"status": "Accepted"}
    await triggered(h, "BootNotification", 1)
    await accepted(h)
    assert client(h).boot_statuses == ["Pending", "Accepted"]
    await wait_status(h, 1, "Available")


# ----------------------------------------------------------------------------- untrusted input

FUZZED_ACTIONS = (
    "RequestStartTransaction",
    "RequestStopTransaction",
    "UnlockConnector",
    "TriggerMessage",
)


@st.composite
def remote_call(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A schema-valid request of this block, from the official 2.0.1 schemas."""
    action = draw(st.sampled_from(FUZZED_ACTIONS))
    schema = rpc201.load_schema(2, action)
    payload = draw(
        valid_value(schema, schema).filter(
            lambda p: rpc201.SCHEMAS.first_error(2, action, p) is None
        )
    )
    return action, payload


@pytest.fixture
async def fuzz_target(csms: DevCsms, charger: Any) -> Harness:
    """One charger for all examples (the state carries over, as in the field)."""
    return await ready(charger, csms)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(
        st.one_of(remote_call(), remote_call(), st.sampled_from(("plug", "unplug", "tap"))),
        min_size=1,
        max_size=4,
    )
)
async def test_fuzzed_remote_requests_are_answered_safely(
    csms: DevCsms, fuzz_target: Harness, steps: list[Any]
) -> None:
    """Untrusted input: every schema-valid RequestStart/StopTransaction, UnlockConnector and
    TriggerMessage (any ids, tokens, profiles, EVSEs) gets a schema-valid CALLRESULT, never
    a CALLERROR or a crash, interleaved with plug / unplug / card; the contactor is closed
    only within a transaction; the connection stays up and serves the next request."""
    h = fuzz_target
    for step in steps:
        if isinstance(step, str):
            getattr(h, step)()
            await h.advance(0.2, step_s=0.1)
        else:
            action, payload = step
            frame = await csms.call_raw(STATION_ID, action, payload, timeout_s=5)
            assert frame[0] == 3, (action, payload, frame)
            rpc201.validate(3, action, frame[2])
        check_station(h)
    assert await trigger(csms, "Heartbeat") == {"status": "Accepted"}
    assert client(h).connects == 1
