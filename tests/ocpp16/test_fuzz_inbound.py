"""Property-based fuzzing of inbound CSMS -> charge point CALLs, generated from the official
OCPP 1.6 JSON schemas (draft-04; the security-extension ones use local ``$ref``s).

For every 1.6 action, valid payloads are drawn from the action's request schema and invalid
ones by one mutation of a valid payload (drop a required field, wrong JSON type, value
outside an enum, string longer than maxLength, extra property where additionalProperties is
false). They are sent with ``DevCsms.call_raw`` into one running charger. Properties:

* the charger never crashes: the WebSocket stays up (no reconnect) and a plain
  GetConfiguration / TriggerMessage(Heartbeat) is still answered normally afterwards;
* supported action + valid payload -> a CALLRESULT that validates against the action's
  Response schema (a CALLERROR only PropertyConstraintViolation for a connectorId the
  charger does not have, or OccurenceConstraintViolation above GetConfigurationMaxKeys);
* supported action + invalid payload -> exactly the OCPP-J 1.6 code that
  ``rpc.schema_error_code`` gives for jsonschema's first error (Table 7 / errata 5.1, 5.2);
* a known 1.6 action the charge point does not implement -> NotSupported, an unknown
  action name -> NotImplemented, whatever the payload;
* the station snapshot stays well-formed and no contactor is closed without a transaction.
"""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft4Validator
from ocpp.messages import MessageType, get_validator
from ocpp.v16.enums import Action

from controller.core import connector as sm
from controller.core.timestamps import parse_iso
from controller.dev.devcsms import DevCsms
from controller.ocpp16 import rpc
from controller.ocpp16.client import SUPPORTED_ACTIONS
from tests.conftest import CARD, STATION_ID

ALL_ACTIONS = sorted(a.value for a in Action)
UNSUPPORTED_ACTIONS = sorted(set(ALL_ACTIONS) - SUPPORTED_ACTIONS)
CONNECTORS = 1
MAX_CONFIG_KEYS = 64  # GetConfigurationMaxKeys (read-only default)

JsonSchema = dict[str, Any]


def request_schema(action: str) -> JsonSchema:
    schema: JsonSchema = get_validator(MessageType.Call, action, rpc.OCPP_VERSION).schema
    return schema


def roundtrip(value: Any) -> Any:
    """What the charger sees: the value after JSON encoding and decoding."""
    return json.loads(json.dumps(value))


# ----------------------------------------------------------------------------- generators

# Domain-aware values mixed into the generic ones so handlers get past their first checks.
CONFIG_KEYS = [
    "HeartbeatInterval",
    "MeterValueSampleInterval",
    "ConnectionTimeOut",
    "MeterValuesSampledData",
    "StopTxnSampledData",
    "AllowOfflineTxForUnknownId",
    "AuthorizeRemoteTxRequests",
    "LocalPreAuthorize",
    "NumberOfConnectors",
    "GetConfigurationMaxKeys",
    "ClockAlignedDataInterval",
    "MinimumStatusDuration",
    "TransactionMessageAttempts",
    "TransactionMessageRetryInterval",
    "StopTransactionOnEVSideDisconnect",
    "UnlockConnectorOnEVSideDisconnect",
    "WebSocketPingInterval",
    "AuthorizationKey",
    "ConnectorPhaseRotation",
    "SupportedFeatureProfiles",
    "NoSuchKey",
]
CONFIG_VALUES = [
    "0",
    "1",
    "60",
    "-1",
    "86401",
    "999999999999",
    "true",
    "false",
    "TRUE",
    "",
    " ",
    "abc",
    "Energy.Active.Import.Register",
    "Energy.Active.Import.Register,Power.Active.Import",
    "Voltage,,Nonsense",
    "1.RST",
    "0123456789abcdef0123",
]
OVERRIDES: dict[str, st.SearchStrategy[Any]] = {
    "connectorId": st.integers(-1, CONNECTORS + 1),
    "transactionId": st.integers(-1, 3),
    "idTag": st.sampled_from([CARD, "UNKNOWN", ""]),
    "key": st.sampled_from(CONFIG_KEYS),
    "value": st.sampled_from(CONFIG_VALUES),
}


def _resolve(schema: JsonSchema, root: JsonSchema) -> JsonSchema:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    assert ref.startswith("#/"), ref
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return _resolve(node, root)


def _date_times() -> st.SearchStrategy[str]:
    return st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)).map(
        lambda d: d.isoformat(timespec="seconds") + "Z"
    )


