"""The OCPP-J 2.0.1 dialect: its schemas (with exact decimals), actions and CALLERROR codes."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# The package alone: its official 2.0.1 schema files are what we use; the v201 package
# would build its dataclasses and load jsonschema at import (see ocpp16/rpc.py).
import ocpp

from controller.csms.rpc import CallError, Dialect
from controller.csms.schema import DRAFT6, SchemaFiles, describe

if TYPE_CHECKING:  # jsonschema is imported on the first payload in doubt (csms/schema.py)
    from jsonschema.exceptions import ValidationError as SchemaError

OCPP_VERSION = "2.0.1"
SUBPROTOCOL = "ocpp2.0.1"

# OCPP-J 2.0.1 (part 4) 4.3, Table 8: the valid error codes.
FORMAT_VIOLATION = "FormatViolation"
GENERIC_ERROR = "GenericError"
INTERNAL_ERROR = "InternalError"
MESSAGE_TYPE_NOT_SUPPORTED = "MessageTypeNotSupported"
NOT_IMPLEMENTED = "NotImplemented"
NOT_SUPPORTED = "NotSupported"
OCCURRENCE_CONSTRAINT_VIOLATION = "OccurrenceConstraintViolation"
PROPERTY_CONSTRAINT_VIOLATION = "PropertyConstraintViolation"
PROTOCOL_ERROR = "ProtocolError"
RPC_FRAMEWORK_ERROR = "RpcFrameworkError"
SECURITY_ERROR = "SecurityError"
TYPE_CONSTRAINT_VIOLATION = "TypeConstraintViolation"
ERROR_CODES = frozenset(
    {
        FORMAT_VIOLATION,
        GENERIC_ERROR,
        INTERNAL_ERROR,
        MESSAGE_TYPE_NOT_SUPPORTED,
        NOT_IMPLEMENTED,
        NOT_SUPPORTED,
        OCCURRENCE_CONSTRAINT_VIOLATION,
        PROPERTY_CONSTRAINT_VIOLATION,
        PROTOCOL_ERROR,
        RPC_FRAMEWORK_ERROR,
        SECURITY_ERROR,
        TYPE_CONSTRAINT_VIOLATION,
    }
)

# The ocpp library's official OCPP 2.0.1 schemas: <Action>Request.json for the CALL,
# <Action>Response.json for its CALLRESULT; the actions are those with a request schema.
SCHEMAS = SchemaFiles(
    OCPP_VERSION,
    os.path.join(os.path.dirname(ocpp.__file__), "v201", "schemas"),
    "Request.json",
    DRAFT6,
)
SCHEMA_DIR = SCHEMAS.directory
ACTIONS = SCHEMAS.actions
load_schema = SCHEMAS.load
_validators = SCHEMAS.validators


def schema_error_code(err: SchemaError) -> str:
    """Map a JSON-schema failure to the OCPP-J 2.0.1 error code that describes it."""
    if err.validator in ("required", "minItems", "maxItems"):
        return OCCURRENCE_CONSTRAINT_VIOLATION  # a field missing or repeated too often
    if err.validator in ("type", "maxLength", "format"):
        return TYPE_CONSTRAINT_VIOLATION
    if err.validator == "additionalProperties":
        return FORMAT_VIOLATION
    return PROPERTY_CONSTRAINT_VIOLATION  # enum, minimum, maximum, ...


def validate(message_type: int, action: str, payload: Any) -> None:
    """Raise CallError when ``payload`` violates the official OCPP 2.0.1 JSON schema."""
    if not isinstance(payload, dict):
        raise CallError(FORMAT_VIOLATION, "payload must be a JSON object")
    err = SCHEMAS.first_error(message_type, action, payload)
    if err is not None:
        raise CallError(schema_error_code(err), describe(err))


DIALECT = Dialect(
    version=OCPP_VERSION,
    actions=ACTIONS,
    validate=validate,
    formation_violation=FORMAT_VIOLATION,
    not_implemented=NOT_IMPLEMENTED,
    not_supported=NOT_SUPPORTED,
    protocol_error=PROTOCOL_ERROR,
    internal_error=INTERNAL_ERROR,
    generic_error=GENERIC_ERROR,
    rpc_framework_error=RPC_FRAMEWORK_ERROR,
    message_type_not_supported=MESSAGE_TYPE_NOT_SUPPORTED,
)
