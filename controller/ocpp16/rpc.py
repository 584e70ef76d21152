"""The OCPP-J 1.6 dialect: its schemas (with exact decimals), actions and CALLERROR spellings."""

from __future__ import annotations

from typing import Any

from jsonschema.exceptions import ValidationError as SchemaError
from ocpp.messages import get_validator
from ocpp.v16.enums import Action

from controller.csms.rpc import CallError, Dialect
from controller.csms.schema import exact_validator

OCPP_VERSION = "1.6"

# OCPP-J 1.6 section 4.2.3, Table 7. The errata sheet (5.1, 5.2) keeps the original
# misspellings on the wire: "FormationViolation" and "OccurenceConstraintViolation".
# The ocpp library sends the 2.0.1 names, so we do not use its CallError codes.
NOT_IMPLEMENTED = "NotImplemented"
NOT_SUPPORTED = "NotSupported"
INTERNAL_ERROR = "InternalError"
PROTOCOL_ERROR = "ProtocolError"
SECURITY_ERROR = "SecurityError"
FORMATION_VIOLATION = "FormationViolation"
PROPERTY_CONSTRAINT_VIOLATION = "PropertyConstraintViolation"
OCCURENCE_CONSTRAINT_VIOLATION = "OccurenceConstraintViolation"
TYPE_CONSTRAINT_VIOLATION = "TypeConstraintViolation"
GENERIC_ERROR = "GenericError"

ACTIONS = frozenset(a.value for a in Action)


def schema_error_code(err: SchemaError) -> str:
    """Map a JSON-schema failure to the OCPP-J 1.6 error code that describes it."""
    if err.validator == "required":
        return PROTOCOL_ERROR  # "Payload for Action is incomplete"
    if err.validator in ("type", "maxLength", "format"):
        return TYPE_CONSTRAINT_VIOLATION
    if err.validator == "additionalProperties":
        return FORMATION_VIOLATION
    return PROPERTY_CONSTRAINT_VIOLATION  # enum, minimum, maximum, ...


_validators: dict[tuple[int, str], Any] = {}


def _validator(message_type: int, action: str) -> Any:
    """The official schema of ``action`` with the exact ``multipleOf`` check (cached)."""
    key = (message_type, action)
    found = _validators.get(key)
    if found is None:
        schema = get_validator(message_type, action, OCPP_VERSION).schema
        found = _validators[key] = exact_validator(schema)
    return found


def validate(message_type: int, action: str, payload: Any) -> None:
    """Raise CallError when ``payload`` violates the official OCPP 1.6 JSON schema."""
    if not isinstance(payload, dict):
        raise CallError(FORMATION_VIOLATION, "payload must be a JSON object")
    validator = _validator(message_type, action)
    try:
        validator.validate(payload)
    except SchemaError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "payload"
        raise CallError(schema_error_code(err), f"{where}: {err.message}"[:200]) from None


DIALECT = Dialect(
    version=OCPP_VERSION,
    actions=ACTIONS,
    validate=validate,
    formation_violation=FORMATION_VIOLATION,
    not_implemented=NOT_IMPLEMENTED,
    not_supported=NOT_SUPPORTED,
    internal_error=INTERNAL_ERROR,
    generic_error=GENERIC_ERROR,
)
