"""Unit tests of the OCPP-J 1.6 RPC framing (controller/ocpp16/rpc.py) over an in-memory link.

Spec references: OCPP-J 1.6 section 4.1.1 (synchronicity: one CALL outstanding), 4.1.4 (message
id, at most 36 characters), 4.2.1-4.2.3 (CALL / CALLRESULT / CALLERROR, Table 7 error codes),
and the OCPP-J errata sheet 5.1 / 5.2 (the 1.6 spellings stay on the wire).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import ocpp.messages
import pytest
from jsonschema.exceptions import ValidationError as SchemaError
from ocpp.messages import MessageType, get_validator

from controller.csms.rpc import CallError, CallTimeout, ConnectionLost, RpcConnection
from controller.ocpp16 import rpc

NOW = "2026-01-01T12:00:00.000+00:00"


class MemoryTransport:
    """Both ends of a WebSocket as two queues: ``sent`` (charger -> peer), ``incoming``."""

    def __init__(self) -> None:
        self.sent: asyncio.Queue[str] = asyncio.Queue()
        self.incoming: asyncio.Queue[str | bytes | None] = asyncio.Queue()

    async def send(self, message: str) -> None:
        await self.sent.put(message)

    async def recv(self) -> str | bytes:
        item = await self.incoming.get()
        if item is None:
            raise ConnectionError("peer closed the connection")
        return item

    # --- the peer's side
    def feed(self, frame: Any) -> None:
        self.incoming.put_nowait(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    def close(self) -> None:
        self.incoming.put_nowait(None)

    async def next_sent(self, timeout_s: float = 1.0) -> list[Any]:
        text = await asyncio.wait_for(self.sent.get(), timeout_s)
        frame = json.loads(text)
        assert isinstance(frame, list)
        return frame

    async def nothing_sent(self, wait_s: float = 0.05) -> bool:
        await asyncio.sleep(wait_s)
        return self.sent.empty()


Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


async def _default_handler(action: str, payload: dict[str, Any]) -> dict[str, Any]:
    if action == "DataTransfer":
        return {"status": "UnknownVendorId"}
    if action == "GetConfiguration":
        return {"unknownKey": list(payload.get("key", []))}
    raise AssertionError(f"unexpected {action}")


class Peer:
    def __init__(self, transport: MemoryTransport, conn: RpcConnection, frames: list[Any]):
        self.transport = transport
        self.conn = conn
        self.observed = frames


@pytest.fixture
async def make_peer() -> AsyncIterator[Callable[..., Peer]]:
    tasks: list[asyncio.Task[None]] = []

    def factory(
        handler: Handler = _default_handler,
        *,
        timeout_s: float = 2.0,
        supported: frozenset[str] = frozenset({"DataTransfer", "GetConfiguration", "Reset"}),
    ) -> Peer:
        transport = MemoryTransport()
        observed: list[Any] = []
        ids = iter(f"id-{n}" for n in range(1, 1000))
        conn = RpcConnection(
            transport,
            handler,
            dialect=rpc.DIALECT,
            response_timeout_s=timeout_s,
            id_factory=lambda: next(ids),
            supported_actions=supported,
            on_frame=lambda direction, text: observed.append((direction, text)),
        )
        tasks.append(asyncio.create_task(conn.run()))
        return Peer(transport, conn, observed)

    yield factory
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _answer_error(peer: Peer, frame: Any) -> list[Any]:
    peer.transport.feed(frame)
    return await peer.transport.next_sent()


# ----------------------------------------------------------------------------- outgoing CALLs


async def test_call_returns_the_validated_callresult(make_peer: Callable[..., Peer]) -> None:
    """4.2.1 / 4.2.2: [2, id, action, payload] out, [3, id, payload] back -> the payload."""
    peer = make_peer()
    call = asyncio.create_task(peer.conn.call("Heartbeat", {}))
    frame = await peer.transport.next_sent()
    assert frame == [2, "id-1", "Heartbeat", {}]
    peer.transport.feed([3, "id-1", {"currentTime": NOW}])
    assert await call == {"currentTime": NOW}
    assert peer.conn.calls_sent == 1
    assert [d for d, _ in peer.observed] == ["out", "in"]


async def test_only_one_call_outstanding(make_peer: Callable[..., Peer]) -> None:
    """OCPP-J 4.1.1: a second call() is not sent until the first one is answered."""
    peer = make_peer()
    first = asyncio.create_task(peer.conn.call("Heartbeat", {}))
    second = asyncio.create_task(
        peer.conn.call(
            "StatusNotification",
            {"connectorId": 0, "errorCode": "NoError", "status": "Available"},
        )
    )
    assert (await peer.transport.next_sent())[2] == "Heartbeat"
    assert await peer.transport.nothing_sent(0.1), "second CALL sent while first outstanding"
    assert not second.done()
    peer.transport.feed([3, "id-1", {"currentTime": NOW}])
    await first
    frame = await peer.transport.next_sent()
    assert frame[:3] == [2, "id-2", "StatusNotification"]
    peer.transport.feed([3, "id-2", {}])
    assert await second == {}


async def test_timeout_raises_call_timeout_and_frees_the_slot(
    make_peer: Callable[..., Peer],
) -> None:
    """OCPP-J 4.1.1: no answer within the timeout -> CallTimeout; a late answer is ignored."""
    peer = make_peer(timeout_s=0.05)
    with pytest.raises(CallTimeout):
        await peer.conn.call("Heartbeat", {})
    await peer.transport.next_sent()
    # The late answer to id-1 must not resolve the next call.
    call = asyncio.create_task(peer.conn.call("Heartbeat", {}))
    assert (await peer.transport.next_sent())[1] == "id-2"
    peer.transport.feed([3, "id-1", {"currentTime": "late"}])
    peer.transport.feed([3, "id-2", {"currentTime": NOW}])
    assert await call == {"currentTime": NOW}


async def test_callerror_raises_call_error_with_code(make_peer: Callable[..., Peer]) -> None:
    """4.2.3: [4, id, code, description, details] -> CallError carrying all three."""
    peer = make_peer()
    call = asyncio.create_task(peer.conn.call("Heartbeat", {}))
    await peer.transport.next_sent()
    peer.transport.feed([4, "id-1", "SecurityError", "not accepted yet", {"why": "pending"}])
    with pytest.raises(CallError) as info:
        await call
    assert info.value.code == "SecurityError"
    assert info.value.description == "not accepted yet"
    assert info.value.details == {"why": "pending"}


async def test_response_to_unknown_id_is_ignored(make_peer: Callable[..., Peer]) -> None:
    """4.1.4: a CALLRESULT/CALLERROR only answers the CALL with the same id."""
    peer = make_peer()
    call = asyncio.create_task(peer.conn.call("Heartbeat", {}))
    await peer.transport.next_sent()
    peer.transport.feed([3, "someone-else", {"currentTime": NOW}])
    peer.transport.feed([4, "another", "GenericError", "", {}])
    assert await peer.transport.nothing_sent(), "a response must never be answered"
    assert not call.done()
    peer.transport.feed([3, "id-1", {"currentTime": NOW}])
    assert await call == {"currentTime": NOW}


async def test_response_without_pending_call_is_ignored(make_peer: Callable[..., Peer]) -> None:
    """4.1.4: a stray CALLRESULT with no CALL outstanding changes nothing."""
    peer = make_peer()
    peer.transport.feed([3, "stray", {}])
    assert await peer.transport.nothing_sent()
    call = asyncio.create_task(peer.conn.call("Heartbeat", {}))
    await peer.transport.next_sent()
    peer.transport.feed([3, "id-1", {"currentTime": NOW}])
    assert await call == {"currentTime": NOW}


@pytest.mark.parametrize(
    ("result", "code"),
    [
        ({}, "ProtocolError"),  # currentTime missing
        ({"currentTime": 5}, "TypeConstraintViolation"),
        ({"currentTime": NOW, "extra": 1}, "FormationViolation"),
        ("not an object", "FormationViolation"),
    ],
)
async def test_schema_invalid_callresult_is_a_call_error(
    make_peer: Callable[..., Peer], result: Any, code: str
) -> None:
    """4.2.2 + JSON schemas (OCPP-J errata 3.8): a malformed answer is not a confirmation."""
    peer = make_peer()
    call = asyncio.create_task(peer.conn.call("Heartbeat", {}))
    await peer.transport.next_sent()
    peer.transport.feed([3, "id-1", result])
    with pytest.raises(CallError) as info:
        await call
    assert info.value.code == code


async def test_invalid_boot_status_in_result_is_rejected(make_peer: Callable[..., Peer]) -> None:
    """4.2.2 / BootNotification.conf schema: status outside the enum -> CallError."""
    peer = make_peer()
    payload = {"chargePointVendor": "V", "chargePointModel": "M"}
    call = asyncio.create_task(peer.conn.call("BootNotification", payload))
    await peer.transport.next_sent()
    peer.transport.feed([3, "id-1", {"currentTime": NOW, "interval": 10, "status": "Maybe"}])
    with pytest.raises(CallError) as info:
        await call
    assert info.value.code == "PropertyConstraintViolation"


async def test_outgoing_payload_is_validated_before_sending(
    make_peer: Callable[..., Peer],
) -> None:
    """4.2.1: our own schema-invalid CALL is never put on the wire."""
    peer = make_peer()
    with pytest.raises(CallError):
        await peer.conn.call("Authorize", {})
    assert await peer.transport.nothing_sent()


async def test_connection_lost_while_waiting(make_peer: Callable[..., Peer]) -> None:
    """A closed transport fails the outstanding CALL with ConnectionLost, not a timeout."""
    peer = make_peer(timeout_s=5)
    call = asyncio.create_task(peer.conn.call("Heartbeat", {}))
    await peer.transport.next_sent()
    peer.transport.close()
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(call, 1)
    with pytest.raises(ConnectionLost):
        await peer.conn.call("Heartbeat", {})


async def test_incoming_call_served_while_own_call_outstanding(
    make_peer: Callable[..., Peer],
) -> None:
    """4.1.1: the one-CALL rule is per direction; the peer's CALLs are still answered."""
    peer = make_peer()
    call = asyncio.create_task(peer.conn.call("Heartbeat", {}))
    await peer.transport.next_sent()
    peer.transport.feed([2, "csms-1", "DataTransfer", {"vendorId": "x"}])
    assert await peer.transport.next_sent() == [3, "csms-1", {"status": "UnknownVendorId"}]
    peer.transport.feed([3, "id-1", {"currentTime": NOW}])
    assert await call == {"currentTime": NOW}