def valid_value(schema: JsonSchema, root: JsonSchema, name: str = "") -> st.SearchStrategy[Any]:
    """A strategy for values that satisfy ``schema`` (the subset the 1.6 schemas use)."""
    schema = _resolve(schema, root)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    generic: st.SearchStrategy[Any]
    if kind == "object":
        props = schema.get("properties", {})
        required = [k for k in schema.get("required", []) if k in props]
        return st.fixed_dictionaries(
            {k: valid_value(props[k], root, k) for k in required},
            optional={k: valid_value(v, root, k) for k, v in props.items() if k not in required},
        )
    if kind == "array":
        low = schema.get("minItems", 0)
        high = min(schema.get("maxItems", low + 3), low + 3)
        items = schema.get("items", {})
        if name == "key":  # GetConfiguration.key: a few keys, known or not
            return st.lists(
                st.one_of(st.sampled_from(CONFIG_KEYS), valid_value(items, root)),
                min_size=low,
                max_size=high,
            )
        return st.lists(valid_value(items, root), min_size=low, max_size=high)
    if kind == "string":
        if schema.get("format") == "date-time":
            generic = _date_times()
        elif schema.get("format") == "uri":
            generic = st.sampled_from(["ftp://example.com/x", "https://example.com/fw.bin"])
        else:
            generic = st.text(
                min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 40), 40)
            )
            if "maxLength" in schema:
                # Also the boundary: exactly maxLength characters is still valid.
                generic = st.one_of(generic, st.just("x" * schema["maxLength"]))
    elif kind == "integer":
        generic = st.one_of(st.integers(-5, 5), st.integers(-(2**31), 2**31 - 1))
    elif kind == "number":
        if "multipleOf" in schema:
            # Integers and decimals such as 10.2 or 1.9 (exact multiples of 0.1 as written,
            # but not in binary floating point: issue 9 item 3).
            generic = st.one_of(st.integers(-1000, 1000), _decimal_multiples(schema))
        else:
            generic = st.one_of(
                st.integers(-1000, 1000), st.floats(allow_nan=False, allow_infinity=False)
            )
    elif kind == "boolean":
        generic = st.booleans()
    else:
        raise AssertionError(f"schema construct not handled by the generator: {schema}")
    override = OVERRIDES.get(name)
    if override is not None and (kind != "string" or "maxLength" in schema):
        return st.one_of(override, generic)
    return generic


def _decimal_multiples(schema: JsonSchema) -> st.SearchStrategy[float]:
    """Decimal multiples of the schema's ``multipleOf``, as a peer's JSON encoder writes
    them (the float nearest to the decimal, whose repr is that decimal)."""
    step = Decimal(str(schema["multipleOf"]))
    return st.integers(-100_000, 100_000).map(lambda n: float(n * step))


# A mutation is (path, kind): path = keys/indices down to the node that is changed.
Path_ = tuple[str | int, ...]


def _mutation_points(
    schema: JsonSchema, root: JsonSchema, value: Any, path: Path_ = ()
) -> list[tuple[Path_, str, JsonSchema]]:
    schema = _resolve(schema, root)
    points: list[tuple[Path_, str, JsonSchema]] = []
    kind = schema.get("type")
    if kind == "object" and isinstance(value, dict):
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            if k in value:
                points.append((path + (k,), "drop", schema))
        if schema.get("additionalProperties") is False:
            points.append((path, "extra", schema))
        for k, v in value.items():
            if k in props:
                points.extend(_mutation_points(props[k], root, v, path + (k,)))
        if path:
            points.append((path, "wrongtype", schema))
    elif kind == "array" and isinstance(value, list):
        points.append((path, "wrongtype", schema))
        for i, item in enumerate(value):
            points.extend(_mutation_points(schema.get("items", {}), root, item, path + (i,)))
    else:
        points.append((path, "wrongtype", schema))
        if "enum" in schema:
            points.append((path, "enum", schema))
        if kind == "string" and "maxLength" in schema:
            points.append((path, "toolong", schema))
        if "multipleOf" in schema:
            points.append((path, "notmultiple", schema))
    return points


_WRONG_FOR: dict[str, st.SearchStrategy[Any]] = {
    "object": st.sampled_from([[], "x", 1, None, True]),
    "array": st.sampled_from([{}, "x", 1, None, False]),
    "string": st.sampled_from([1, 1.5, None, True, [], {}]),
    "integer": st.sampled_from([1.5, "1", None, False, [], {}]),
    "number": st.sampled_from(["1.0", None, True, [1], {}]),
    "boolean": st.sampled_from([0, 1, "true", None, [], {}]),
}


