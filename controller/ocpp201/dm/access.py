"""GetVariables (B06) and SetVariables (B05) over a DeviceModel, on OCPP-J payload dicts.

The client routes a schema-valid request here:

- ``limit_error(model, "GetVariables", len(items), size_bytes)`` first: a (CALLERROR code,
  description) when the request is larger than ItemsPerMessage / BytesPerMessage allow
  (B06.FR.16/17; B05.FR.11 for SetVariables), else None;
- ``get_variables(model, payload["getVariableData"])`` -> the ``getVariableResult`` list;
- ``set_variables(model, payload["setVariableData"])`` -> the ``setVariableResult`` list.

SetVariables checks every item against the model as it is before the request (type, range,
valuesList, mutability, guard), then stores the accepted values of the whole request in one
commit and only then tells the listeners: a crash leaves all of them or none. Items that
name the same component, variable and attributeType twice (forbidden by B05.FR.13) are all
Rejected: which of them would win is not defined."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from controller.core.records import StoreError
from controller.ocpp201.dm.model import DeviceModel
from controller.ocpp201.dm.types import ComponentKey, VariableDef, VariableKey, status_info
from controller.ocpp201.dm.values import InvalidValue, normalise

LOG = logging.getLogger(__name__)

# GetVariableResult.attributeValue and VariableAttribute.value: at most 2500 characters.
REPORTING_VALUE_SIZE = 2500


def _echo(part: Mapping[str, Any]) -> dict[str, Any]:
    # B05.FR.02 / B06.FR.02: the result names the component and variable as the request did.
    return {k: v for k, v in part.items() if k != "customData"}


def limit_error(
    model: DeviceModel, action: str, item_count: int, size_bytes: int
) -> tuple[str, str] | None:
    """The CALLERROR for a GetVariables / SetVariables / GetReport request beyond the
    DeviceDataCtrlr ItemsPerMessage / BytesPerMessage of ``action``: OccurrenceConstraintViolation
    for too many items (B06.FR.16, B08.FR.17), FormatViolation for too many bytes (B06.FR.17,
    B08.FR.18); None when it fits."""
    items = size = None
    if model.find("DeviceDataCtrlr", VariableKey("ItemsPerMessage", action)) is not None:
        items = model.get("DeviceDataCtrlr", VariableKey("ItemsPerMessage", action))
    if model.find("DeviceDataCtrlr", VariableKey("BytesPerMessage", action)) is not None:
        size = model.get("DeviceDataCtrlr", VariableKey("BytesPerMessage", action))
    if items is not None and item_count > int(items):
        return ("OccurrenceConstraintViolation", f"at most {items} items per {action}")
    if size is not None and size_bytes > int(size):
        return ("FormatViolation", f"at most {size} bytes per {action}")
    return None


def _lookup(
    model: DeviceModel, item: Mapping[str, Any]
) -> tuple[VariableDef | None, str | None, str]:
    """(definition, failing status, attribute type) of a request item."""
    attribute_type = str(item.get("attributeType") or "Actual")
    component = ComponentKey.from_wire(item["component"])
    if not model.has_component(component):
        return None, "UnknownComponent", attribute_type
    definition = model.find(component, VariableKey.from_wire(item["variable"]))
    if definition is None:
        return None, "UnknownVariable", attribute_type
    if definition.attribute(attribute_type) is None:
        return None, "NotSupportedAttributeType", attribute_type
    return definition, None, attribute_type


def get_variables(model: DeviceModel, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One GetVariableResult per GetVariableData, in order (B06.FR.01-04, 06-11, 13-15)."""
    results = []
    for item in items:
        definition, failed, attribute_type = _lookup(model, item)
        result: dict[str, Any] = {
            "attributeStatus": failed or "Accepted",
            "attributeType": attribute_type,
            "component": _echo(item["component"]),
            "variable": _echo(item["variable"]),
        }
        if definition is not None:
            attribute = definition.attribute(attribute_type)
            assert attribute is not None
            if attribute.mutability == "WriteOnly":
                result["attributeStatus"] = "Rejected"
                result["attributeStatusInfo"] = status_info("WriteOnly")
            else:
                try:
                    value = model.read(definition, attribute)
                except Exception as exc:  # a live value's source failed: no crash, Rejected
                    LOG.warning("reading %s failed: %s", definition.variable.text(), exc)
                    result["attributeStatus"] = "Rejected"
                    result["attributeStatusInfo"] = status_info("InternalError")
                else:
                    if value is not None and len(value) > REPORTING_VALUE_SIZE:
                        result["attributeStatus"] = "Rejected"
                        result["attributeStatusInfo"] = status_info("TooLargeElement")
                    else:
                        result["attributeValue"] = "" if value is None else value
        results.append(result)
    return results


def set_variables(model: DeviceModel, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One SetVariableResult per SetVariableData, in order (B05.FR.01-10, 12, 13)."""
    addresses = [
        (
            ComponentKey.from_wire(item["component"]),
            VariableKey.from_wire(item["variable"]),
            str(item.get("attributeType") or "Actual"),
        )
        for item in items
    ]
    repeated = {a for a, n in Counter(addresses).items() if n > 1}
    results: list[dict[str, Any]] = []
    pending: list[tuple[int, VariableDef, str, str]] = []
    for index, item in enumerate(items):
        definition, failed, attribute_type = _lookup(model, item)
        result: dict[str, Any] = {
            "attributeStatus": failed or "Accepted",
            "attributeType": attribute_type,
            "component": _echo(item["component"]),
            "variable": _echo(item["variable"]),
        }
        results.append(result)
        if definition is None:
            continue
        attribute = definition.attribute(attribute_type)
        assert attribute is not None
        if addresses[index] in repeated:
            result["attributeStatus"] = "Rejected"
            result["attributeStatusInfo"] = status_info(
                "InvalidValue", "the same component, variable and attributeType twice"
            )
            continue
        if attribute.mutability == "ReadOnly":
            result["attributeStatus"] = "Rejected"
            result["attributeStatusInfo"] = status_info("ReadOnly")
            continue
        try:
            canonical = normalise(definition.characteristics, str(item["attributeValue"]))
        except InvalidValue as exc:
            result["attributeStatus"] = "Rejected"
            result["attributeStatusInfo"] = status_info(exc.reason_code, exc.info)
            continue
        old = model.read(definition, attribute)
        reason = model.guard_reason(definition, old, canonical)
        if reason is not None:
            LOG.info("SetVariables %s rejected: %s", definition.variable.text(), reason)
            result["attributeStatus"] = "Rejected"
            result["attributeStatusInfo"] = status_info("InvalidValue", reason)
            continue
        if definition.reboot_required:
            result["attributeStatus"] = "RebootRequired"
        pending.append((index, definition, attribute_type, canonical))
    if pending:
        try:
            model.write((d, t, v) for _, d, t, v in pending)
        except StoreError as exc:
            # B05.FR.09: not able to set it (technical problem): nothing of it applied.
            LOG.error("SetVariables could not be stored: %s", exc)
            for index, *_ in pending:
                results[index]["attributeStatus"] = "Rejected"
                results[index]["attributeStatusInfo"] = status_info("InternalError")
    return results
