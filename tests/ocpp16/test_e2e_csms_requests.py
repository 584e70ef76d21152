"""End-to-end: every Core CSMS -> Charge Point request over a real WebSocket (OCPP 1.6 section 5),
plus metering (4.7), status reporting (4.9), boot (4.2) and HTTP Basic auth (OCPP-J 1.6 3.1 /
security whitepaper profile 1). The charger runs in-process on a manual clock.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call

from controller.dev.devcsms import DevCsms, StationDisconnected
from tests.conftest import CARD, STATION_ID

OTHER_CARD = "0B0B0B0B"


# ----------------------------------------------------------------------------- helpers


async def req(csms: DevCsms, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Send a CSMS CALL as raw JSON and return the CALLRESULT payload (fails on CALLERROR)."""
    frame = await csms.call_raw(STATION_ID, action, payload, timeout_s=5)
    assert frame[0] == 3, f"expected CALLRESULT to {action}, got {frame}"
    result = frame[2]
    assert isinstance(result, dict)
    return result


def statuses(h: Any, connector_id: int) -> list[str]:
    return [
        f.payload["status"]
        for f in h.frames("StatusNotification")
        if f.payload["connectorId"] == connector_id
    ]


async def wait_status(h: Any, connector_id: int, status: str, after: int = 0) -> dict[str, Any]:
    """Wait until the CSMS got StatusNotification ``status`` for the connector; return it."""

    def found() -> dict[str, Any] | None:
        frames = [
            f.payload
            for f in h.frames("StatusNotification")
            if f.payload["connectorId"] == connector_id
        ]
        for p in frames[after:]:
            if p["status"] == status:
                return p
        return None

    await h.settle(lambda: found() is not None)
    result = found()
    assert result is not None
    return result


async def start_session(h: Any, csms: DevCsms, connector_id: int = 1, card: str = CARD) -> int:
    """Plug in and tap: returns the CSMS transactionId once the contactor is closed."""
    before = len(h.frames("StartTransaction"))
    h.plug(connector_id)
    await h.advance(1)
    h.tap(card)
    await h.settle(lambda: len(h.frames("StartTransaction")) > before)
    await h.settle(lambda: h.connector(connector_id).hw.contactor.closed)
    await h.advance(1)
    await h.settle(lambda: csms.outstanding_calls(STATION_ID) == 0 and not _queued(h))
    return tx_id_of(h, connector_id)


def _queued(h: Any) -> int:
    return int(h.app.port.queued_messages())


def tx_id_of(h: Any, connector_id: int = 1) -> int:
    tx = h.app.store.get_transaction(h.connector(connector_id).tx_key)
    assert tx is not None and tx.shown_tx_id() is not None
    return int(tx.shown_tx_id())


async def wait_stop(csms: DevCsms) -> Any:
    return await csms.wait_for(lambda f: f.action == "StopTransaction", timeout_s=5)


def iter_key(value: Any, key: str) -> list[Any]:
    """Every value stored under ``key`` anywhere inside ``value`` (dicts and lists)."""
    found: list[Any] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k == key:
                found.append(v)
            found.extend(iter_key(v, key))
    elif isinstance(value, list):
        for item in value:
            found.extend(iter_key(item, key))
    return found


async def restart(h: Any, csms: DevCsms, charger: Any, **kwargs: Any) -> Any:
    """Stop the app without stopping transactions and start a new one on the same storage."""
    await h.app.stop(reason=None)
    await csms.wait_disconnected(STATION_ID, timeout_s=5)
    csms.clear_records()
    return await charger(csms, **kwargs)


# ----------------------------------------------------------------------------- 5.11 RemoteStart


async def test_remote_start_with_connector_then_plug(csms: DevCsms, charger: Any) -> None:
    """5.11 RemoteStartTransaction with connectorId: Accepted; StartTransaction (4.8) follows
    once the cable is plugged in (3.6), for the given idTag.

    OCTT: TC_011_1_CS (1.6); TC_F_03_CS (2.0.1)
    """
    h = await charger(csms)
    result = await req(csms, "RemoteStartTransaction", {"connectorId": 1, "idTag": CARD})
    assert result == {"status": "Accepted"}
    await wait_status(h, 1, "Preparing")
    await h.advance(2)
    assert h.frames("StartTransaction") == []
    h.plug()
    start = await csms.wait_for(lambda f: f.action == "StartTransaction", timeout_s=5)
    assert start.payload["connectorId"] == 1
    assert start.payload["idTag"] == CARD
    assert h.frames("Authorize") == []  # AuthorizeRemoteTxRequests is false
    await h.settle(lambda: h.connector().hw.contactor.closed)
    await h.advance(3)
    assert len(h.frames("StartTransaction")) == 1


async def test_remote_start_without_connector_picks_plugged_one(
    csms: DevCsms, charger: Any
) -> None:
    """5.11: without connectorId the Charge Point selects the connector (the plugged one)."""
    h = await charger(csms, connectors=2)
    h.plug(2)
    await wait_status(h, 2, "Preparing")
    result = await req(csms, "RemoteStartTransaction", {"idTag": CARD})
    assert result == {"status": "Accepted"}
    start = await csms.wait_for(lambda f: f.action == "StartTransaction", timeout_s=5)
    assert start.payload["connectorId"] == 2
    assert start.payload["idTag"] == CARD
    await h.settle(lambda: h.connector(2).hw.contactor.closed)
    assert not h.connector(1).hw.contactor.closed


async def test_remote_start_via_library_call(csms: DevCsms, charger: Any) -> None:
    """5.11 via the ocpp library's RemoteStartTransaction (schema-validated on both ends)."""
    h = await charger(csms)
    h.plug()
    await wait_status(h, 1, "Preparing")
    result = await csms.call(STATION_ID, call.RemoteStartTransaction(id_tag=CARD))
    assert result.status == "Accepted"
    await csms.wait_for(lambda f: f.action == "StartTransaction", timeout_s=5)


async def test_remote_start_rejected_for_busy_connector(csms: DevCsms, charger: Any) -> None:
    """5.11: a connector with a running transaction cannot start another -> Rejected."""
    h = await charger(csms)
    await start_session(h, csms)
    result = await req(csms, "RemoteStartTransaction", {"connectorId": 1, "idTag": OTHER_CARD})
    assert result == {"status": "Rejected"}
    # Without connectorId on a single-connector station: nothing free either.
    assert await req(csms, "RemoteStartTransaction", {"idTag": OTHER_CARD}) == {
        "status": "Rejected"
    }
    await h.advance(2)
    assert len(h.frames("StartTransaction")) == 1


