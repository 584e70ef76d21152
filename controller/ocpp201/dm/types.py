"""The device model's vocabulary as data: addresses, attributes, characteristics.

Each has its OCPP-J (camelCase dict) form."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

Mutability = Literal["ReadOnly", "WriteOnly", "ReadWrite"]
DataType = Literal[
    "string",
    "decimal",
    "integer",
    "dateTime",
    "boolean",
    "OptionList",
    "SequenceList",
    "MemberList",
]
AttributeType = Literal["Actual", "Target", "MinSet", "MaxSet"]
ATTRIBUTE_TYPES: tuple[AttributeType, ...] = ("Actual", "Target", "MinSet", "MaxSet")
LIST_TYPES = frozenset({"OptionList", "SequenceList", "MemberList"})

# A live value: read when asked (a meter reading, a connector's availability). None: no value
# now (reported as "" by GetVariables, B06.FR.13, and without a value in reports).
Provider = Callable[[], "str | None"]


@dataclass(frozen=True)
class ComponentKey:
    """A component as OCPP addresses it: name, optional instance, and its tier (evse id, and
    connector id within that EVSE). Addressing is exact: EVSE 1 is ``evse_id=1`` with no
    connector, its connector 1 is ``evse_id=1, connector_id=1`` (Part 1, 4.2)."""

    name: str
    instance: str | None = None
    evse_id: int | None = None
    connector_id: int | None = None

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.instance is not None:
            out["instance"] = self.instance
        if self.evse_id is not None:
            evse: dict[str, Any] = {"id": self.evse_id}
            if self.connector_id is not None:
                evse["connectorId"] = self.connector_id
            out["evse"] = evse
        return out

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ComponentKey:
        """From a schema-valid ComponentType; an empty instance counts as none (B06.FR.15)."""
        evse = data.get("evse") or {}
        return cls(
            str(data["name"]),
            data.get("instance") or None,
            evse.get("id"),
            evse.get("connectorId"),
        )

    def text(self) -> str:
        """How storage keys and logs name it: ``EVSE@1``, ``Connector@1.2``, ``X[inst]``."""
        out = self.name
        if self.instance is not None:
            out += f"[{self.instance}]"
        if self.evse_id is not None:
            out += f"@{self.evse_id}"
            if self.connector_id is not None:
                out += f".{self.connector_id}"
        return out


@dataclass(frozen=True)
class VariableKey:
    """A variable of a component: name and optional instance (``ItemsPerMessage[GetReport]``)."""

    name: str
    instance: str | None = None

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.instance is not None:
            out["instance"] = self.instance
        return out

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> VariableKey:
        return cls(str(data["name"]), data.get("instance") or None)

    def text(self) -> str:
        return self.name if self.instance is None else f"{self.name}[{self.instance}]"


@dataclass(frozen=True)
class Characteristics:
    """VariableCharacteristicsType. ``min_limit``/``max_limit``: the range of a number, the
    maximum length of a string or list value (Part 2 2.7.4: "the maximum length of the CSV
    formatted string"). ``values_list``: the allowed values of a list type (and, for a
    string, of nothing: strings are free text)."""

    data_type: DataType
    unit: str | None = None
    min_limit: Decimal | None = None
    max_limit: Decimal | None = None
    values_list: tuple[str, ...] = ()
    supports_monitoring: bool = False

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dataType": self.data_type}
        if self.unit is not None:
            out["unit"] = self.unit
        if self.min_limit is not None:
            out["minLimit"] = json_number(self.min_limit)
        if self.max_limit is not None:
            out["maxLimit"] = json_number(self.max_limit)
        if self.values_list:
            out["valuesList"] = ",".join(self.values_list)
        out["supportsMonitoring"] = self.supports_monitoring
        return out


def json_number(value: Decimal) -> int | float:
    """A limit as a JSON number: an int when whole (no ".0" noise), else the float whose
    shortest repr is the decimal's text (limits are few digits, so this is exact on the wire)."""
    if value == value.to_integral_value():
        return int(value)
    return float(value)


@dataclass(frozen=True)
class AttributeDef:
    """One VariableAttributeType of a variable. Its value comes from ``provider`` (live, read
    only), or from the durable store (``persistent``) or memory, falling back to ``default``.
    ``constant``: the value never changes (a rating, a list of supported protocols)."""

    type: AttributeType = "Actual"
    mutability: Mutability = "ReadWrite"
    persistent: bool = True
    constant: bool = False
    default: str | None = None
    provider: Provider | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.provider is not None and self.mutability != "ReadOnly":
            raise ValueError("a live (provider) attribute is ReadOnly")


@dataclass(frozen=True)
class VariableDef:
    """A component-variable with its attributes (at most one per type) and characteristics.
    ``reboot_required``: a write takes effect after a reboot (SetVariables answers
    RebootRequired, B05)."""

    component: ComponentKey
    variable: VariableKey
    characteristics: Characteristics
    attributes: tuple[AttributeDef, ...] = (AttributeDef(),)
    reboot_required: bool = False

    def __post_init__(self) -> None:
        types = [a.type for a in self.attributes]
        if not types or len(set(types)) != len(types):
            raise ValueError(f"{self.component.text()}/{self.variable.text()}: attribute types")

    def attribute(self, attribute_type: str) -> AttributeDef | None:
        for attribute in self.attributes:
            if attribute.type == attribute_type:
                return attribute
        return None

    @property
    def settable(self) -> bool:
        """Some attribute can be written by the CSMS (ConfigurationInventory, B07.FR.07)."""
        return any(a.mutability != "ReadOnly" for a in self.attributes)


def status_info(reason_code: str, additional_info: str | None = None) -> dict[str, Any]:
    """StatusInfoType: a reason code of Appendix 5 and an optional text (at most 512)."""
    out: dict[str, Any] = {"reasonCode": reason_code}
    if additional_info:
        out["additionalInfo"] = additional_info[:512]
    return out
