"""JSON-schema validators for OCPP payloads, with ``multipleOf`` checked on exact decimals."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from jsonschema import Draft4Validator, Draft6Validator, validators
from jsonschema.exceptions import ValidationError as SchemaError


def _exact_multiple_of(
    validator: Any, divisor: Any, instance: Any, schema: Any
) -> Iterator[SchemaError]:
    """``multipleOf`` on the decimal numbers as written, not on binary floats: the schemas
    say ``multipleOf: 0.1`` for limits and rates, and 10.2 / 0.1 is not an integer in
    floating point, so the stock check refused valid calls (issue 9 item 3). ``repr`` gives
    the shortest decimal that reads back as the same float, i.e. what the peer wrote."""
    if not validator.is_type(instance, "number"):
        return
    if _decimal(instance) % _decimal(divisor) != 0:
        yield SchemaError(f"{instance!r} is not a multiple of {divisor!r}")


def _decimal(number: Any) -> Decimal:
    # The ocpp library caches its schemas, and loads some (SetChargingProfile,
    # RemoteStartTransaction) with parse_float=Decimal: in a process that also runs the
    # library's CSMS, the divisor may already be a Decimal.
    return number if isinstance(number, Decimal) else Decimal(repr(number))


ExactDraft4Validator = validators.extend(Draft4Validator, {"multipleOf": _exact_multiple_of})


ExactDraft6Validator = validators.extend(Draft6Validator, {"multipleOf": _exact_multiple_of})


def exact_validator(schema: dict[str, Any]) -> Any:
    """A draft-04 validator of ``schema`` whose ``multipleOf`` compares decimals as written."""
    return ExactDraft4Validator(schema)


def exact_draft6_validator(schema: dict[str, Any]) -> Any:
    """The same for the draft-06 schemas of OCPP 2.0.1."""
    return ExactDraft6Validator(schema)