async def test_remote_start_rejected_when_unavailable(csms: DevCsms, charger: Any) -> None:
    """5.11 + 5.2: an Inoperative connector does not accept a remote start."""
    h = await charger(csms)
    await req(csms, "ChangeAvailability", {"connectorId": 1, "type": "Inoperative"})
    await wait_status(h, 1, "Unavailable")
    result = await req(csms, "RemoteStartTransaction", {"connectorId": 1, "idTag": CARD})
    assert result == {"status": "Rejected"}


async def test_remote_start_authorizes_first_when_configured(csms: DevCsms, charger: Any) -> None:
    """5.11 / 9.1.3 AuthorizeRemoteTxRequests=true: Authorize.req precedes StartTransaction.

    OCTT: TC_010_CS (1.6); TC_F_01_CS (2.0.1)
    """
    h = await charger(csms, ocpp={"AuthorizeRemoteTxRequests": True})
    h.plug()
    await wait_status(h, 1, "Preparing")
    assert await req(csms, "RemoteStartTransaction", {"connectorId": 1, "idTag": CARD}) == {
        "status": "Accepted"
    }
    await csms.wait_for(lambda f: f.action == "StartTransaction", timeout_s=5)
    actions = [f.action for f in csms.received if f.action in ("Authorize", "StartTransaction")]
    assert actions == ["Authorize", "StartTransaction"]
    assert h.frames("Authorize")[0].payload == {"idTag": CARD}


async def test_remote_start_not_started_when_authorize_invalid(csms: DevCsms, charger: Any) -> None:
    """5.11 / 9.1.3: with AuthorizeRemoteTxRequests=true an Invalid idTag starts nothing."""
    csms.invalid_id_tags.add(OTHER_CARD)
    h = await charger(csms, ocpp={"AuthorizeRemoteTxRequests": True})
    h.plug()
    await req(csms, "RemoteStartTransaction", {"connectorId": 1, "idTag": OTHER_CARD})
    await csms.wait_for(lambda f: f.action == "Authorize", timeout_s=5)
    await h.advance(3)
    assert h.frames("StartTransaction") == []
    assert not h.connector().hw.contactor.closed


# ----------------------------------------------------------------------------- 5.12 RemoteStop


async def test_remote_stop_accepted_and_stops_with_reason_remote(
    csms: DevCsms, charger: Any
) -> None:
    """5.12 RemoteStopTransaction: Accepted, StopTransaction (4.10) with reason Remote.

    OCTT: TC_012_CS (1.6); TC_F_08_CS (2.0.1)
    """
    h = await charger(csms)
    tx_id = await start_session(h, csms)
    await h.advance(60, step_s=5)
    result = await req(csms, "RemoteStopTransaction", {"transactionId": tx_id})
    assert result == {"status": "Accepted"}
    stop = await wait_stop(csms)
    assert stop.payload["transactionId"] == tx_id
    assert stop.payload["reason"] == "Remote"
    assert "idTag" not in stop.payload or stop.payload["idTag"] == CARD
    assert not h.connector().hw.contactor.closed
    await wait_status(h, 1, "Finishing")


async def test_remote_stop_unknown_transaction_rejected(csms: DevCsms, charger: Any) -> None:
    """5.12: a transactionId the Charge Point does not know -> Rejected, nothing stops."""
    h = await charger(csms)
    tx_id = await start_session(h, csms)
    result = await req(csms, "RemoteStopTransaction", {"transactionId": tx_id + 1000})
    assert result == {"status": "Rejected"}
    await h.advance(2)
    assert h.frames("StopTransaction") == []
    assert h.connector().hw.contactor.closed


async def test_remote_stop_without_transaction_rejected(csms: DevCsms, charger: Any) -> None:
    """5.12: no transaction at all -> Rejected."""
    await charger(csms)
    assert await req(csms, "RemoteStopTransaction", {"transactionId": 1}) == {"status": "Rejected"}


# ----------------------------------------------------------------------------- 5.14 Reset


@pytest.mark.parametrize(("kind", "reason"), [("Soft", "SoftReset"), ("Hard", "HardReset")])
async def test_reset_stops_transaction_and_requests_restart(
    csms: DevCsms, charger: Any, kind: str, reason: str
) -> None:
    """5.14 Reset (errata 3.36): Accepted, the running transaction is stopped with reason
    SoftReset / HardReset and delivered, then the application is asked to restart."""
    h = await charger(csms)
    tx_id = await start_session(h, csms)
    await h.advance(30, step_s=5)
    assert await req(csms, "Reset", {"type": kind}) == {"status": "Accepted"}
    stop = await wait_stop(csms)
    assert stop.payload["reason"] == reason
    assert stop.payload["transactionId"] == tx_id
    await h.settle(lambda: h.app.reset_requested == kind)
    assert not h.connector().hw.contactor.closed


async def test_reset_without_transaction(csms: DevCsms, charger: Any) -> None:
    """5.14: Reset with no transaction: Accepted and restart requested, no StopTransaction."""
    h = await charger(csms)
    assert await req(csms, "Reset", {"type": "Soft"}) == {"status": "Accepted"}
    await h.settle(lambda: h.app.reset_requested == "Soft")
    assert h.frames("StopTransaction") == []


@pytest.mark.parametrize("reset", [None, "Soft", "Hard"])
async def test_stop_and_reset_close_the_connection_normally(
    csms: DevCsms, charger: Any, reset: str | None
) -> None:
    """RFC 6455 7.4.1: a graceful stop or a Reset closes the WebSocket with 1000 (normal
    closure), not with 1011 (internal error) as a cancelled connection would, and the charger
    does not reconnect on its way down."""
    closed: list[StationDisconnected] = []
    csms.on_event = lambda e: closed.append(e) if isinstance(e, StationDisconnected) else None
    h = await charger(csms)
    if reset is not None:
        assert await req(csms, "Reset", {"type": reset}) == {"status": "Accepted"}
        await h.settle(lambda: h.app.reset_requested == reset)
    await h.app.stop()
    await h.settle(lambda: len(closed) == 1)
    expected = f"{reset} reset" if reset else "charge point stopping"
    assert (closed[0].code, closed[0].reason) == (1000, expected)
    assert not csms.connected(STATION_ID)
    assert len(h.frames("BootNotification")) == 1


# ----------------------------------------------------------------------------- 5.2 Availability


