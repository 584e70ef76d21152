"""JSON-schema checks of OCPP payloads: a quick yes/no check compiled from the official
schema, jsonschema (``multipleOf`` on exact decimals) for the first error when it says no."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # jsonschema (with referencing, rpds, attrs and jsonschema_specifications, which reads
    # every metaschema from disk) is a fifth of a small board's start-up CPU (issue 16): it is
    # imported when a payload fails the quick check, not at start.
    from jsonschema.exceptions import ValidationError as SchemaError

# OCPP-J MessageTypeIds with a payload schema (controller.csms.rpc's CALL and CALLRESULT).
_CALL = 2
_CALLRESULT = 3

DRAFT4 = 4  # OCPP 1.6 (validated as draft-04, also the files that say draft-06)
DRAFT6 = 6  # OCPP 2.0.1


def _exact_multiple_of(
    validator: Any, divisor: Any, instance: Any, schema: Any
) -> Iterator[SchemaError]:
    """``multipleOf`` on the decimal numbers as written, not on binary floats: the schemas
    say ``multipleOf: 0.1`` for limits and rates, and 10.2 / 0.1 is not an integer in
    floating point, so the stock check refused valid calls (issue 9 item 3). ``repr`` gives
    the shortest decimal that reads back as the same float, i.e. what the peer wrote."""
    from jsonschema.exceptions import ValidationError

    if not validator.is_type(instance, "number"):
        return
    if _decimal(instance) % _decimal(divisor) != 0:
        yield ValidationError(f"{instance!r} is not a multiple of {divisor!r}")


def _decimal(number: Any) -> Decimal:
    # The ocpp library caches its schemas, and loads some (SetChargingProfile,
    # RemoteStartTransaction) with parse_float=Decimal: in a process that also runs the
    # library's CSMS, the divisor may already be a Decimal.
    return number if isinstance(number, Decimal) else Decimal(repr(number))


_exact_classes: dict[int, Any] = {}


def _exact_class(draft: int) -> Any:
    """jsonschema's Draft4Validator or Draft6Validator with the exact ``multipleOf``; made
    (and jsonschema imported) on first use."""
    found = _exact_classes.get(draft)
    if found is None:
        from jsonschema import Draft4Validator, Draft6Validator, validators

        base = Draft4Validator if draft == DRAFT4 else Draft6Validator
        found = validators.extend(base, {"multipleOf": _exact_multiple_of})
        _exact_classes[draft] = found
    return found


def exact_validator(schema: dict[str, Any]) -> Any:
    """A draft-04 validator of ``schema`` whose ``multipleOf`` compares decimals as written."""
    return _exact_class(DRAFT4)(schema)


def exact_draft6_validator(schema: dict[str, Any]) -> Any:
    """The same for the draft-06 schemas of OCPP 2.0.1."""
    return _exact_class(DRAFT6)(schema)


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


# ---------------------------------------------------------------------------- quick check

Check = Callable[[Any], bool]

# What the quick check understands; a schema with any other keyword gets no quick check
# (jsonschema judges every payload of it). "format" is jsonschema's too: without a format
# checker, which we never give it, it checks nothing.
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "id", "title", "description", "comment", "$comment", "javaType"}
    | {"default", "definitions", "examples", "format"}
)
# The types JSON decodes to: anything else (a Decimal, a tuple, a dict subclass) is left to
# jsonschema, whose type checks are isinstance() checks.
_JSON_TYPES = frozenset({dict, list, str, int, float, bool, type(None)})


class UnsupportedSchema(ValueError):
    """The schema uses something the quick check does not model."""


def quick_check(schema: dict[str, Any], draft: int) -> Check:
    """A function that says True only for a payload jsonschema's draft-04 (``DRAFT4``) or
    draft-06 (``DRAFT6``) validator with the exact ``multipleOf`` accepts (no error at all).
    False means "not sure": ask jsonschema, which also finds the first error (the CALLERROR
    code). It models only what the OCPP schemas use (type, properties, required,
    additionalProperties, enum of strings, min/maxLength, items, min/maxItems, minimum,
    maximum, multipleOf, local $ref) and raises ``UnsupportedSchema`` for anything else.
    It answers "not sure" for values JSON does not decode to and for NaN and infinities.
    tests/csms/test_schema_quick.py compares it with jsonschema over every schema."""
    definitions = schema.get("definitions", {})
    compiled: dict[str, Check] = {}

    def reference(ref: Any, depth: int) -> Check:
        if not isinstance(ref, str) or not ref.startswith(_LOCAL_REF):
            raise UnsupportedSchema(f"$ref {ref!r}")
        name = ref[len(_LOCAL_REF) :]
        if any(c in name for c in "/~%") or name not in definitions:
            raise UnsupportedSchema(f"$ref {ref!r}")
        found = compiled.get(name)
        if found is None:
            found = compiled[name] = node(definitions[name], depth + 1)
        return found

    def node(sub: Any, depth: int) -> Check:
        if depth > _MAX_DEPTH:
            raise UnsupportedSchema("schema references nest too deep (a recursive schema?)")
        if not isinstance(sub, dict):
            raise UnsupportedSchema(f"subschema {sub!r}")
        if "$ref" in sub:
            return reference(sub["$ref"], depth)  # draft-04/06: its siblings are ignored
        checks: list[Check] = []
        for keyword, value in sub.items():
            if keyword in _ANNOTATIONS:
                continue
            make = _KEYWORDS.get(keyword)
            if make is None:
                raise UnsupportedSchema(f"keyword {keyword!r}")
            checks.append(make(value, sub, draft, lambda s: node(s, depth + 1)))
        return _all_of(checks)

    return node(schema, 0)


def _all_of(checks: list[Check]) -> Check:
    def check(value: Any) -> bool:
        if type(value) not in _JSON_TYPES:
            return False
        for one in checks:
            if not one(value):
                return False
        return True

    return check


Compile = Callable[[Any], Check]


def _type(value: Any, sub: dict[str, Any], draft: int, compile_: Compile) -> Check:
    if not isinstance(value, str) or value not in _TYPE_CHECKS:
        raise UnsupportedSchema(f"type {value!r}")
    if value == "integer" and draft == DRAFT6:
        return _is_draft6_integer
    return _TYPE_CHECKS[value]


def _is_draft6_integer(value: Any) -> bool:
    # Draft 6 counts 1.0 as an integer, draft 4 does not.
    return type(value) is int or (type(value) is float and value.is_integer())


def _is_number(value: Any) -> bool:
    return type(value) is int or type(value) is float


_TYPE_CHECKS: dict[str, Check] = {
    "object": lambda value: type(value) is dict,
    "array": lambda value: type(value) is list,
    "string": lambda value: type(value) is str,
    "boolean": lambda value: type(value) is bool,
    "null": lambda value: value is None,
    "integer": lambda value: type(value) is int,  # bool is not (its type is bool)
    "number": _is_number,
}


def _properties(value: Any, sub: dict[str, Any], draft: int, compile_: Compile) -> Check:
    if not isinstance(value, dict):
        raise UnsupportedSchema("properties")
    checks = [(name, compile_(schema)) for name, schema in value.items()]

    def check(instance: Any) -> bool:
        if type(instance) is not dict:
            return True
        for name, one in checks:
            if name in instance and not one(instance[name]):
                return False
        return True

    return check


def _required(value: Any, sub: dict[str, Any], draft: int, compile_: Compile) -> Check:
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise UnsupportedSchema("required")
    names = tuple(value)
    return lambda instance: type(instance) is not dict or all(n in instance for n in names)


def _additional_properties(value: Any, sub: dict[str, Any], draft: int, compile_: Compile) -> Check:
    if "patternProperties" in sub:
        raise UnsupportedSchema("patternProperties")
    known = frozenset(sub.get("properties", {}))
    if value is True:
        return lambda instance: True
    if value is False:
        return lambda instance: type(instance) is not dict or known.issuperset(instance)
    other = compile_(value)

    def check(instance: Any) -> bool:
        if type(instance) is not dict:
            return True
        return all(other(v) for k, v in instance.items() if k not in known)

    return check


def _enum(value: Any, sub: dict[str, Any], draft: int, compile_: Compile) -> Check:
    # jsonschema compares a string with == (its equal()); strings are all the OCPP enums hold.
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UnsupportedSchema("enum")
    allowed = frozenset(value)
    return lambda instance: type(instance) is str and instance in allowed


def _bound(value: Any) -> int | float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise UnsupportedSchema(f"bound {value!r}")
    return value


def _max_length(value: Any, sub: dict[str, Any], draft: int, compile_: Compile) -> Check:
    n = _bound(value)
    return lambda instance: type(instance) is not str or not len(instance) > n


def _min_length(value: Any, sub: dict[str, Any], draft: int, compile_: Compile) -> Check:
    n = _bound(value)
    return lambda instance: type(instance) is not str or not len(instance) < n


def _max_items(value: Any, sub: dict[str, Any], draft: int, compile_: Compile) -> Check:
    n = _bound(value)
    return lambda instance: type(instance) is not list or not len(instance) > n


def _min_items(value: Any, sub: dict[str, Any], draft: int, compile_: Compile) -> Check:
    n = _bound(value)
    return lambda instance: type(instance) is not list or not len(instance) < n


def _items(value: Any, sub: dict[str, Any], draft: int, compile_: Compile) -> Check:
    if not isinstance(value, dict):
        raise UnsupportedSchema("items as a list")
    each = compile_(value)
    return lambda instance: type(instance) is not list or all(each(v) for v in instance)


def _additional_items(value: Any, sub: dict[str, Any], draft: int, compile_: Compile) -> Check:
    # Draft 4/6: only with a list of "items" schemas, which is not modelled.
    if not isinstance(sub.get("items", {}), dict):
        raise UnsupportedSchema("additionalItems")
    return lambda instance: True


def _finite_number(instance: Any) -> bool | None:
    """True for a finite int/float, None for another type (the keyword does not apply),
    False for NaN or an infinity (left to jsonschema)."""
    if type(instance) is int:
        return True
    if type(instance) is float:
        return math.isfinite(instance)
    return None


def _minimum(value: Any, sub: dict[str, Any], draft: int, compile_: Compile) -> Check:
    if "exclusiveMinimum" in sub:
        raise UnsupportedSchema("exclusiveMinimum")
    bound = _bound(value)

    def check(instance: Any) -> bool:
        finite = _finite_number(instance)
        return finite is None or (finite and not instance < bound)

    return check


def _maximum(value: Any, sub: dict[str, Any], draft: int, compile_: Compile) -> Check:
    if "exclusiveMaximum" in sub:
        raise UnsupportedSchema("exclusiveMaximum")
    bound = _bound(value)

    def check(instance: Any) -> bool:
        finite = _finite_number(instance)
        return finite is None or (finite and not instance > bound)

    return check


def _multiple_of(value: Any, sub: dict[str, Any], draft: int, compile_: Compile) -> Check:
    divisor = _decimal(_bound(value))
    if divisor <= 0:
        raise UnsupportedSchema(f"multipleOf {value!r}")

    def check(instance: Any) -> bool:
        finite = _finite_number(instance)
        if finite is None:
            return True
        if not finite:
            return False
        try:
            return _decimal(instance) % divisor == 0
        except ArithmeticError:  # a quotient beyond the context's precision: jsonschema's
            return False

    return check


_KEYWORDS: dict[str, Callable[[Any, dict[str, Any], int, Compile], Check]] = {
    "type": _type,
    "properties": _properties,
    "required": _required,
    "additionalProperties": _additional_properties,
    "enum": _enum,
    "maxLength": _max_length,
    "minLength": _min_length,
    "maxItems": _max_items,
    "minItems": _min_items,
    "items": _items,
    "additionalItems": _additional_items,
    "minimum": _minimum,
    "maximum": _maximum,
    "multipleOf": _multiple_of,
}


# ---------------------------------------------------------------------------- schema files


class Compiled:
    """One payload schema: its quick check (None if the schema has something it does not
    model) and, made on the first payload the quick check is not sure of, its jsonschema
    validator."""

    def __init__(self, schema: dict[str, Any], draft: int) -> None:
        self.schema = schema
        self.draft = draft
        try:
            self.quick: Check | None = quick_check(schema, draft)
        except UnsupportedSchema:
            self.quick = None
        self._full: Any = None

    @property
    def full(self) -> Any:
        """The jsonschema validator (jsonschema imported on first use)."""
        if self._full is None:
            self._full = _exact_class(self.draft)(self.schema)
        return self._full

    def first_error(self, payload: Any) -> SchemaError | None:
        if self.quick is not None and self.quick(payload):
            return None
        # validate() raises the first error iter_errors yields: the one that picks the
        # CALLERROR code (tests/ocpp16/test_fuzz_inbound.py).
        return next(iter(self.full.iter_errors(payload)), None)


class SchemaFiles:
    """One OCPP version's official JSON schema files (as the ``ocpp`` library ships them),
    each compiled on its first message, not at start (most actions never occur in a run:
    tests/ops/test_start_imports.py)."""

    def __init__(self, version: str, directory: str, call_suffix: str, draft: int) -> None:
        self.version = version
        self.directory = directory
        self.call_suffix = call_suffix  # "<Action>.json" (1.6) or "<Action>Request.json"
        self.draft = draft
        # The actions are those with a CALL schema.
        self.actions = frozenset(
            name.removesuffix(call_suffix)
            for name in os.listdir(directory)
            if name.endswith(call_suffix) and not name.endswith("Response.json")
        )
        self.validators: dict[tuple[int, str], Compiled] = {}

    def load(self, message_type: int, action: str) -> dict[str, Any]:
        """The official schema of a CALL (2) or CALLRESULT (3) of ``action``."""
        if action not in self.actions or message_type not in (_CALL, _CALLRESULT):
            raise ValueError(f"no OCPP {self.version} schema for {message_type}/{action!r}")
        suffix = "Response.json" if message_type == _CALLRESULT else self.call_suffix
        # utf-8-sig like the ocpp library: some official schema files start with a BOM.
        with open(os.path.join(self.directory, action + suffix), encoding="utf-8-sig") as f:
            schema: dict[str, Any] = json.load(f)
        return schema

    def compiled(self, message_type: int, action: str) -> Compiled:
        """The compiled checks of ``action`` (cached)."""
        key = (message_type, action)
        found = self.validators.get(key)
        if found is None:
            schema = inline_refs(self.load(message_type, action))
            found = self.validators[key] = Compiled(schema, self.draft)
        return found

    def validator(self, message_type: int, action: str) -> Any:
        """The jsonschema validator of ``action`` (cached)."""
        return self.compiled(message_type, action).full

    def first_error(self, message_type: int, action: str, payload: Any) -> SchemaError | None:
        """The schema violation ``validate`` would raise for ``payload``, or None."""
        return self.compiled(message_type, action).first_error(payload)


def describe(err: SchemaError) -> str:
    """Where and what, for a CALLERROR description (bounded)."""
    where = "/".join(str(p) for p in err.absolute_path) or "payload"
    return f"{where}: {err.message}"[:200]
