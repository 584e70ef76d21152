"""Checks a value text against a variable's characteristics and gives its canonical text.

Numbers stay text end to end (decimal.Decimal for the range check), so "0.1" is stored and
reported as "0.1", never as a binary float."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation

from controller.ocpp201.dm.types import Characteristics

# OCPP integers are 32-bit (Part 2, 2.1.4 primitive datatypes).
INT_MIN = -(2**31)
INT_MAX = 2**31 - 1
_INTEGER = re.compile(r"[+-]?[0-9]{1,10}")
# Plain decimal notation only: no exponent, NaN or Infinity, at most 28 significant digits.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]{1,20}(?:\.[0-9]{0,12})?|\.[0-9]{1,12})")
# RFC 3339 date-time (what the OCPP dateTime is): a full date, time and UTC offset.
_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


class InvalidValue(ValueError):
    """The value does not fit the variable: SetVariables answers Rejected (B05.FR.07/08) with
    ``reason_code`` (Appendix 5) in attributeStatusInfo."""

    def __init__(self, reason_code: str, info: str) -> None:
        super().__init__(info)
        self.reason_code = reason_code
        self.info = info


def _range(number: Decimal, chars: Characteristics) -> None:
    if chars.min_limit is not None and number < chars.min_limit:
        raise InvalidValue("ValueTooLow", f"below the minimum {chars.min_limit}")
    if chars.max_limit is not None and number > chars.max_limit:
        raise InvalidValue("ValueTooHigh", f"above the maximum {chars.max_limit}")


def _length(text: str, chars: Characteristics) -> None:
    # For strings and lists, maxLimit is the length of the (CSV) text.
    if chars.max_limit is not None and len(text) > chars.max_limit:
        raise InvalidValue("TooLargeElement", f"longer than {chars.max_limit} characters")


def _items(text: str) -> list[str]:
    return [] if text.strip() == "" else [item.strip() for item in text.split(",")]


def normalise(chars: Characteristics, text: str) -> str:
    """The canonical text of ``text`` for a variable with ``chars``; raise InvalidValue."""
    if not isinstance(text, str):
        raise InvalidValue("InvalidValue", "not a string")
    kind = chars.data_type
    if kind == "integer":
        stripped = text.strip()
        if not _INTEGER.fullmatch(stripped):
            raise InvalidValue("InvalidValue", "expected an integer")
        whole = int(stripped)
        if not INT_MIN <= whole <= INT_MAX:
            raise InvalidValue("ValueOutOfRange", "outside the 32-bit integer range")
        _range(Decimal(whole), chars)
        return str(whole)
    if kind == "decimal":
        stripped = text.strip()
        if not _DECIMAL.fullmatch(stripped):
            raise InvalidValue("InvalidValue", "expected a decimal number")
        try:
            number = Decimal(stripped)
        except InvalidOperation as exc:  # the pattern admits only valid literals; kept safe
            raise InvalidValue("InvalidValue", "expected a decimal number") from exc
        _range(number, chars)
        canonical = str(number.copy_abs() if number.is_zero() else number)
        return canonical.lstrip("+")
    if kind == "boolean":
        low = text.strip().lower()
        if low not in ("true", "false"):
            raise InvalidValue("InvalidValue", "expected true or false")
        return low
    if kind == "dateTime":
        stripped = text.strip()
        if not _DATETIME.fullmatch(stripped):
            raise InvalidValue("InvalidValue", "expected an RFC 3339 date and time")
        try:
            moment = datetime.fromisoformat(stripped.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError as exc:
            raise InvalidValue("InvalidValue", "expected an RFC 3339 date and time") from exc
        if moment.tzinfo is None:  # the pattern requires an offset; kept as a safety net
            raise InvalidValue("InvalidValue", "expected a date and time with its UTC offset")
        return stripped
    if kind == "OptionList":
        option = text.strip()
        if chars.values_list and option not in chars.values_list:
            raise InvalidValue("InvalidValue", f"{option!r} is not one of {chars.values_list}")
        _length(option, chars)
        return option
    if kind in ("MemberList", "SequenceList"):
        items = _items(text)
        if any(item == "" for item in items):
            raise InvalidValue("InvalidValue", "an empty list item")
        if len(set(items)) != len(items):
            raise InvalidValue("InvalidValue", "a list item appears twice")
        unknown = [item for item in items if chars.values_list and item not in chars.values_list]
        if unknown:
            raise InvalidValue("InvalidValue", f"not supported: {','.join(unknown)}"[:512])
        canonical = ",".join(items)
        _length(canonical, chars)
        return canonical
    # string
    _length(text, chars)
    return text