async def test_change_availability_inoperative_and_back(csms: DevCsms, charger: Any) -> None:
    """5.2 ChangeAvailability: Inoperative -> Accepted + StatusNotification Unavailable;
    Operative -> Available again; repeating the current state is still Accepted."""
    h = await charger(csms)
    n = len(statuses(h, 1))
    result = await req(csms, "ChangeAvailability", {"connectorId": 1, "type": "Inoperative"})
    assert result == {"status": "Accepted"}
    await wait_status(h, 1, "Unavailable", after=n)
    # A car plugged into an Unavailable connector does not make it Preparing.
    h.plug()
    await h.advance(2)
    assert statuses(h, 1)[-1] == "Unavailable"
    h.tap()
    await h.advance(2)
    assert h.frames("Authorize") == [] and h.frames("StartTransaction") == []
    assert await req(csms, "ChangeAvailability", {"connectorId": 1, "type": "Inoperative"}) == {
        "status": "Accepted"
    }
    n = len(statuses(h, 1))
    assert await req(csms, "ChangeAvailability", {"connectorId": 1, "type": "Operative"}) == {
        "status": "Accepted"
    }
    await wait_status(h, 1, "Preparing", after=n)


async def test_change_availability_scheduled_during_transaction(
    csms: DevCsms, charger: Any
) -> None:
    """5.2: during a transaction the answer is Scheduled, charging continues, and the change
    is applied (StatusNotification Unavailable) once the transaction has finished."""
    h = await charger(csms)
    await start_session(h, csms)
    n = len(statuses(h, 1))
    result = await req(csms, "ChangeAvailability", {"connectorId": 1, "type": "Inoperative"})
    assert result == {"status": "Scheduled"}
    await h.advance(5)
    assert h.connector().hw.contactor.closed
    assert "Unavailable" not in statuses(h, 1)[n:]
    h.tap()  # stop locally
    stop = await wait_stop(csms)
    assert stop.payload["reason"] == "Local"
    await wait_status(h, 1, "Unavailable", after=n)
    # Still Unavailable after unplugging; a new session is impossible.
    h.unplug()
    await h.advance(2)
    assert statuses(h, 1)[-1] == "Unavailable"
    assert await req(csms, "RemoteStartTransaction", {"connectorId": 1, "idTag": CARD}) == {
        "status": "Rejected"
    }


async def test_change_availability_connector_zero_affects_all(csms: DevCsms, charger: Any) -> None:
    """5.2: connectorId 0 applies to the Charge Point and all connectors."""
    h = await charger(csms, connectors=2)
    counts = {c: len(statuses(h, c)) for c in (0, 1, 2)}
    result = await req(csms, "ChangeAvailability", {"connectorId": 0, "type": "Inoperative"})
    assert result == {"status": "Accepted"}
    for c in (0, 1, 2):
        await wait_status(h, c, "Unavailable", after=counts[c])
    counts = {c: len(statuses(h, c)) for c in (0, 1, 2)}
    result = await req(csms, "ChangeAvailability", {"connectorId": 0, "type": "Operative"})
    assert result == {"status": "Accepted"}
    for c in (0, 1, 2):
        await wait_status(h, c, "Available", after=counts[c])


async def test_change_availability_connector_zero_scheduled_during_transaction(
    csms: DevCsms, charger: Any
) -> None:
    """5.2: connectorId 0 while connector 1 charges -> Scheduled; the idle connector 2 is
    Unavailable at once, connector 1 only after its transaction."""
    h = await charger(csms, connectors=2)
    await start_session(h, csms, connector_id=1)
    n1, n2 = len(statuses(h, 1)), len(statuses(h, 2))
    result = await req(csms, "ChangeAvailability", {"connectorId": 0, "type": "Inoperative"})
    assert result == {"status": "Scheduled"}
    await wait_status(h, 2, "Unavailable", after=n2)
    await h.advance(3)
    assert h.connector(1).hw.contactor.closed
    assert "Unavailable" not in statuses(h, 1)[n1:]
    h.tap()
    await wait_stop(csms)
    await wait_status(h, 1, "Unavailable", after=n1)


async def test_change_availability_persists_across_restart(csms: DevCsms, charger: Any) -> None:
    """5.2 "Persistent states: Connector set to Unavailable shall persist a reboot".

    OCTT: TC_034_CS (1.6); TC_B_23_CS (2.0.1)
    """
    h = await charger(csms, connectors=2)
    await req(csms, "ChangeAvailability", {"connectorId": 2, "type": "Inoperative"})
    await wait_status(h, 2, "Unavailable")
    h2 = await restart(h, csms, charger, connectors=2)
    await wait_status(h2, 2, "Unavailable")
    await wait_status(h2, 1, "Available")
    assert "Available" not in statuses(h2, 2)
    assert await req(csms, "RemoteStartTransaction", {"connectorId": 2, "idTag": CARD}) == {
        "status": "Rejected"
    }


# ----------------------------------------------------------------------------- 5.3 / 5.8 config

# Section 9.1 Core keys with their accessibility (R = read-only). AuthorizationKey (OCPP-J
# errata 3.12) is write-only and therefore not part of the full listing.
CORE_KEYS_READONLY = {
    "AllowOfflineTxForUnknownId": False,
    "AuthorizationCacheEnabled": False,
    "AuthorizeRemoteTxRequests": False,
    "ClockAlignedDataInterval": False,
    "ConnectionTimeOut": False,
    "ConnectorPhaseRotation": False,
    "ConnectorPhaseRotationMaxLength": True,
    "GetConfigurationMaxKeys": True,
    "HeartbeatInterval": False,
    "LocalAuthorizeOffline": False,
    "LocalPreAuthorize": False,
    "MeterValuesAlignedData": False,
    "MeterValuesAlignedDataMaxLength": True,
    "MeterValuesSampledData": False,
    "MeterValuesSampledDataMaxLength": True,
    "MeterValueSampleInterval": False,
    "MinimumStatusDuration": False,
    "NumberOfConnectors": True,
    "ResetRetries": False,
    "StopTransactionOnEVSideDisconnect": False,
    "StopTransactionOnInvalidId": False,
    "StopTxnAlignedData": False,
    "StopTxnAlignedDataMaxLength": True,
    "StopTxnSampledData": False,
    "StopTxnSampledDataMaxLength": True,
    "SupportedFeatureProfiles": True,
    "TransactionMessageAttempts": False,
    "TransactionMessageRetryInterval": False,
    "UnlockConnectorOnEVSideDisconnect": False,
    "WebSocketPingInterval": False,
}


