"""End-to-end: bad input from the CSMS gets the exact OCPP-J 1.6 CALLERROR (section 4.2.3,
Table 7, with the 1.6 spellings kept by OCPP-J errata 5.1 / 5.2) and the charger keeps running.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from controller.dev.devcsms import DevCsms
from tests.conftest import CARD, STATION_ID

# The ocpp library's OCPP 2.0.1 spellings; OCPP-J 1.6 errata 5.1 / 5.2 keep the 1.6 ones
# ("OccurenceConstraintViolation", "FormationViolation") on the wire.
FORBIDDEN_CODES = ("FormatViolation", "OccurrenceConstraintViolation")


# ----------------------------------------------------------------------------- helpers


def assert_callerror(frame: Any, message_id: str, code: str) -> None:
    """OCPP-J 4.2.3: [4, "<id>", "<errorCode>", "<errorDescription>", {<errorDetails>}]."""
    assert isinstance(frame, list), frame
    assert len(frame) == 5, frame
    assert frame[0] == 4, frame
    assert frame[1] == message_id, frame
    assert frame[2] == code, frame
    assert isinstance(frame[3], str), frame
    assert isinstance(frame[4], dict), frame


async def still_works(h: Any, csms: DevCsms) -> None:
    """The connection survived (no reconnect) and a normal CALL is answered normally."""
    frame = await csms.call_raw(STATION_ID, "GetConfiguration", {"key": ["NumberOfConnectors"]})
    assert frame[0] == 3, frame
    assert frame[2]["configurationKey"][0]["value"] == "1"
    assert csms.connected(STATION_ID)
    assert h.app.client.connects == 1
    assert h.app.port.connection_state() == "accepted"


def assert_wire_spellings(csms: DevCsms) -> None:
    """Every CALLERROR the charger sent has 5 elements, an object as details, and never a
    2.0.1 error code name (OCPP-J errata 5.1 / 5.2)."""
    for response in csms.received_responses:
        for name in FORBIDDEN_CODES:
            assert name not in response.raw, response.raw
        frame = json.loads(response.raw)
        if frame[0] == 4:
            assert len(frame) == 5 and isinstance(frame[4], dict), response.raw


# ----------------------------------------------------------------------------- framing


@pytest.mark.parametrize(
    ("text", "message_id"),
    [
        pytest.param("this is not json", "-1", id="not-json"),
        pytest.param('[2, "half-1", "GetConfiguration", {', "half-1", id="truncated-json-id"),
        pytest.param('[2, "half-2", "GetConf', "half-2", id="truncated-json-early"),
        pytest.param('{"messageTypeId": 2, "action": "Reset"}', "-1", id="object-not-array"),
        pytest.param('"just a string"', "-1", id="string-not-array"),
        pytest.param("42", "-1", id="number-not-array"),
        pytest.param("[]", "-1", id="empty-array"),
        # The id is readable here, so echoing it is as good as "-1".
        pytest.param(
            '["2", "str-type", "Reset", {"type": "Soft"}]', ("-1", "str-type"), id="type-id-string"
        ),
        pytest.param('[2, 42, "Reset", {"type": "Soft"}]', "-1", id="message-id-not-string"),
        pytest.param('[2, "three"]', "three", id="call-too-short"),
        pytest.param('[2, "short", "GetConfiguration"]', "short", id="call-without-payload"),
        pytest.param('[2, "long", "GetConfiguration", {}, {}]', "long", id="call-extra-element"),
        pytest.param('[2, "act", 7, {}]', "act", id="action-not-string"),
        pytest.param('[7, "mt", "GetConfiguration", {}]', "mt", id="unknown-message-type"),
        pytest.param('[2, "np", "Reset", "Soft"]', "np", id="payload-not-object"),
        pytest.param('[2, "na", "Reset", null]', "na", id="payload-null"),
    ],
)
async def test_malformed_frame_formation_violation(
    csms: DevCsms, charger: Any, text: str, message_id: str | tuple[str, ...]
) -> None:
    """OCPP-J 4.2.3 Table 7 FormationViolation: "Payload for Action is syntactically incorrect
    or not conform the PDU structure"; the id is echoed when readable, else "-1"."""
    h = await charger(csms)
    await csms.send_text(STATION_ID, text)
    frame = await csms.next_raw_response(STATION_ID, timeout_s=5)
    accepted_ids = (message_id,) if isinstance(message_id, str) else message_id
    assert frame[1] in accepted_ids, frame
    assert_callerror(frame, frame[1], "FormationViolation")
    assert h.app.reset_requested is None
    await still_works(h, csms)
    assert_wire_spellings(csms)


