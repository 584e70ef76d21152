"""The OCPP-J 2.0.1 dialect: actions and schemas from the ocpp library's 2.0.1 files (compiled
on first use), the 2.0.1 error codes (part 4 4.3) and exact decimals."""

from __future__ import annotations

from decimal import Decimal

import pytest

from controller.csms.rpc import CALL, CALLRESULT, CallError
from controller.csms.schema import exact_draft6_validator
from controller.ocpp201 import rpc as rpc201


def test_the_actions_are_the_librarys_201_actions() -> None:
    from ocpp.v201.enums import Action

    assert rpc201.ACTIONS == {a.value for a in Action}
    assert {"BootNotification", "Heartbeat", "StatusNotification"} <= rpc201.ACTIONS


def test_schemas_are_compiled_on_first_use() -> None:
    rpc201._validators.pop((CALL, "Heartbeat"), None)
    rpc201.validate(CALL, "Heartbeat", {})
    assert (CALL, "Heartbeat") in rpc201._validators


def test_the_dialect_speaks_201() -> None:
    d = rpc201.DIALECT
    assert d.version == "2.0.1"
    assert d.formation_violation == "FormatViolation"
    assert d.not_rpc == "RpcFrameworkError"
    assert d.message_type_not_supported == "MessageTypeNotSupported"
    codes = {d.not_implemented, d.not_supported, d.protocol_error, d.internal_error}
    assert codes | {d.generic_error, d.formation_violation} <= rpc201.ERROR_CODES
    assert len(rpc201.ERROR_CODES) == 12


BOOT = {"reason": "PowerUp", "chargingStation": {"vendorName": "v", "model": "m"}}


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"chargingStation": BOOT["chargingStation"]}, "OccurrenceConstraintViolation"),
        ({**BOOT, "reason": 5}, "TypeConstraintViolation"),
        ({**BOOT, "chargingStation": {"vendorName": "v", "model": "m" * 21}},
         "TypeConstraintViolation"),
        ({**BOOT, "reason": "Boredom"}, "PropertyConstraintViolation"),
        ({**BOOT, "extra": 1}, "FormatViolation"),
        ([], "FormatViolation"),
    ],
)  # fmt: skip
def test_schema_violations_get_201_codes(payload: object, code: str) -> None:
    with pytest.raises(CallError) as info:
        rpc201.validate(CALL, "BootNotification", payload)
    assert info.value.code == code


def test_answers_are_checked_too() -> None:
    rpc201.validate(CALLRESULT, "Heartbeat", {"currentTime": "2026-01-01T00:00:00Z"})
    with pytest.raises(CallError):
        rpc201.validate(CALLRESULT, "Heartbeat", {})


def test_no_schema_for_an_unknown_action() -> None:
    with pytest.raises(ValueError):
        rpc201.load_schema(CALL, "FlyToTheMoon")
    with pytest.raises(ValueError):
        rpc201.load_schema(4, "Heartbeat")


def test_draft6_multiple_of_is_exact() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "number", "multipleOf": 0.1}}}
    validator = exact_draft6_validator(schema)
    assert validator.is_valid({"x": 10.2}) and validator.is_valid({"x": 7})
    assert not validator.is_valid({"x": 10.25})
    decimal_schema = {"properties": {"x": {"multipleOf": Decimal("0.1")}}}
    assert exact_draft6_validator(decimal_schema).is_valid({"x": 10.2})