@st.composite
def invalid_payload(draw: st.DrawFn, action: str) -> dict[str, Any] | Any:
    """A valid payload with exactly one schema violation."""
    root = request_schema(action)
    payload = draw(valid_value(root, root))
    points = _mutation_points(root, root, payload)
    if not points or draw(st.integers(0, 19)) == 0:
        return draw(st.sampled_from([[], "payload", 7, None, [payload]]))  # not an object
    path, how, schema = draw(st.sampled_from(points))
    if how in ("drop", "wrongtype", "enum", "toolong", "notmultiple"):
        parent_path, leaf = path[:-1], path[-1] if path else None
    else:
        parent_path, leaf = path, None
    parent: Any = payload
    for step in parent_path:
        parent = parent[step]
    if how == "drop":
        del parent[leaf]
    elif how == "extra":
        name = draw(st.text(string.ascii_letters, min_size=1, max_size=12))
        existing = set(parent) | set(schema.get("properties", {}))
        name = name if name not in existing else name + "_extra"
        parent[name] = draw(st.one_of(st.integers(), st.text(max_size=5), st.none()))
    elif how == "wrongtype":
        kind = _resolve(schema, root).get("type", "string")
        parent[leaf] = draw(_WRONG_FOR[kind])
    elif how == "enum":
        choices = _resolve(schema, root)["enum"]
        bad = draw(st.text(max_size=20).filter(lambda s: s not in choices))
        parent[leaf] = bad
    elif how == "notmultiple":  # e.g. 10.25 where multipleOf is 0.1
        step = Decimal(str(_resolve(schema, root)["multipleOf"]))
        n = draw(st.integers(-100_000, 100_000))
        parent[leaf] = float(n * step + step * Decimal(draw(st.sampled_from([1, 3, 5]))) / 10)
    else:  # toolong
        limit = _resolve(schema, root)["maxLength"]
        parent[leaf] = "y" * (limit + draw(st.integers(1, 8)))
    return payload


_DECIMAL_VALIDATORS: dict[str, Draft4Validator] = {}


def decimal_validator(action: str) -> Draft4Validator:
    """An oracle independent of rpc's: the request schema and the payload both read with
    ``parse_float=Decimal``, so ``multipleOf`` compares decimals as written."""
    found = _DECIMAL_VALIDATORS.get(action)
    if found is None:
        # default=float: the ocpp library caches some schemas read with parse_float=Decimal
        # (once its CSMS validated such a call in this process); read back as Decimal below.
        text = json.dumps(request_schema(action), default=float)
        found = Draft4Validator(json.loads(text, parse_float=Decimal))
        _DECIMAL_VALIDATORS[action] = found
    return found


def expected_error(action: str, payload: Any) -> str | None:
    """The OCPP-J code rpc gives an invalid payload: jsonschema's first error, mapped."""
    if not isinstance(payload, dict):
        return rpc.FORMATION_VIOLATION  # OCPP-J 4.2.3: not the PDU structure at all
    exact = json.loads(json.dumps(payload), parse_float=Decimal)
    first = next(iter(decimal_validator(action).iter_errors(exact)), None)
    return None if first is None else rpc.schema_error_code(first)


@st.composite
def inbound_call(draw: st.DrawFn) -> tuple[str, Any, bool]:
    """(action, payload, payload_is_valid) over every 1.6 action plus unknown names."""
    pick = draw(st.integers(0, 9))
    if pick == 0:
        action = draw(
            st.one_of(
                st.sampled_from(["FooBar", "reset", "Reset.req", "GetVariables", ""]),
                st.text(string.ascii_letters, min_size=1, max_size=20),
            ).filter(lambda a: a not in ALL_ACTIONS)
        )
        return action, draw(st.sampled_from([{}, {"type": "Soft"}])), True
    if pick <= 2:
        action = draw(st.sampled_from(UNSUPPORTED_ACTIONS))
    else:
        action = draw(st.sampled_from(sorted(SUPPORTED_ACTIONS)))
    root = request_schema(action)
    if draw(st.booleans()):
        payload = roundtrip(draw(valid_value(root, root)))
        # Self-check of the generator: a "valid" payload must really be valid.
        assert expected_error(action, payload) is None, (action, payload)
        return action, payload, True
    payload = roundtrip(draw(invalid_payload(action)))
    assert expected_error(action, payload) is not None, (action, payload)
    return action, payload, False


# ----------------------------------------------------------------------------- checks