# ----------------------------------------------------------------------------- incoming CALLs


async def test_message_id_longer_than_36_chars_rejected(make_peer: Callable[..., Peer]) -> None:
    """OCPP-J 4.1.4: messageId is at most 36 characters; 36 is fine, 37 is not."""
    calls: list[str] = []

    async def handler(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        calls.append(action)
        return {"status": "UnknownVendorId"}

    peer = make_peer(handler)
    ok_id, long_id = "a" * 36, "b" * 37
    peer.transport.feed([2, ok_id, "DataTransfer", {"vendorId": "x"}])
    assert await peer.transport.next_sent() == [3, ok_id, {"status": "UnknownVendorId"}]
    peer.transport.feed([2, long_id, "DataTransfer", {"vendorId": "x"}])
    frame = await peer.transport.next_sent()
    assert frame[0] == 4 and frame[2] == "FormationViolation"
    assert len(frame) == 5 and frame[4] == {}
    assert calls == ["DataTransfer"]


async def test_handler_exception_gives_internal_error(make_peer: Callable[..., Peer]) -> None:
    """Table 7 InternalError: the handler crashed; the connection keeps serving."""

    async def handler(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if action == "Reset":
            raise RuntimeError("boom")
        return {"status": "UnknownVendorId"}

    peer = make_peer(handler)
    frame = await _answer_error(peer, [2, "r1", "Reset", {"type": "Soft"}])
    assert frame[:3] == [4, "r1", "InternalError"]
    assert len(frame) == 5 and isinstance(frame[3], str) and frame[4] == {}
    frame = await _answer_error(peer, [2, "d1", "DataTransfer", {"vendorId": "x"}])
    assert frame == [3, "d1", {"status": "UnknownVendorId"}]


async def test_handler_result_violating_schema_gives_internal_error(
    make_peer: Callable[..., Peer],
) -> None:
    """4.2.2: we never send a CALLRESULT that violates the response schema."""

    async def handler(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {"status": "Maybe"}

    peer = make_peer(handler)
    frame = await _answer_error(peer, [2, "r1", "Reset", {"type": "Hard"}])
    assert frame[:3] == [4, "r1", "InternalError"]


async def test_handler_call_error_is_sent_verbatim(make_peer: Callable[..., Peer]) -> None:
    """4.2.3: a CallError raised by a handler becomes the CALLERROR frame."""

    async def handler(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        raise CallError("OccurenceConstraintViolation", "too many keys", {"max": 1})

    peer = make_peer(handler)
    frame = await _answer_error(peer, [2, "g1", "GetConfiguration", {"key": ["a", "b"]}])
    assert frame == [4, "g1", "OccurenceConstraintViolation", "too many keys", {"max": 1}]


@pytest.mark.parametrize(
    ("frame", "expected_id", "code"),
    [
        ('[2, "abc", "DataTransfer", {', "abc", "FormationViolation"),  # broken JSON, id readable
        ("this is not json", "-1", "FormationViolation"),
        ('{"not": "an array"}', "-1", "FormationViolation"),
        ("[]", "-1", "FormationViolation"),
        ('[2, "m1", "DataTransfer"]', "m1", "FormationViolation"),  # payload missing
        ('[9, "m2", "DataTransfer", {}]', "m2", "FormationViolation"),  # bad MessageTypeId
        ('[2, "m3", "FooBar", {}]', "m3", "NotImplemented"),
        ('[2, "m4", "ReserveNow", {}]', "m4", "NotSupported"),
        ('[2, "m5", "BootNotification", {}]', "m5", "NotSupported"),
        ('[2, "m6", "DataTransfer", {}]', "m6", "ProtocolError"),
        ('[2, "m7", "DataTransfer", {"vendorId": 7}]', "m7", "TypeConstraintViolation"),
        ('[2, "m8", "Reset", {"type": "Later"}]', "m8", "PropertyConstraintViolation"),
        ('[2, "m9", "Reset", {"type": "Soft", "x": 1}]', "m9", "FormationViolation"),
        ('[2, "m10", "Reset", []]', "m10", "FormationViolation"),
    ],
)
async def test_incoming_error_codes(
    make_peer: Callable[..., Peer], frame: str, expected_id: str, code: str
) -> None:
    """OCPP-J 4.2.3 Table 7 + errata 5.1/5.2: the exact 1.6 CALLERROR for each bad CALL."""
    peer = make_peer()
    answer = await _answer_error(peer, frame)
    assert answer[:3] == [4, expected_id, code]
    assert len(answer) == 5 and isinstance(answer[3], str) and isinstance(answer[4], dict)
    # Still serving.
    assert await _answer_error(peer, [2, "ok", "DataTransfer", {"vendorId": "v"}]) == [
        3,
        "ok",
        {"status": "UnknownVendorId"},
    ]


async def test_bytes_frames_are_decoded(make_peer: Callable[..., Peer]) -> None:
    """OCPP-J 4.1.2: UTF-8; a binary frame with a valid CALL is still served."""
    peer = make_peer()
    raw = json.dumps([2, "b1", "DataTransfer", {"vendorId": "ü"}]).encode()
    assert await _answer_error(peer, raw) == [3, "b1", {"status": "UnknownVendorId"}]


async def test_incoming_calls_are_served_one_at_a_time(make_peer: Callable[..., Peer]) -> None:
    """4.1.1: CALLs from the peer are handled in order, never concurrently."""
    release = asyncio.Event()
    active = 0
    max_active = 0
    order: list[str] = []

    async def handler(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        nonlocal active, max_active
        active += 1
        max_active = max(max_active, active)
        order.append(payload["vendorId"])
        await release.wait()
        active -= 1
        return {"status": "UnknownVendorId"}

    peer = make_peer(handler)
    peer.transport.feed([2, "c1", "DataTransfer", {"vendorId": "1"}])
    peer.transport.feed([2, "c2", "DataTransfer", {"vendorId": "2"}])
    assert await peer.transport.nothing_sent()
    release.set()
    assert (await peer.transport.next_sent())[1] == "c1"
    assert (await peer.transport.next_sent())[1] == "c2"
    assert max_active == 1 and order == ["1", "2"]


# ----------------------------------------------------------------------------- schema mapping


def _schema_error(action: str, payload: dict[str, Any]) -> SchemaError:
    validator = get_validator(MessageType.Call, action, "1.6")
    errors = list(validator.iter_errors(payload))
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize(
    ("action", "payload", "code"),
    [
        ("ChangeAvailability", {"connectorId": 1}, "ProtocolError"),
        (
            "ChangeAvailability",
            {"connectorId": "1", "type": "Operative"},
            "TypeConstraintViolation",
        ),
        ("RemoteStartTransaction", {"idTag": "X" * 21}, "TypeConstraintViolation"),  # CiString20
        ("ChangeAvailability", {"connectorId": 1, "type": "Off"}, "PropertyConstraintViolation"),
        ("Reset", {"type": "Soft", "extra": True}, "FormationViolation"),
    ],
)
def test_schema_error_code_from_real_validator(
    action: str, payload: dict[str, Any], code: str
) -> None:
    """OCPP-J 4.2.3 Table 7: required -> ProtocolError ("incomplete"), type/length ->
    TypeConstraintViolation, enum -> PropertyConstraintViolation, extra property ->
    FormationViolation ("not conform the PDU structure", errata 3.2, spelled as errata 5.2)."""
    assert rpc.schema_error_code(_schema_error(action, payload)) == code
    with pytest.raises(CallError) as info:
        rpc.validate(MessageType.Call, action, payload)
    assert info.value.code == code


@pytest.mark.parametrize(
    ("validator", "code"),
    [
        ("required", "ProtocolError"),
        ("type", "TypeConstraintViolation"),
        ("maxLength", "TypeConstraintViolation"),
        ("format", "TypeConstraintViolation"),
        ("additionalProperties", "FormationViolation"),
        ("enum", "PropertyConstraintViolation"),
        ("minimum", "PropertyConstraintViolation"),
        ("maximum", "PropertyConstraintViolation"),
        ("multipleOf", "PropertyConstraintViolation"),
    ],
)
def test_schema_error_code_mapping(validator: str, code: str) -> None:
    """OCPP-J 4.2.3 Table 7 mapping of every JSON-schema keyword the 1.6 schemas use."""
    assert rpc.schema_error_code(SchemaError("x", validator=validator)) == code


def test_validate_rejects_non_object_payload() -> None:
    """4.2.1: the payload of a CALL is a JSON object -> FormationViolation otherwise."""
    with pytest.raises(CallError) as info:
        rpc.validate(MessageType.Call, "Heartbeat", [])
    assert info.value.code == "FormationViolation"


def test_error_code_spellings_are_the_1_6_ones() -> None:
    """OCPP-J errata 5.1 / 5.2: "FormationViolation" and "OccurenceConstraintViolation" stay;
    the 2.0.1 names "FormatViolation" / "OccurrenceConstraintViolation" must never be used."""
    codes = {
        value
        for name, value in vars(rpc).items()
        if name.isupper() and isinstance(value, str) and name != "OCPP_VERSION"
    }
    assert {"FormationViolation", "OccurenceConstraintViolation"} <= codes
    assert not codes & {"FormatViolation", "OccurrenceConstraintViolation"}
    table7 = {
        "NotImplemented",
        "NotSupported",
        "InternalError",
        "ProtocolError",
        "SecurityError",
        "FormationViolation",
        "PropertyConstraintViolation",
        "OccurenceConstraintViolation",
        "TypeConstraintViolation",
        "GenericError",
    }
    assert table7 <= codes


# Issue 9 item 3: ``multipleOf: 0.1`` (chargingSchedulePeriod.limit, minChargingRate) is
# checked on the decimals as written, not on binary floats (10.2 / 0.1 is 101.99999999999999).
def _profile(limit: float, min_rate: float) -> dict[str, Any]:
    return {
        "chargingProfileId": 1,
        "stackLevel": 0,
        "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {
            "chargingRateUnit": "A",
            "minChargingRate": min_rate,
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
        },
    }


@pytest.mark.parametrize("limit", [10.2, 0.3, 16.1, 6.0, 7, 1e3, 12345.6, -0.7])
def test_decimal_multiple_of_accepted_inbound(limit: float) -> None:
    payload = json.loads(json.dumps({"idTag": "CARD", "chargingProfile": _profile(limit, 1.9)}))
    rpc.validate(MessageType.Call, "RemoteStartTransaction", payload)
    rpc.validate(
        MessageType.Call,
        "SetChargingProfile",
        {"connectorId": 1, "csChargingProfiles": payload["chargingProfile"]},
    )


@pytest.mark.parametrize("limit", [10.25, 0.01, 16.15, 1e-7])
def test_non_multiple_still_property_constraint_violation(limit: float) -> None:
    with pytest.raises(CallError) as err:
        rpc.validate(
            MessageType.Call,
            "RemoteStartTransaction",
            {"idTag": "CARD", "chargingProfile": _profile(limit, 1.0)},
        )
    assert err.value.code == rpc.PROPERTY_CONSTRAINT_VIOLATION
    assert "limit" in err.value.description


def test_decimal_multiple_of_accepted_outbound() -> None:
    """The same rule for what the charger sends (GetCompositeSchedule.conf)."""
    rpc.validate(
        MessageType.CallResult,
        "GetCompositeSchedule",
        {
            "status": "Accepted",
            "connectorId": 1,
            "scheduleStart": NOW,
            "chargingSchedule": {
                "chargingRateUnit": "W",
                "minChargingRate": 4140.9,
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 7359.3}],
            },
        },
    )


def test_exact_multiple_of_with_a_decimal_divisor() -> None:
    """The ocpp library caches some schemas loaded with parse_float=Decimal (SetChargingProfile,
    RemoteStartTransaction); a process that also runs the library's CSMS may hand that schema
    to the charger's validator: ``multipleOf`` must still compare exactly (it raised
    decimal.InvalidOperation, an InternalError to the CSMS)."""
    from decimal import Decimal

    from controller.csms.schema import exact_validator

    schema = {
        "type": "object",
        "properties": {"x": {"type": "number", "multipleOf": Decimal("0.1")}},
    }
    validator = exact_validator(schema)
    assert validator.is_valid({"x": 10.2}) and validator.is_valid({"x": 7})
    assert not validator.is_valid({"x": 10.25})


# --------------------------------------------------------------------------- schema files


def test_the_actions_are_the_librarys_1_6_actions() -> None:
    """rpc.ACTIONS comes from the ocpp library's schema file names (its v16 dataclass modules
    are not loaded at start, issue 16): the same set as its Action enum."""
    from ocpp.v16.enums import Action

    assert rpc.ACTIONS == {a.value for a in Action}


@pytest.mark.parametrize("message_type", [MessageType.Call, MessageType.CallResult])
def test_every_schema_read_from_the_files_is_the_librarys(
    message_type: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """load_schema reads the official schema the library validates with (OCPP-J 4.2.1/4.2.2:
    the CALL payload and the CALLRESULT payload of each action)."""
    # The library caches one validator per action whatever parse_float made it (the dev
    # CSMS asks with Decimal): read its files afresh, with floats as load_schema does.
    monkeypatch.setattr(ocpp.messages, "_validators", {})
    for action in sorted(rpc.ACTIONS):
        assert rpc.load_schema(message_type, action) == (
            get_validator(message_type, action, rpc.OCPP_VERSION).schema
        ), action


def test_no_schema_for_an_unknown_action_or_a_callerror() -> None:
    with pytest.raises(ValueError):
        rpc.load_schema(MessageType.Call, "../../etc/passwd")
    with pytest.raises(ValueError):
        rpc.load_schema(MessageType.CallError, "BootNotification")


def test_a_schema_is_compiled_on_the_first_message_of_its_action() -> None:
    """Validators are built when an action is first sent or received, not at import."""
    rpc._validators.pop((MessageType.Call, "DataTransfer"), None)
    rpc.validate(MessageType.Call, "DataTransfer", {"vendorId": "evsed"})
    assert (MessageType.Call, "DataTransfer") in rpc._validators
    with pytest.raises(CallError) as err:
        rpc.validate(MessageType.Call, "DataTransfer", {"vendorId": "x" * 256})
    assert err.value.code == rpc.TYPE_CONSTRAINT_VIOLATION  # maxLength 255