async def test_get_configuration_lists_all_core_keys(csms: DevCsms, charger: Any) -> None:
    """5.8 GetConfiguration without keys returns every key with value and readonly flag
    (9.1 accessibility); AuthorizationKey is write-only (OCPP-J errata 3.12)."""
    await charger(csms, connectors=2)
    result = await req(csms, "GetConfiguration", {})
    entries = {e["key"]: e for e in result["configurationKey"]}
    assert "unknownKey" not in result or result["unknownKey"] == []
    for name, readonly in CORE_KEYS_READONLY.items():
        assert name in entries, f"{name} missing"
        assert entries[name]["readonly"] is readonly, name
        assert isinstance(entries[name]["value"], str)
    assert entries["NumberOfConnectors"]["value"] == "2"
    assert entries["MeterValueSampleInterval"]["value"] == "60"  # from the TOML overrides
    assert entries["HeartbeatInterval"]["value"] == "3600"  # BootNotification.conf interval
    assert "Core" in entries["SupportedFeatureProfiles"]["value"].split(",")
    assert "AuthorizationKey" not in entries or "value" not in entries["AuthorizationKey"]
    # 5.8: "If the list of keys in the request PDU is empty or missing" -> all keys.
    assert await req(csms, "GetConfiguration", {"key": []}) == result
    # Same through the ocpp library (schema-validated on the CSMS side).
    lib = await csms.call(STATION_ID, call.GetConfiguration())
    assert len(lib.configuration_key) == len(result["configurationKey"])


async def test_get_configuration_specific_and_unknown_keys(csms: DevCsms, charger: Any) -> None:
    """5.8: only the requested keys; unrecognized keys are listed in unknownKey."""
    await charger(csms)
    result = await req(
        csms, "GetConfiguration", {"key": ["HeartbeatInterval", "NoSuchKey", "NumberOfConnectors"]}
    )
    assert result["unknownKey"] == ["NoSuchKey"]
    assert result["configurationKey"] == [
        {"key": "HeartbeatInterval", "readonly": False, "value": "3600"},
        {"key": "NumberOfConnectors", "readonly": True, "value": "1"},
    ]
    only_unknown = await req(csms, "GetConfiguration", {"key": ["Nope"]})
    assert only_unknown.get("unknownKey") == ["Nope"]
    assert not only_unknown.get("configurationKey")


async def test_get_configuration_too_many_keys(csms: DevCsms, charger: Any) -> None:
    """5.8 / 9.1.9 GetConfigurationMaxKeys: more keys than allowed -> CALLERROR with the 1.6
    spelling OccurenceConstraintViolation (OCPP-J 4.2.3, errata 5.1)."""
    await charger(csms)
    maximum = int(
        (await req(csms, "GetConfiguration", {"key": ["GetConfigurationMaxKeys"]}))[
            "configurationKey"
        ][0]["value"]
    )
    keys = [f"K{i}" for i in range(maximum + 1)]
    frame = await csms.call_raw(STATION_ID, "GetConfiguration", {"key": keys})
    assert frame[0] == 4 and frame[2] == "OccurenceConstraintViolation"
    ok = await req(csms, "GetConfiguration", {"key": keys[:maximum]})
    assert len(ok["unknownKey"]) == maximum


async def test_change_configuration_statuses(csms: DevCsms, charger: Any) -> None:
    """5.3 ChangeConfiguration: Accepted / RebootRequired / NotSupported / Rejected."""
    h = await charger(csms)

    async def change(key: str, value: str) -> str:
        result = await req(csms, "ChangeConfiguration", {"key": key, "value": value})
        return str(result["status"])

    assert await change("MeterValueSampleInterval", "30") == "Accepted"
    assert await change("LocalPreAuthorize", "TRUE") == "Accepted"
    assert await change("NoSuchKey", "1") == "NotSupported"
    # Read-only keys (9.1.8, 9.1.9, 9.1.19, 9.1.29).
    assert await change("NumberOfConnectors", "4") == "Rejected"
    assert await change("GetConfigurationMaxKeys", "10") == "Rejected"
    assert await change("SupportedFeatureProfiles", "Core") == "Rejected"
    # 5.3: "out-of-range values and values that do not conform to an expected format".
    assert await change("HeartbeatInterval", "abc") == "Rejected"
    assert await change("HeartbeatInterval", "-5") == "Rejected"
    assert await change("HeartbeatInterval", "1.5") == "Rejected"
    assert await change("LocalAuthorizeOffline", "yes") == "Rejected"
    assert await change("MeterValuesSampledData", "Energy.Active.Import.Register,Foo") == (
        "Rejected"
    )
    # 3.16.4 / 9.1.17: a valid measurand this meter cannot supply is rejected too.
    assert await change("MeterValuesSampledData", "SoC") == "Rejected"
    # 9.1.34: "Negative values are not allowed. ChangeConfiguration is expected to return
    # a REJECTED result."
    assert await change("WebSocketPingInterval", "-1") == "Rejected"
    # Applied at the next connection.
    assert await change("WebSocketPingInterval", "30") == "RebootRequired"
    # Security whitepaper A01: Accepted, then the charger reconnects with the new key.
    assert await change("AuthorizationKey", "0011223344556677889900112233445566778899") == (
        "Accepted"
    )
    result = await req(
        csms,
        "GetConfiguration",
        {
            "key": [
                "MeterValueSampleInterval",
                "LocalPreAuthorize",
                "HeartbeatInterval",
                "MeterValuesSampledData",
                "WebSocketPingInterval",
                "NumberOfConnectors",
            ]
        },
    )
    values = {e["key"]: e.get("value") for e in result["configurationKey"]}
    assert values == {
        "MeterValueSampleInterval": "30",
        "LocalPreAuthorize": "true",
        "HeartbeatInterval": "3600",
        "MeterValuesSampledData": "Energy.Active.Import.Register,Power.Active.Import",
        "WebSocketPingInterval": "30",
        "NumberOfConnectors": "1",
    }
    assert h.app.settings.get("AuthorizationKey") != ""


async def test_authorization_key_is_never_read_back(csms: DevCsms, charger: Any) -> None:
    """OCPP-J errata 3.12: AuthorizationKey is write-only, never returned with a value."""
    await charger(csms)
    secret = "00112233445566778899aabbccddeeff"
    assert (await req(csms, "ChangeConfiguration", {"key": "AuthorizationKey", "value": secret}))[
        "status"
    ] == "Accepted"
    everything = await req(csms, "GetConfiguration", {})
    explicit = await req(csms, "GetConfiguration", {"key": ["AuthorizationKey"]})
    for result in (everything, explicit):
        for entry in result.get("configurationKey", []):
            if entry["key"] == "AuthorizationKey":
                assert "value" not in entry
            assert secret not in str(entry.get("value"))
    # Longer than 40 characters is not a valid key (errata 3.12).
    assert (await req(csms, "ChangeConfiguration", {"key": "AuthorizationKey", "value": "a" * 41}))[
        "status"
    ] == "Rejected"


