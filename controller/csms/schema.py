"""JSON-schema validators for OCPP payloads, with ``multipleOf`` checked on exact decimals."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from jsonschema import Draft4Validator, Draft6Validator, validators
from jsonschema.exceptions import ValidationError as SchemaError

# OCPP-J MessageTypeIds with a payload schema (controller.csms.rpc's CALL and CALLRESULT).
_CALL = 2
_CALLRESULT = 3


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


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every local ``{"$ref": "#/definitions/X"}`` replaced by that
    definition (recursively). The 2.0.1 schemas refer to their definitions everywhere, and a
    validator that resolves a reference per instance node checks a TransactionEvent about
    half as fast (bench/durability.py --ocpp 2.0.1); none of them is recursive, which
    ``_MAX_DEPTH`` guards anyway. Errors and their paths stay the same: they follow the
    instance."""
    definitions = schema.get("definitions", {})

    def resolve(node: Any, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise ValueError("schema references nest too deep (a recursive schema?)")
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(_LOCAL_REF) and len(node) == 1:
                return resolve(definitions[ref[len(_LOCAL_REF) :]], depth + 1)
            return {k: resolve(v, depth + 1) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v, depth + 1) for v in node]
        return node

    return {k: (v if k == "definitions" else resolve(v, 0)) for k, v in schema.items()}


_LOCAL_REF = "#/definitions/"
_MAX_DEPTH = 64


class SchemaFiles:
    """One OCPP version's official JSON schema files (as the ``ocpp`` library ships them),
    each compiled into an exact-decimal validator on its first message, not at start (most
    actions never occur in a run: tests/ops/test_start_imports.py)."""

    def __init__(
        self,
        version: str,
        directory: str,
        call_suffix: str,
        make_validator: Callable[[dict[str, Any]], Any],
    ) -> None:
        self.version = version
        self.directory = directory
        self.call_suffix = call_suffix  # "<Action>.json" (1.6) or "<Action>Request.json"
        self._make_validator = make_validator
        # The actions are those with a CALL schema.
        self.actions = frozenset(
            name.removesuffix(call_suffix)
            for name in os.listdir(directory)
            if name.endswith(call_suffix) and not name.endswith("Response.json")
        )
        self.validators: dict[tuple[int, str], Any] = {}

    def load(self, message_type: int, action: str) -> dict[str, Any]:
        """The official schema of a CALL (2) or CALLRESULT (3) of ``action``."""
        if action not in self.actions or message_type not in (_CALL, _CALLRESULT):
            raise ValueError(f"no OCPP {self.version} schema for {message_type}/{action!r}")
        suffix = "Response.json" if message_type == _CALLRESULT else self.call_suffix
        # utf-8-sig like the ocpp library: some official schema files start with a BOM.
        with open(os.path.join(self.directory, action + suffix), encoding="utf-8-sig") as f:
            schema: dict[str, Any] = json.load(f)
        return schema

    def validator(self, message_type: int, action: str) -> Any:
        """The compiled validator of ``action`` (cached)."""
        key = (message_type, action)
        found = self.validators.get(key)
        if found is None:
            schema = inline_refs(self.load(message_type, action))
            found = self.validators[key] = self._make_validator(schema)
        return found

    def first_error(self, message_type: int, action: str, payload: Any) -> SchemaError | None:
        """The schema violation ``validate`` would raise for ``payload``, or None."""
        try:
            self.validator(message_type, action).validate(payload)
        except SchemaError as err:
            return err
        return None


def describe(err: SchemaError) -> str:
    """Where and what, for a CALLERROR description (bounded)."""
    where = "/".join(str(p) for p in err.absolute_path) or "payload"
    return f"{where}: {err.message}"[:200]