async def test_message_id_longer_than_36_characters(csms: DevCsms, charger: Any) -> None:
    """OCPP-J 4.1.4: messageId has "a maximum of 36 characters" -> FormationViolation; a
    36-character id (a UUID) is served normally."""
    h = await charger(csms)
    long_id = "x" * 37
    await csms.send_text(STATION_ID, json.dumps([2, long_id, "GetConfiguration", {}]))
    assert_callerror(await csms.next_raw_response(STATION_ID), long_id, "FormationViolation")
    ok_id = "y" * 36
    await csms.send_text(STATION_ID, json.dumps([2, ok_id, "DataTransfer", {"vendorId": "v"}]))
    assert await csms.next_raw_response(STATION_ID) == [3, ok_id, {"status": "UnknownVendorId"}]
    await still_works(h, csms)


async def test_stray_responses_are_ignored(csms: DevCsms, charger: Any) -> None:
    """OCPP-J 4.1.4 / 4.2.2: a CALLRESULT or CALLERROR that answers no CALL of the charger is
    dropped silently (a response is never answered)."""
    h = await charger(csms)
    n = len(csms.received_responses)
    await csms.send_text(STATION_ID, '[3, "nobody-asked", {"status": "Accepted"}]')
    await csms.send_text(STATION_ID, '[4, "nobody-either", "GenericError", "", {}]')
    await still_works(h, csms)
    ids = [r.unique_id for r in csms.received_responses[n:]]
    assert "nobody-asked" not in ids and "nobody-either" not in ids


# ----------------------------------------------------------------------------- actions


@pytest.mark.parametrize(
    ("action", "payload"),
    [
        pytest.param("FooBar", {}, id="FooBar"),
        pytest.param("fooBar", {"type": "Soft"}, id="fooBar"),
        pytest.param("reset", {"type": "Soft"}, id="lower-case-reset"),  # names are exact
        pytest.param("Reset.req", {"type": "Soft"}, id="Reset.req"),
        pytest.param("RequestStartTransaction", {"idToken": {}}, id="2.0.1-only-action"),
    ],
)
async def test_unknown_action_not_implemented(
    csms: DevCsms, charger: Any, action: str, payload: dict[str, Any]
) -> None:
    """OCPP-J 4.2.3 Table 7 NotImplemented: "Requested Action is not known by receiver"."""
    h = await charger(csms)
    frame = await csms.call_raw(STATION_ID, action, payload)
    assert_callerror(frame, frame[1], "NotImplemented")
    assert h.app.reset_requested is None
    await still_works(h, csms)


@pytest.mark.parametrize(
    ("action", "payload"),
    [
        # CP -> CSMS actions: known OCPP 1.6 actions, but not something a CP receives.
        pytest.param(
            "BootNotification",
            {"chargePointVendor": "V", "chargePointModel": "M"},
            id="BootNotification",
        ),
        pytest.param("Heartbeat", {}, id="Heartbeat"),
        pytest.param("Authorize", {"idTag": CARD}, id="Authorize"),
        pytest.param(
            "StartTransaction",
            {"connectorId": 1, "idTag": CARD, "meterStart": 0, "timestamp": "2026-01-01T12:00:00Z"},
            id="StartTransaction",
        ),
    ],
)
async def test_known_but_unsupported_action_not_supported(
    csms: DevCsms, charger: Any, action: str, payload: dict[str, Any]
) -> None:
    """OCPP-J 4.2.3 Table 7 NotSupported: "Requested Action is recognized but not supported by
    the receiver" (errata 3.9 example: [4, id, "NotSupported", "... not implemented", {}])."""
    h = await charger(csms)
    frame = await csms.call_raw(STATION_ID, action, payload)
    assert_callerror(frame, frame[1], "NotSupported")
    await h.advance(2)
    assert h.frames("StartTransaction") == []
    await still_works(h, csms)