async def test_configuration_persists_across_restart(csms: DevCsms, charger: Any) -> None:
    """5.3 / 9: values set by the CSMS survive a restart and win over the local config file."""
    h = await charger(csms)
    for key, value in (
        ("MeterValueSampleInterval", "17"),  # also overridden in the TOML ocpp table (60)
        ("ConnectionTimeOut", "45"),
        ("StopTxnSampledData", "Energy.Active.Import.Register,Power.Active.Import"),
    ):
        assert (await req(csms, "ChangeConfiguration", {"key": key, "value": value}))[
            "status"
        ] == "Accepted"
    await restart(h, csms, charger)
    result = await req(
        csms,
        "GetConfiguration",
        {"key": ["MeterValueSampleInterval", "ConnectionTimeOut", "StopTxnSampledData"]},
    )
    assert {e["key"]: e["value"] for e in result["configurationKey"]} == {
        "MeterValueSampleInterval": "17",
        "ConnectionTimeOut": "45",
        "StopTxnSampledData": "Energy.Active.Import.Register,Power.Active.Import",
    }


async def test_meter_value_sample_interval_change_applies_to_next_transaction(
    csms: DevCsms, charger: Any
) -> None:
    """5.3 + 9.1.19 MeterValueSampleInterval: after changing it to 15 s, the next
    transaction samples every 15 s (instead of 60 s)."""
    h = await charger(csms)
    assert (
        await req(csms, "ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "15"})
    )["status"] == "Accepted"
    tx_id = await start_session(h, csms)
    before = len(h.frames("MeterValues"))
    await h.advance(60)
    await h.settle(lambda: _queued(h) == 0)
    periodic = [
        f
        for f in h.frames("MeterValues")[before:]
        if f.payload.get("transactionId") == tx_id
        and f.payload["meterValue"][0]["sampledValue"][0]["context"] == "Sample.Periodic"
    ]
    assert len(periodic) in (4, 5), [f.payload for f in periodic]
    stamps = [datetime.fromisoformat(f.payload["meterValue"][0]["timestamp"]) for f in periodic]
    gaps = {(b - a).total_seconds() for a, b in zip(stamps, stamps[1:], strict=False)}
    assert gaps == {15.0}


# ----------------------------------------------------------------------------- 5.4 ClearCache


async def _session_then_offline(h: Any, csms: DevCsms) -> None:
    """Run a session (caching CARD from the CSMS answer), unplug, then lose the CSMS."""
    await start_session(h, csms)
    h.tap()
    await wait_stop(csms)
    h.unplug()
    await h.advance(2)
    await h.settle(lambda: _queued(h) == 0)
    csms.refuse_connections = True
    await csms.disconnect(STATION_ID)
    await h.settle(lambda: h.app.port.connection_state() != "accepted")


async def test_cached_card_is_authorized_offline(csms: DevCsms, charger: Any) -> None:
    """3.5.1 Authorization Cache (control case for ClearCache): a card accepted before is
    accepted offline (LocalAuthorizeOffline=true)."""
    h = await charger(csms)
    await _session_then_offline(h, csms)
    h.plug()
    await h.advance(1)
    h.tap()
    await h.advance(2)
    await h.settle(lambda: h.connector().hw.contactor.closed)


async def test_clear_cache_forgets_cached_cards(csms: DevCsms, charger: Any) -> None:
    """5.4 ClearCache: Accepted; afterwards the previously cached card is no longer
    authorized offline (3.5.1, AllowOfflineTxForUnknownId=false).

    OCTT: TC_061_CS (1.6); TC_C_37_CS (2.0.1)
    """
    h = await charger(csms)
    await start_session(h, csms)
    h.tap()
    await wait_stop(csms)
    h.unplug()
    await h.advance(2)
    await h.settle(lambda: _queued(h) == 0)  # StopTransaction.conf re-caches the card
    assert h.app.store.cache_get(CARD) is not None
    assert await req(csms, "ClearCache", {}) == {"status": "Accepted"}
    assert h.app.store.cache_get(CARD) is None
    csms.refuse_connections = True
    await csms.disconnect(STATION_ID)
    await h.settle(lambda: h.app.port.connection_state() != "accepted")
    h.plug()
    await h.advance(1)
    h.tap()
    await h.settle(lambda: h.connector().state.authorizing is None)
    await h.advance(3)
    assert not h.connector().state.tx_active
    assert not h.connector().hw.contactor.closed


# ----------------------------------------------------------------------------- 5.6 DataTransfer


async def test_data_transfer_unknown_vendor(csms: DevCsms, charger: Any) -> None:
    """5.6 / 4.3 DataTransfer: no vendor extensions -> UnknownVendorId."""
    await charger(csms)
    result = await req(
        csms, "DataTransfer", {"vendorId": "com.example", "messageId": "x", "data": "1"}
    )
    assert result["status"] == "UnknownVendorId"
    lib = await csms.call(STATION_ID, call.DataTransfer(vendor_id="com.example"))
    assert lib.status == "UnknownVendorId"


# ----------------------------------------------------------------------------- 5.18 Unlock


async def test_unlock_connector_stops_transaction(csms: DevCsms, charger: Any) -> None:
    """5.18 UnlockConnector during a transaction: the transaction is stopped with reason
    UnlockCommand, the cable is unlocked -> Unlocked.

    OCTT: TC_018_1_CS (1.6); TC_F_05_CS (2.0.1)
    """
    h = await charger(csms)
    tx_id = await start_session(h, csms)
    await h.settle(lambda: h.rig().lock.locked)
    result = await req(csms, "UnlockConnector", {"connectorId": 1})
    assert result == {"status": "Unlocked"}
    stop = await wait_stop(csms)
    assert stop.payload["reason"] == "UnlockCommand"
    assert stop.payload["transactionId"] == tx_id
    assert not h.connector().hw.contactor.closed
    assert not h.rig().lock.locked


async def test_unlock_connector_idle(csms: DevCsms, charger: Any) -> None:
    """5.18: unlocking an idle connector -> Unlocked, no StopTransaction."""
    h = await charger(csms)
    assert await req(csms, "UnlockConnector", {"connectorId": 1}) == {"status": "Unlocked"}
    await h.advance(1)
    assert h.frames("StopTransaction") == []


async def test_unlock_unknown_connector_not_supported(csms: DevCsms, charger: Any) -> None:
    """Errata 3.87 (7.42 UnlockStatus): "NotSupported: Charge Point has no connector lock, or
    ConnectorId is unknown." (the errata win over a generic CALLERROR).

    OCTT: TC_F_10_CS (2.0.1 equivalent: UnknownConnector)
    """
    await charger(csms)
    frame = await csms.call_raw(STATION_ID, "UnlockConnector", {"connectorId": 9})
    assert frame[0] == 3, frame
    assert frame[2] == {"status": "NotSupported"}


# ----------------------------------------------------------------------------- 5.17 Trigger


async def test_trigger_status_notification(csms: DevCsms, charger: Any) -> None:
    """5.17 TriggerMessage StatusNotification: Accepted, then the current status is sent
    (for the given connector, or for all connectors incl. 0 without connectorId)."""
    h = await charger(csms, connectors=2)
    h.plug(2)
    await wait_status(h, 2, "Preparing")
    n = len(h.frames("StatusNotification"))
    result = await req(
        csms, "TriggerMessage", {"requestedMessage": "StatusNotification", "connectorId": 2}
    )
    assert result == {"status": "Accepted"}
    await h.settle(lambda: len(h.frames("StatusNotification")) > n)
    await h.advance(1)
    new = [f.payload for f in h.frames("StatusNotification")[n:]]
    assert [(p["connectorId"], p["status"]) for p in new] == [(2, "Preparing")]
    n = len(h.frames("StatusNotification"))
    assert await req(csms, "TriggerMessage", {"requestedMessage": "StatusNotification"}) == {
        "status": "Accepted"
    }
    await h.settle(lambda: len(h.frames("StatusNotification")) >= n + 3)
    new = [f.payload for f in h.frames("StatusNotification")[n:]]
    assert sorted((p["connectorId"], p["status"]) for p in new) == [
        (0, "Available"),
        (1, "Available"),
        (2, "Preparing"),
    ]


async def test_trigger_heartbeat(csms: DevCsms, charger: Any) -> None:
    """5.17 TriggerMessage Heartbeat: Accepted, then a Heartbeat.req (long before the
    HeartbeatInterval of 3600 s)."""
    h = await charger(csms)
    assert h.frames("Heartbeat") == []
    assert await req(csms, "TriggerMessage", {"requestedMessage": "Heartbeat"}) == {
        "status": "Accepted"
    }
    hb = await csms.wait_for(lambda f: f.action == "Heartbeat", timeout_s=5)
    assert hb.payload == {}


async def test_trigger_meter_values(csms: DevCsms, charger: Any) -> None:
    """5.17 TriggerMessage MeterValues (errata 3.46): Accepted, then MeterValues with the
    configured measurands, context Trigger; during a transaction with its transactionId."""
    h = await charger(csms)
    assert await req(
        csms, "TriggerMessage", {"requestedMessage": "MeterValues", "connectorId": 1}
    ) == {"status": "Accepted"}
    mv = await csms.wait_for(lambda f: f.action == "MeterValues", timeout_s=5)
    assert mv.payload["connectorId"] == 1
    assert "transactionId" not in mv.payload
    sampled = mv.payload["meterValue"][0]["sampledValue"]
    assert {s["context"] for s in sampled} == {"Trigger"}
    energy = [s for s in sampled if s["measurand"] == "Energy.Active.Import.Register"]
    assert energy and energy[0]["unit"] == "Wh" and energy[0]["value"] == "1000"
    tx_id = await start_session(h, csms)
    n = len(h.frames("MeterValues"))
    await req(csms, "TriggerMessage", {"requestedMessage": "MeterValues", "connectorId": 1})
    await h.settle(lambda: len(h.frames("MeterValues")) > n)
    assert h.frames("MeterValues")[n].payload["transactionId"] == tx_id


async def test_trigger_unknown_connector_rejected(csms: DevCsms, charger: Any) -> None:
    """5.17 / 7.43 TriggerMessageStatus: a connectorId that does not exist -> Rejected."""
    await charger(csms)
    result = await req(
        csms, "TriggerMessage", {"requestedMessage": "StatusNotification", "connectorId": 7}
    )
    assert result == {"status": "Rejected"}


async def test_every_trigger_message_is_implemented(csms: DevCsms, charger: Any) -> None:
    """5.17 / 7.43 MessageTrigger: each of the six messages is sent on request (none answers
    NotImplemented); BootNotification is Rejected once accepted (errata 3.35, below)."""
    await charger(csms)
    answers = {}
    for message in (
        "DiagnosticsStatusNotification",
        "FirmwareStatusNotification",
        "Heartbeat",
        "MeterValues",
        "StatusNotification",
    ):
        answers[message] = (await req(csms, "TriggerMessage", {"requestedMessage": message}))[
            "status"
        ]
    assert set(answers.values()) == {"Accepted"}, answers
    await csms.wait_for(lambda f: f.action == "DiagnosticsStatusNotification")
    await csms.wait_for(lambda f: f.action == "FirmwareStatusNotification")


async def test_trigger_boot_notification_after_accepted_rejected(
    csms: DevCsms, charger: Any
) -> None:
    """OCPP 1.6 errata 3.35: after BootNotification.conf(Accepted), until the next
    reset/reboot/reconnect, the Charge Point is RECOMMENDED to Reject a TriggerMessage for
    BootNotification (a Pending answer would otherwise leave the session in limbo)."""
    h = await charger(csms)
    result = await req(csms, "TriggerMessage", {"requestedMessage": "BootNotification"})
    assert result == {"status": "Rejected"}
    await h.advance(1)
    assert len(h.frames("BootNotification")) == 1


# ----------------------------------------------------------------------------- 4.7 MeterValues


async def test_periodic_meter_values_during_transaction(csms: DevCsms, charger: Any) -> None:
    """4.7 / 3.16.1 / 9.1.19: every MeterValueSampleInterval (60 s) a MeterValues.req with the
    transactionId and MeterValuesSampledData (energy in Wh, power in W), Sample.Periodic."""
    h = await charger(csms)
    tx_id = await start_session(h, csms)
    await h.advance(185, step_s=5)
    await h.settle(lambda: _queued(h) == 0)
    frames = [f for f in h.frames("MeterValues") if f.payload.get("transactionId") == tx_id]
    assert len(frames) == 3
    last_energy = 1000
    for f in frames:
        assert f.payload["connectorId"] == 1
        (mv,) = f.payload["meterValue"]
        by_measurand = {s["measurand"]: s for s in mv["sampledValue"]}
        assert set(by_measurand) == {"Energy.Active.Import.Register", "Power.Active.Import"}
        energy = by_measurand["Energy.Active.Import.Register"]
        power = by_measurand["Power.Active.Import"]
        assert energy["unit"] == "Wh" and power["unit"] == "W"
        assert {energy["context"], power["context"]} == {"Sample.Periodic"}
        assert int(energy["value"]) > last_energy
        last_energy = int(energy["value"])
        assert float(power["value"]) == pytest.approx(11000, rel=0.01)
    # 11 kW for ~3 minutes.
    assert 500 < last_energy - 1000 < 600


async def test_clock_aligned_meter_values(csms: DevCsms, charger: Any) -> None:
    """4.7 / 3.16.2 / 9.1.5 ClockAlignedDataInterval=900: MeterValues with context
    Sample.Clock at every quarter hour (the manual clock starts at 12:00:00Z)."""
    h = await charger(csms, ocpp={"ClockAlignedDataInterval": 900})
    await h.advance(1850, step_s=10)
    await h.settle(lambda: len(h.frames("MeterValues")) >= 2)
    frames = h.frames("MeterValues")
    assert len(frames) == 2
    for f, expected in zip(frames, ("12:15:00", "12:30:00"), strict=True):
        (mv,) = f.payload["meterValue"]
        assert expected in mv["timestamp"]
        (sv,) = mv["sampledValue"]  # MeterValuesAlignedData default: energy only
        assert sv["context"] == "Sample.Clock"
        assert sv["measurand"] == "Energy.Active.Import.Register" and sv["unit"] == "Wh"
        assert "transactionId" not in f.payload


async def test_stop_txn_sampled_data_in_transaction_data(csms: DevCsms, charger: Any) -> None:
    """4.10 / 9.1.27 StopTxnSampledData: StopTransaction.transactionData carries the
    Transaction.Begin, periodic and Transaction.End samples of those measurands."""
    h = await charger(csms)
    assert (
        await req(
            csms,
            "ChangeConfiguration",
            {"key": "StopTxnSampledData", "value": "Energy.Active.Import.Register,Voltage"},
        )
    )["status"] == "Accepted"
    await start_session(h, csms)
    await h.advance(125, step_s=5)
    h.tap()
    stop = await wait_stop(csms)
    data = stop.payload["transactionData"]
    contexts = [mv["sampledValue"][0]["context"] for mv in data]
    assert contexts[0] == "Transaction.Begin" and contexts[-1] == "Transaction.End"
    assert contexts.count("Sample.Periodic") == 2
    for mv in data:
        measurands = {s["measurand"] for s in mv["sampledValue"]}
        assert measurands == {"Energy.Active.Import.Register", "Voltage"}
    energies = [
        int(s["value"])
        for mv in data
        for s in mv["sampledValue"]
        if s["measurand"] == "Energy.Active.Import.Register"
    ]
    assert energies[0] == 1000  # meterStart
    assert energies[-1] == stop.payload["meterStop"]
    assert energies == sorted(energies)


# ----------------------------------------------------------------------------- 4.9 Status


async def test_status_sequence_of_a_session(csms: DevCsms, charger: Any) -> None:
    """4.9 StatusNotification: Available -> Preparing -> Charging -> Finishing -> Available
    for a plug, tap, tap, unplug session (errata 3.19: always sent)."""
    h = await charger(csms)
    h.plug()
    await wait_status(h, 1, "Preparing")
    h.tap()
    await wait_status(h, 1, "Charging")
    await h.advance(30, step_s=5)
    h.tap()
    await wait_status(h, 1, "Finishing")
    await h.advance(2)
    h.unplug()
    await wait_status(h, 1, "Available", after=1)
    seen = [s for s in statuses(h, 1) if s != "SuspendedEV"]  # EV may answer the pilot late
    assert seen == ["Available", "Preparing", "Charging", "Finishing", "Available"]
    codes = {f.payload["errorCode"] for f in h.frames("StatusNotification")}
    assert codes == {"NoError"}


async def test_fault_reports_faulted_and_opens_contactor(csms: DevCsms, charger: Any) -> None:
    """4.9 / 7.6: a ground fault while charging -> contactor opens, StatusNotification
    Faulted with errorCode GroundFailure; clearing it reports NoError again."""
    h = await charger(csms)
    await start_session(h, csms)
    n = len(statuses(h, 1))
    h.rig().fault.inject("GroundFailure")
    faulted = await wait_status(h, 1, "Faulted", after=n)
    assert faulted["errorCode"] == "GroundFailure"
    assert not h.connector().hw.contactor.closed
    assert not h.rig().contactor.physically_closed
    await h.advance(10)
    assert not h.connector().hw.contactor.closed
    n = len(statuses(h, 1))
    h.rig().fault.clear()
    await h.settle(lambda: len(statuses(h, 1)) > n)
    last = [f.payload for f in h.frames("StatusNotification") if f.payload["connectorId"] == 1][-1]
    assert last["status"] != "Faulted" and last["errorCode"] == "NoError"


async def test_every_timestamp_has_a_utc_offset(csms: DevCsms, charger: Any) -> None:
    """3.14 Time zones / errata 3.10 time notations: every timestamp the Charge Point sends
    is ISO 8601 with an explicit UTC offset ("Z" or "+00:00")."""
    h = await charger(csms, ocpp={"ClockAlignedDataInterval": 60})
    await start_session(h, csms)
    await h.advance(130, step_s=5)
    await req(csms, "TriggerMessage", {"requestedMessage": "MeterValues"})
    h.tap()
    await wait_stop(csms)
    h.unplug()
    await h.advance(2)
    await h.settle(lambda: _queued(h) == 0)
    stamps = [ts for f in csms.received for ts in iter_key(f.payload, "timestamp")]
    assert len(stamps) > 10
    for ts in stamps:
        assert isinstance(ts, str)
        assert ts.endswith(("Z", "+00:00")), ts
        parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        offset = parsed.utcoffset()
        assert offset is not None and offset.total_seconds() == 0, ts


# ----------------------------------------------------------------------------- 4.2 Boot


async def test_boot_pending_then_accepted(csms: DevCsms, charger: Any) -> None:
    """4.2 BootNotification Pending: no other CALL from the Charge Point before Accepted
    (not even StatusNotification for a car plugged meanwhile), yet it answers CSMS requests
    such as GetConfiguration / ChangeConfiguration; the retry honours the interval."""
    csms.boot_status = "Pending"
    csms.boot_retry_interval_s = 10
    h = await charger(csms, wait_accepted=False)
    await csms.wait_for(lambda f: f.action == "BootNotification", timeout_s=5)
    conf = await req(csms, "GetConfiguration", {"key": ["NumberOfConnectors"]})
    assert conf["configurationKey"][0]["value"] == "1"
    assert (await req(csms, "ChangeConfiguration", {"key": "ConnectionTimeOut", "value": "90"}))[
        "status"
    ] == "Accepted"
    h.plug()
    await h.advance(9)
    assert [f.action for f in csms.received] == ["BootNotification"]
    await h.advance(2)
    await h.settle(lambda: len(h.frames("BootNotification")) == 2)
    await h.advance(5)
    assert {f.action for f in csms.received} == {"BootNotification"}
    assert h.app.port.connection_state() == "pending"
    csms.boot_status = "Accepted"
    await h.advance(10)
    await h.settle(lambda: h.app.port.connection_state() == "accepted")
    await wait_status(h, 1, "Preparing")
    actions = [f.action for f in csms.received]
    first_other = next(i for i, a in enumerate(actions) if a != "BootNotification")
    # Queued messages (the boot's StartupOfTheDevice security event) wait for Accepted too.
    assert set(actions[first_other:]) <= {
        "StatusNotification",
        "Heartbeat",
        "SecurityEventNotification",
    }
    assert "BootNotification" not in actions[first_other:]
    assert len(h.frames("BootNotification")) == 3
    boot_answers = [
        r.payload["status"] for r in csms.sent_results if r.action == "BootNotification"
    ]
    assert boot_answers == ["Pending", "Pending", "Accepted"]


async def test_trigger_message_while_pending(csms: DevCsms, charger: Any) -> None:
    """4.2: while Pending the Charge Point SHALL NOT send requests "unless it has been
    instructed by the Central System to do so with a TriggerMessage.req"; 5.17: messages the
    Charge Point marks as accepted SHOULD be sent (Heartbeat is, StatusNotification is not)."""
    csms.boot_status = "Pending"
    csms.boot_retry_interval_s = 60
    h = await charger(csms, wait_accepted=False)
    await csms.wait_for(lambda f: f.action == "BootNotification", timeout_s=5)
    assert await req(csms, "TriggerMessage", {"requestedMessage": "Heartbeat"}) == {
        "status": "Accepted"
    }
    await csms.wait_for(lambda f: f.action == "Heartbeat", timeout_s=5)
    assert h.app.port.connection_state() == "pending"
    result = await req(
        csms, "TriggerMessage", {"requestedMessage": "StatusNotification", "connectorId": 1}
    )
    assert result == {"status": "Accepted"}
    sn = await csms.wait_for(lambda f: f.action == "StatusNotification", timeout_s=1)
    assert sn.payload["connectorId"] == 1 and sn.payload["status"] == "Available"
    assert h.app.port.connection_state() == "pending"
    assert {f.action for f in csms.received} == {
        "BootNotification",
        "Heartbeat",
        "StatusNotification",
    }


async def test_boot_rejected_retries_after_interval(csms: DevCsms, charger: Any) -> None:
    """4.2 BootNotification Rejected: nothing is sent until the retry interval expired;
    then a new BootNotification; once Accepted the normal traffic starts."""
    csms.boot_status = "Rejected"
    csms.boot_retry_interval_s = 30
    h = await charger(csms, wait_accepted=False)
    await csms.wait_for(lambda f: f.action == "BootNotification", timeout_s=5)
    await h.advance(29)
    assert [f.action for f in csms.received] == ["BootNotification"]
    await h.advance(2)
    await h.settle(lambda: len(h.frames("BootNotification")) == 2)
    # Answered (Rejected) before the CSMS changes its mind: on a loaded machine the second
    # boot could otherwise be answered Accepted.
    await h.settle(lambda: sum(1 for r in csms.sent_results if r.action == "BootNotification") == 2)
    assert {f.action for f in csms.received} == {"BootNotification"}
    csms.boot_status = "Accepted"
    await h.advance(31)
    await h.settle(lambda: h.app.port.connection_state() == "accepted")
    await h.settle(lambda: len(h.frames("StatusNotification")) >= 2)
    assert len(h.frames("BootNotification")) == 3


async def test_boot_rejected_does_not_answer_csms(csms: DevCsms, charger: Any) -> None:
    """4.2: "While Rejected, the Charge Point SHALL NOT respond to any Central System
    initiated message"."""
    csms.boot_status = "Rejected"
    csms.boot_retry_interval_s = 60
    h = await charger(csms, wait_accepted=False)
    await csms.wait_for(lambda f: f.action == "BootNotification", timeout_s=5)
    await h.settle(lambda: h.app.port.connection_state() == "rejected")
    with pytest.raises(TimeoutError):
        await csms.call_raw(STATION_ID, "GetConfiguration", {}, timeout_s=0.5)


# ----------------------------------------------------------------------------- auth


async def test_basic_auth_with_password(charger: Any) -> None:
    """OCPP-J 3.1 + security whitepaper profile 1: HTTP Basic auth, user = station id."""
    async with DevCsms(
        host="127.0.0.1", port=0, heartbeat_interval_s=3600, passwords={STATION_ID: "s3cret-pw"}
    ) as server:
        h = await charger(server, password="s3cret-pw")
        assert h.app.port.connection_state() == "accepted"
        assert await req(server, "DataTransfer", {"vendorId": "x"}) == {"status": "UnknownVendorId"}
        await h.app.stop(reason=None)


async def test_basic_auth_wrong_password_never_accepted(charger: Any) -> None:
    """OCPP-J 3.1 / security profile 1: a wrong password is refused at the HTTP upgrade
    (401); the charger keeps retrying with back-off but is never Accepted."""
    async with DevCsms(
        host="127.0.0.1", port=0, heartbeat_interval_s=3600, passwords={STATION_ID: "right"}
    ) as server:
        h = await charger(server, password="wrong", wait_accepted=False)
        for _ in range(5):
            await h.advance(1, step_s=0.1)
        assert not server.connected(STATION_ID)
        assert server.received == []
        assert h.app.port.connection_state() != "accepted"
        await h.app.stop(reason=None)


async def test_no_password_refused_by_protected_csms(charger: Any, tmp_path: Path) -> None:
    """OCPP-J 3.1: without credentials a password-protected CSMS never accepts the station."""
    async with DevCsms(
        host="127.0.0.1", port=0, heartbeat_interval_s=3600, passwords={STATION_ID: "right"}
    ) as server:
        h = await charger(server, wait_accepted=False)
        await h.advance(2, step_s=0.1)
        assert server.received == []
        assert h.app.port.connection_state() != "accepted"
        await h.app.stop(reason=None)
