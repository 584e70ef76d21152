"""csms.schema.quick_check: the yes/no check that spares a charger jsonschema at start judges
every official OCPP 1.6 and 2.0.1 payload schema exactly as jsonschema does, and where it is
not sure jsonschema gives the same first error (so the same CALLERROR code) as before."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.csms.rpc import CallError
from controller.csms.schema import (
    DRAFT4,
    DRAFT6,
    SchemaFiles,
    UnsupportedSchema,
    exact_draft6_validator,
    exact_validator,
    quick_check,
)
from controller.ocpp16 import rpc as rpc16
from controller.ocpp201 import rpc as rpc201

VERSIONS = {"1.6": rpc16, "2.0.1": rpc201}
KEYS = [
    (version, message_type, action)
    for version, module in VERSIONS.items()
    for action in sorted(module.SCHEMAS.actions)
    for message_type in (2, 3)
]

# Values of every JSON type and the boundaries the schemas draw (1.0 is an integer in draft
# 6, not in draft 4; True is no integer in either).
ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([1.0, 0.5, -0.0, 1e300, 10**40, "", "x" * 60, [], {}, [1], {"a": 1}]),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=4),
)


def draw(data: st.DataObject, node: dict[str, Any], root: dict[str, Any], depth: int = 0) -> Any:
    """An instance that follows ``node`` mostly, with a wrong value, a missing required
    field, an extra field or a value just past a bound now and then."""
    ref = node.get("$ref")
    if isinstance(ref, str):
        node = root["definitions"][ref.removeprefix("#/definitions/")]
    if data.draw(st.integers(0, 11)) == 0 or depth > 8:
        return data.draw(ODD)
    if "enum" in node:
        return data.draw(st.sampled_from(node["enum"]) | st.text(max_size=3))
    kind = node.get("type")
    if kind == "object":
        required = set(node.get("required", ()))
        out: dict[str, Any] = {}
        for name, sub in node.get("properties", {}).items():
            keep = (
                data.draw(st.integers(0, 15)) > 0 if name in required else data.draw(st.booleans())
            )
            if keep:
                out[name] = draw(data, sub, root, depth + 1)
        if data.draw(st.integers(0, 15)) == 0:
            out[data.draw(st.sampled_from(["extra", "customData", "vendorId"]))] = 1
        return out
    if kind == "array":
        low = node.get("minItems", 0)
        high = min(node.get("maxItems", low + 2), low + 2) + 1
        count = data.draw(st.integers(max(0, low - 1), high))
        return [draw(data, node.get("items", {}), root, depth + 1) for _ in range(count)]
    if kind == "string":
        limit = node.get("maxLength", 20)
        # Code points, not bytes: a multi-byte character at the bound.
        around = st.sampled_from([limit - 1, limit, limit + 1]).map(lambda n: "é" * max(n, 0))
        return data.draw(around | st.text(max_size=3))
    if kind == "integer":
        low, high = node.get("minimum", -5), node.get("maximum", 5)
        return data.draw(st.integers(int(low) - 1, int(high) + 1) | st.sampled_from([2.0, 2.5]))
    if kind == "number":
        places = data.draw(st.integers(0, 3))
        value = data.draw(st.decimals(-1000, 1000, places=places, allow_nan=False))
        return float(value) if data.draw(st.booleans()) else int(value)
    if kind == "boolean":
        return data.draw(st.booleans())
    return data.draw(ODD)


def jsonschema_first(version: str, message_type: int, action: str, payload: Any) -> Any:
    """jsonschema's first error, from a validator made here (not the cached one)."""
    module = VERSIONS[version]
    schema = module.SCHEMAS.compiled(message_type, action).schema
    make = exact_validator if version == "1.6" else exact_draft6_validator
    return next(iter(make(schema).iter_errors(payload)), None)


@pytest.mark.parametrize(("version", "message_type", "action"), KEYS)
def test_every_official_schema_has_a_quick_check(
    version: str, message_type: int, action: str
) -> None:
    """Nothing in the official files is left to jsonschema alone (no keyword the quick
    check does not model), so a valid payload never needs it."""
    assert VERSIONS[version].SCHEMAS.compiled(message_type, action).quick is not None