def allowed_callerror(action: str, payload: dict[str, Any], code: str) -> bool:
    """CALLERRORs a supported action may give a schema-valid payload."""
    cid = payload.get("connectorId")
    if code == rpc.PROPERTY_CONSTRAINT_VIOLATION and cid is not None:
        if action == "ChangeAvailability":
            return not 0 <= cid <= CONNECTORS
        if action == "RemoteStartTransaction":
            return not 1 <= cid <= CONNECTORS
        if action == "SetChargingProfile":
            return not 0 <= cid <= CONNECTORS  # errata 3.39
        if action == "ReserveNow":
            return not 0 <= cid <= CONNECTORS
    if code == rpc.TYPE_CONSTRAINT_VIOLATION and action == "ReserveNow":
        return parse_iso(payload["expiryDate"]) is None  # not a dateTime evsed can read
    if code == rpc.OCCURENCE_CONSTRAINT_VIOLATION and action == "GetConfiguration":
        return len(payload.get("key") or []) > MAX_CONFIG_KEYS
    if action == "SendLocalList":
        items = payload.get("localAuthorizationList") or []
        tags = [str(i["idTag"]).upper() for i in items]  # IdToken is case-insensitive
        if code == rpc.PROPERTY_CONSTRAINT_VIOLATION:
            # Errata 3.52: listVersion SHALL NOT be -1 or 0; one entry per idTag.
            return payload["listVersion"] < 1 or len(set(tags)) < len(tags)
        if code == rpc.OCCURENCE_CONSTRAINT_VIOLATION:
            # 7.1: idTagInfo is required in a Full update.
            full = payload["updateType"] == "Full"
            return full and any("idTagInfo" not in i for i in items)
    return False


def check_result(action: str, payload: dict[str, Any], result: dict[str, Any]) -> None:
    """Spec details of a few CALLRESULTs on top of the Response schema."""
    cid = payload.get("connectorId")
    if action == "UnlockConnector" and not 1 <= payload["connectorId"] <= CONNECTORS:
        assert result == {"status": "NotSupported"}, result  # errata 3.87
    if action == "TriggerMessage":
        if cid is not None and not 0 <= cid <= CONNECTORS:
            assert result["status"] == "Rejected", result
        elif payload["requestedMessage"] == "BootNotification":
            assert result["status"] == "Rejected", result  # errata 3.35: already Accepted
    if action == "DataTransfer":
        assert result["status"] == "UnknownVendorId", result
    if action == "ReserveNow":
        expiry = parse_iso(payload["expiryDate"])
        if expiry is not None and expiry <= datetime(2026, 1, 1, tzinfo=UTC):
            assert result["status"] == "Rejected", result  # expired on arrival
    if action == "CancelReservation":
        assert result["status"] in ("Accepted", "Rejected"), result
    if action == "GetConfiguration":
        known = {e["key"] for e in result.get("configurationKey", [])}
        unknown = set(result.get("unknownKey", []))
        for k in payload.get("key") or []:
            assert k in known or k in unknown, (k, result)


def check_station(h: Any) -> None:
    """The snapshot behind GET /api/status is well-formed and the hardware is safe."""
    snap = h.station.snapshot()
    assert set(snap) == {"connectors", "csms", "clock", "faults"}, snap
    assert snap["csms"]["state"] == "accepted", snap
    assert isinstance(snap["csms"]["queued_messages"], int) and snap["csms"]["queued_messages"] >= 0
    assert [c["connector"] for c in snap["connectors"]] == list(range(1, CONNECTORS + 1))
    statuses = {s.value for s in sm.Phase}
    for c in snap["connectors"]:
        assert c["status"] in statuses, c
        assert isinstance(c["error_code"], str), c
        assert isinstance(c["contactor_closed"], bool), c
        assert c["transaction_key"] is None or isinstance(c["transaction_key"], int), c
        if c["contactor_closed"]:
            assert c["transaction_key"] is not None, f"contactor closed without a transaction: {c}"
        json.dumps(snap)  # serialisable as the API would
    for runtime in h.station.connectors.values():
        if runtime.hw.contactor.closed:
            assert runtime.tx_key is not None


async def still_serving(h: Any, csms: DevCsms) -> None:
    frame = await csms.call_raw(STATION_ID, "GetConfiguration", {"key": ["NumberOfConnectors"]})
    assert frame[0] == 3, frame
    assert frame[2]["configurationKey"][0]["value"] == str(CONNECTORS), frame
    assert csms.connected(STATION_ID)
    assert h.app.client.connects == 1, "the charger reconnected: the connection broke"