# ----------------------------------------------------------------------------- payloads


@pytest.mark.parametrize(
    ("action", "payload", "code"),
    [
        # ProtocolError: "Payload for Action is incomplete" (a required field is missing).
        pytest.param("RemoteStartTransaction", {}, "ProtocolError", id="remote-start-no-idTag"),
        pytest.param(
            "RemoteStartTransaction",
            {"connectorId": 1},
            "ProtocolError",
            id="remote-start-only-cid",
        ),
        pytest.param("RemoteStopTransaction", {}, "ProtocolError", id="remote-stop-no-txid"),
        pytest.param("Reset", {}, "ProtocolError", id="reset-no-type"),
        pytest.param("ChangeAvailability", {"connectorId": 1}, "ProtocolError", id="avail-no-type"),
        pytest.param(
            "ChangeConfiguration", {"key": "HeartbeatInterval"}, "ProtocolError", id="cfg-no-value"
        ),
        pytest.param("UnlockConnector", {}, "ProtocolError", id="unlock-no-cid"),
        pytest.param("TriggerMessage", {}, "ProtocolError", id="trigger-no-message"),
        pytest.param("DataTransfer", {}, "ProtocolError", id="datatransfer-no-vendor"),
        # TypeConstraintViolation: "at least one of the fields violates data type constraints".
        pytest.param(
            "ChangeAvailability",
            {"connectorId": "1", "type": "Inoperative"},
            "TypeConstraintViolation",
            id="avail-cid-string",
        ),
        pytest.param(
            "ChangeConfiguration",
            {"key": "HeartbeatInterval", "value": 60},
            "TypeConstraintViolation",
            id="cfg-value-number",
        ),
        pytest.param(
            "RemoteStopTransaction",
            {"transactionId": 1.5},
            "TypeConstraintViolation",
            id="remote-stop-txid-float",
        ),
        pytest.param(
            "RemoteStartTransaction",
            {"idTag": ["A"]},
            "TypeConstraintViolation",
            id="remote-start-idTag-array",
        ),
        pytest.param(
            "GetConfiguration",
            {"key": "HeartbeatInterval"},
            "TypeConstraintViolation",
            id="getcfg-key-string",
        ),
        pytest.param(
            "RemoteStartTransaction",
            {"idTag": "X" * 21},
            "TypeConstraintViolation",
            id="idTag-longer-than-CiString20",
        ),
        # PropertyConstraintViolation: "syntactically correct but ... an invalid value".
        pytest.param("Reset", {"type": "Medium"}, "PropertyConstraintViolation", id="reset-enum"),
        pytest.param(
            "ChangeAvailability",
            {"connectorId": 1, "type": "Sideways"},
            "PropertyConstraintViolation",
            id="avail-enum",
        ),
        pytest.param(
            "TriggerMessage",
            {"requestedMessage": "StartTransaction"},
            "PropertyConstraintViolation",
            id="trigger-enum",
        ),
        # FormationViolation: "not conform the PDU structure" (extra properties, errata 3.2).
        pytest.param(
            "Reset", {"type": "Soft", "delay": 5}, "FormationViolation", id="reset-extra-property"
        ),
        pytest.param(
            "ClearCache", {"everything": True}, "FormationViolation", id="clearcache-extra-property"
        ),
        pytest.param(
            "RemoteStopTransaction",
            {"transactionId": 1, "reason": "Remote"},
            "FormationViolation",
            id="remote-stop-extra-property",
        ),
    ],
)
async def test_invalid_payload_error_codes(
    csms: DevCsms, charger: Any, action: str, payload: dict[str, Any], code: str
) -> None:
    """OCPP-J 4.2.3 Table 7: ProtocolError / TypeConstraintViolation /
    PropertyConstraintViolation / FormationViolation for schema violations; the request has
    no effect and the charger keeps serving."""
    h = await charger(csms)
    frame = await csms.call_raw(STATION_ID, action, payload)
    assert_callerror(frame, frame[1], code)
    await h.advance(2)
    assert h.app.reset_requested is None
    assert h.frames("StartTransaction") == []
    assert h.app.settings.get("HeartbeatInterval") == "3600"
    assert h.connector().state.operative
    await still_works(h, csms)
    assert_wire_spellings(csms)