@settings(
    max_examples=1500,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(key=st.sampled_from(KEYS), data=st.data())
def test_the_quick_check_says_yes_exactly_when_jsonschema_finds_no_error(
    key: tuple[str, int, str], data: st.DataObject
) -> None:
    """Over every CALL and CALLRESULT schema of both versions, for JSON values: quick yes
    <=> no jsonschema error; and the error (validator keyword, path, message: the CALLERROR
    code and description) is jsonschema's own."""
    version, message_type, action = key
    schemas: SchemaFiles = VERSIONS[version].SCHEMAS
    compiled = schemas.compiled(message_type, action)
    payload = draw(data, compiled.schema, compiled.schema)
    expected = jsonschema_first(version, message_type, action, payload)
    assert compiled.quick is not None
    assert compiled.quick(payload) is (expected is None), (key, payload, expected)
    got = schemas.first_error(message_type, action, payload)
    if expected is None:
        assert got is None
    else:
        assert got is not None
        assert (got.validator, list(got.absolute_path), got.message) == (
            expected.validator,
            list(expected.absolute_path),
            expected.message,
        )


def profile_16(connector: Any, limit: Any) -> dict[str, Any]:
    schedule = {
        "chargingRateUnit": "W",
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
    }
    return {
        "connectorId": connector,
        "csChargingProfiles": {
            "chargingProfileId": 1,
            "stackLevel": 0,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": schedule,
        },
    }


def profile_201(evse: Any, limit: Any) -> dict[str, Any]:
    schedule = {
        "id": 1,
        "chargingRateUnit": "W",
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
    }
    return {
        "evseId": evse,
        "chargingProfile": {
            "id": 1,
            "stackLevel": 0,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": [schedule],
        },
    }


class Mapping(dict):  # type: ignore[type-arg]
    """A dict subclass: jsonschema's isinstance() calls it an object."""


@pytest.mark.parametrize(
    "value",
    [Decimal("7.5"), Decimal("7"), Decimal("7.25"), math.nan, math.inf, -math.inf, (1, 2)]
    + [True, Mapping(a=1), 10**40, 1e300],
    ids=repr,
)
def test_values_json_does_not_decode_to_are_left_to_jsonschema(value: Any) -> None:
    """A Decimal, a tuple, a dict subclass, NaN, an infinity, huge numbers: the quick check
    never says yes where jsonschema says no, and the dialect's answer (CALLERROR code, or
    jsonschema's exception) is the same as jsonschema's first error gives."""
    assert (
        profile_16(1, 7.5)
        and rpc16.SCHEMAS.first_error(2, "SetChargingProfile", profile_16(1, 7.5)) is None
    )
    assert rpc201.SCHEMAS.first_error(2, "SetChargingProfile", profile_201(1, 7.5)) is None
    for version, make in (("1.6", profile_16), ("2.0.1", profile_201)):
        module = VERSIONS[version]
        compiled = module.SCHEMAS.compiled(2, "SetChargingProfile")
        assert compiled.quick is not None
        for payload in (make(value, 7.5), make(1, value)):
            error = _outcome(jsonschema_first, version, 2, "SetChargingProfile", payload)
            expected = error if isinstance(error, str) else _code(module, error)
            if _outcome(compiled.quick, payload) is True:
                assert expected is None, (payload, expected)
            assert _outcome(_answer, module, payload) == expected, payload


def test_a_limit_not_a_multiple_of_the_step_is_refused_on_exact_decimals() -> None:
    """multipleOf 0.1 on the decimals as written (issue 9 item 3): 10.2 is one, 10.25 not,
    the same in the quick check and in jsonschema; a number too large for the decimal
    context is left to jsonschema (which raises, as before)."""
    schema = {"type": "object", "properties": {"x": {"type": "number", "multipleOf": 0.1}}}
    for draft, make in ((DRAFT4, exact_validator), (DRAFT6, exact_draft6_validator)):
        check = quick_check(schema, draft)
        assert check({"x": 10.2}) and make(schema).is_valid({"x": 10.2})
        assert not check({"x": 10.25}) and not make(schema).is_valid({"x": 10.25})
        assert not check({"x": 1e40})


def test_draft6_counts_a_whole_float_as_an_integer_and_draft4_does_not() -> None:
    schema = {"type": "integer"}
    assert quick_check(schema, DRAFT6)(1.0) and exact_draft6_validator(schema).is_valid(1.0)
    assert not quick_check(schema, DRAFT4)(1.0) and not exact_validator(schema).is_valid(1.0)
    assert not quick_check(schema, DRAFT6)(True)


@pytest.mark.parametrize(
    "schema",
    [
        {"anyOf": [{"type": "string"}]},
        {"type": ["string", "null"]},
        {"pattern": "^a"},
        {"$ref": "other.json#/definitions/A"},
        {"enum": [1, 2]},
        {"items": [{"type": "string"}]},
        {"minimum": 1, "exclusiveMinimum": True},
        {"definitions": {"A": {"$ref": "#/definitions/A"}}, "$ref": "#/definitions/A"},
    ],
    ids=repr,
)
def test_what_the_quick_check_does_not_model_is_refused(schema: dict[str, Any]) -> None:
    """A schema with anything else gets no quick check; SchemaFiles then asks jsonschema
    for every payload (slower, never wrong)."""
    with pytest.raises(UnsupportedSchema):
        quick_check(schema, DRAFT4)


def test_a_ref_with_siblings_follows_the_ref_as_jsonschema_does() -> None:
    """Draft 4/6: the siblings of a $ref are ignored."""
    schema = {
        "definitions": {"S": {"type": "string"}},
        "properties": {"a": {"$ref": "#/definitions/S", "maxLength": 1}},
    }
    for draft, make in ((DRAFT4, exact_validator), (DRAFT6, exact_draft6_validator)):
        assert quick_check(schema, draft)({"a": "long"}) is make(schema).is_valid({"a": "long"})
        assert quick_check(schema, draft)({"a": 1}) is make(schema).is_valid({"a": 1})


def _answer(module: Any, payload: Any) -> str | None:
    try:
        module.validate(2, "SetChargingProfile", payload)
    except CallError as exc:
        return exc.code
    return None


def _code(module: Any, error: Any) -> str | None:
    return None if error is None else str(module.schema_error_code(error))


def _outcome(call: Any, *args: Any) -> Any:
    """What ``call(*args)`` returns, or the name of the exception it raises."""
    try:
        return call(*args)
    except Exception as exc:  # noqa: BLE001 - compared between the two paths
        return type(exc).__name__