# ----------------------------------------------------------------------------- tests


@pytest.fixture
async def fuzz_target(csms: DevCsms, charger: Any) -> Any:
    """One charger for all examples of a test (the state carries over, as in the field)."""
    return await charger(csms)


FUZZ_SETTINGS = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


HARDWARE_STEPS = ("plug", "unplug", "tap", "advance")


async def hardware_step(h: Any, step: str) -> None:
    """Interleaved local events so calls also meet Preparing/Charging/Finishing states."""
    if step == "plug":
        h.plug()
    elif step == "unplug":
        h.unplug()
    elif step == "tap":
        h.tap()
    else:
        await h.advance(2)
    await h.advance(0.2, step_s=0.1)


async def check_call(h: Any, csms: DevCsms, call: tuple[str, Any, bool]) -> None:
    action, payload, valid = call
    frame = await csms.call_raw(STATION_ID, action, payload, timeout_s=5)
    assert isinstance(frame, list) and frame[0] in (3, 4), frame
    if frame[0] == 4:
        assert len(frame) == 5 and isinstance(frame[3], str) and isinstance(frame[4], dict)
    code = frame[2] if frame[0] == 4 else None

    if action not in ALL_ACTIONS:
        assert code == rpc.NOT_IMPLEMENTED, (action, frame)
    elif action not in SUPPORTED_ACTIONS:
        assert code == rpc.NOT_SUPPORTED, (action, payload, frame)
    elif not valid:
        want = expected_error(action, payload)
        assert code == want, (action, payload, frame, want)
    elif code is not None:
        assert allowed_callerror(action, payload, code), (action, payload, frame)
    else:
        result = frame[2]
        get_validator(MessageType.CallResult, action, rpc.OCPP_VERSION).validate(result)
        check_result(action, payload, result)
        if action == "Reset":
            # The in-process app only records the request (App.wait() would return), so
            # the same charger serves the next examples.
            await h.settle(lambda: h.app.reset_requested == payload["type"], timeout_s=10)
            h.app.reset_requested = None
    assert h.app.reset_requested is None, (action, payload)


@FUZZ_SETTINGS
@given(
    steps=st.lists(
        st.one_of(inbound_call(), inbound_call(), st.sampled_from(HARDWARE_STEPS)),
        min_size=1,
        max_size=4,
    )
)
async def test_fuzz_inbound_calls(csms: DevCsms, fuzz_target: Any, steps: list[Any]) -> None:
    h = fuzz_target
    for step in steps:
        if isinstance(step, str):
            await hardware_step(h, step)
        else:
            await check_call(h, csms, step)
        check_station(h)
    await still_serving(h, csms)


async def test_fuzz_final_heartbeat_and_session(csms: DevCsms, charger: Any) -> None:
    """After a seeded barrage of generated calls (valid and invalid) the same connection
    still answers TriggerMessage(Heartbeat) with a Heartbeat and runs a whole session."""
    h = await charger(csms)
    strategy = inbound_call()

    @settings(max_examples=40, deadline=None, derandomize=True, database=None)
    @given(call=strategy)
    def collect(call: Any) -> None:
        calls.append(call)

    calls: list[Any] = []
    collect()
    for action, payload, _ in calls:
        if action in (
            "Reset",
            "ChangeAvailability",
            "SendLocalList",
            "RemoteStartTransaction",  # a pending remote start for another idTag
            "ReserveNow",  # or a reservation for one takes the connector
        ):
            continue  # keep the connector and the card usable for the session below
        frame = await csms.call_raw(STATION_ID, action, payload, timeout_s=5)
        assert frame[0] in (3, 4), frame
    check_station(h)
    n = len(h.frames("Heartbeat"))
    frame = await csms.call_raw(STATION_ID, "TriggerMessage", {"requestedMessage": "Heartbeat"})
    assert frame[0] == 3 and frame[2] == {"status": "Accepted"}, frame
    await h.settle(lambda: len(h.frames("Heartbeat")) > n)
    await still_serving(h, csms)
    # A complete session on the same connection (transactions still work).
    h.plug()
    await h.advance(1)
    h.tap()
    await csms.wait_for(lambda f: f.action == "StartTransaction", timeout_s=5)
    await h.settle(lambda: h.connector().hw.contactor.closed)
    check_station(h)
    h.tap()
    stop = await csms.wait_for(lambda f: f.action == "StopTransaction", timeout_s=5)
    assert stop.payload["reason"] == "Local"
    assert h.app.client.connects == 1