# UnlockConnector with an unknown connectorId is not a CALLERROR case: OCPP 1.6 errata 3.87
# prescribes the CALLRESULT status NotSupported (see test_e2e_csms_requests.py).
@pytest.mark.parametrize(
    ("action", "payload"),
    [
        pytest.param(
            "RemoteStartTransaction", {"idTag": CARD, "connectorId": 9}, id="remote-start-9"
        ),
        pytest.param(
            "RemoteStartTransaction", {"idTag": CARD, "connectorId": 0}, id="remote-start-0"
        ),
        pytest.param(
            "RemoteStartTransaction", {"idTag": CARD, "connectorId": -1}, id="remote-start--1"
        ),
        pytest.param(
            "ChangeAvailability", {"connectorId": 9, "type": "Inoperative"}, id="availability-9"
        ),
        pytest.param(
            "ChangeAvailability", {"connectorId": -1, "type": "Inoperative"}, id="availability--1"
        ),
    ],
)
async def test_unknown_connector_property_constraint(
    csms: DevCsms, charger: Any, action: str, payload: dict[str, Any]
) -> None:
    """OCPP-J 4.2.3 Table 7 PropertyConstraintViolation for a connectorId the Charge Point does
    not have (3.8 connector numbering; RemoteStart 6.33: connectorId SHALL be > 0)."""
    h = await charger(csms)
    frame = await csms.call_raw(STATION_ID, action, payload)
    assert_callerror(frame, frame[1], "PropertyConstraintViolation")
    await h.advance(2)
    assert h.frames("StartTransaction") == []
    assert h.app.station.station_operative and h.connector().state.operative
    await still_works(h, csms)


# ----------------------------------------------------------------------------- resilience


async def test_barrage_of_bad_input_then_a_normal_session(csms: DevCsms, charger: Any) -> None:
    """OCPP-J 4.2.3: after many bad frames on one connection the charger still works end to
    end (same WebSocket, a full charging session), and every CALLERROR uses 1.6 spellings."""
    h = await charger(csms)
    bad_texts = [
        "garbage",
        "{}",
        "[]",
        '[2, "a1", "FooBar", {}]',
        '[2, "a2", "ReserveNow", {}]',
        '[2, "a3", "Reset", {}]',
        '[2, "a4", "Reset", {"type": 1}]',
        '[2, "a5", "Reset", {"type": "Never"}]',
        '[2, "a6", "Reset", {"type": "Soft", "x": 1}]',
        '[2, "a7", "ChangeAvailability", {"connectorId": 9, "type": "Inoperative"}]',
        '[2, "a8", "GetConfiguration", {"key": ' + json.dumps([f"k{i}" for i in range(65)]) + "}]",
        "[2, " + json.dumps("z" * 40) + ', "Heartbeat", {}]',
    ]
    for text in bad_texts:
        await csms.send_text(STATION_ID, text)
        frame = await csms.next_raw_response(STATION_ID, timeout_s=5)
        assert frame[0] == 4 and len(frame) == 5, (text, frame)
    codes = [json.loads(r.raw)[2] for r in csms.received_responses]
    assert "OccurenceConstraintViolation" in codes  # GetConfigurationMaxKeys (64) exceeded
    assert_wire_spellings(csms)
    await still_works(h, csms)
    # A complete session over the same connection.
    h.plug()
    await h.advance(1)
    h.tap()
    await csms.wait_for(lambda f: f.action == "StartTransaction", timeout_s=5)
    await h.settle(lambda: h.connector().hw.contactor.closed)
    await h.advance(60, step_s=5)
    h.tap()
    stop = await csms.wait_for(lambda f: f.action == "StopTransaction", timeout_s=5)
    assert stop.payload["reason"] == "Local"
    assert h.app.reset_requested is None
    assert h.app.client.connects == 1
