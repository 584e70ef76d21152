"""The OCPP-J 1.6 dialect: its schemas (with exact decimals), actions and CALLERROR spellings."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# The package alone (its __init__ is empty): its official schema files are what we use. Its
# v16 package would build ~150 dataclasses and load jsonschema at import (ocpp.v16.call,
# call_result, datatypes, enums: a third of the start-up CPU on a small board, issue 16).
import ocpp

from controller.csms.rpc import CallError, Dialect
from controller.csms.schema import DRAFT4, SchemaFiles, describe

if TYPE_CHECKING:  # jsonschema is imported on the first payload in doubt (csms/schema.py)
    from jsonschema.exceptions import ValidationError as SchemaError

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

# The ocpp library's OCPP 1.6 schemas (with the security extension): <Action>.json for the
# CALL, <Action>Response.json for its CALLRESULT. The actions are those with a CALL schema,
# the same set as the library's ocpp.v16.enums.Action (tests/csms/test_rpc.py checks it).
SCHEMAS = SchemaFiles(
    OCPP_VERSION,
    os.path.join(os.path.dirname(ocpp.__file__), "v16", "schemas"),
    ".json",
    DRAFT4,
)
SCHEMA_DIR = SCHEMAS.directory
ACTIONS = SCHEMAS.actions
load_schema = SCHEMAS.load
_validators = SCHEMAS.validators  # what was compiled so far (tests/ops/test_start_imports.py)


def schema_error_code(err: SchemaError) -> str:
    """Map a JSON-schema failure to the OCPP-J 1.6 error code that describes it."""
    if err.validator == "required":
        return PROTOCOL_ERROR  # "Payload for Action is incomplete"
    if err.validator in ("type", "maxLength", "format"):
        return TYPE_CONSTRAINT_VIOLATION
    if err.validator == "additionalProperties":
        return FORMATION_VIOLATION
    return PROPERTY_CONSTRAINT_VIOLATION  # enum, minimum, maximum, ...


def validate(message_type: int, action: str, payload: Any) -> None:
    """Raise CallError when ``payload`` violates the official OCPP 1.6 JSON schema."""
    if not isinstance(payload, dict):
        raise CallError(FORMATION_VIOLATION, "payload must be a JSON object")
    err = SCHEMAS.first_error(message_type, action, payload)
    if err is not None:
        raise CallError(schema_error_code(err), describe(err))


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
