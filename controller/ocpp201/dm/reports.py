"""GetBaseReport (B07) and GetReport (B08): the ReportData, the status, the NotifyReport pages.

The client answers the request with ``Report.status`` (Rejected is the client's own answer
while it is still sending an earlier report: B07.FR.13, B08.FR.16), then, when Accepted,
sends ``notify_report_pages(request_id, report.data, generated_at, items_per_page)`` in order.
Values are read when the report is made, so the pages are one consistent snapshot; the value
of a WriteOnly attribute is never reported (errata B07.FR.03 / B08.FR.03); an unset attribute
is reported without a value (B07.FR.11)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller.ocpp201.dm.access import REPORTING_VALUE_SIZE
from controller.ocpp201.dm.model import DeviceModel
from controller.ocpp201.dm.types import ComponentKey, VariableDef

LOG = logging.getLogger(__name__)

REPORT_BASES = ("ConfigurationInventory", "FullInventory", "SummaryInventory")
CRITERIA = ("Active", "Available", "Enabled", "Problem")
# B07.FR.09: the Active-like variables that mark an abnormal component for SummaryInventory.
_ABNORMAL = ("Problem", "Tripped", "Overload", "Fallback")
_TIERS = ("ChargingStation", "EVSE", "Connector")


@dataclass(frozen=True)
class Report:
    """The answer's status and, when Accepted, the ReportData entries in model order."""

    status: str
    data: tuple[dict[str, Any], ...] = ()


def report_data(model: DeviceModel, definition: VariableDef) -> dict[str, Any]:
    """One ReportDataType: every supported attribute with its mutability (B07.FR.11) and the
    characteristics (B08.FR.12)."""
    attributes = []
    for attribute in definition.attributes:
        entry: dict[str, Any] = {
            "type": attribute.type,
            "mutability": attribute.mutability,
            "persistent": attribute.persistent,
            "constant": attribute.constant,
        }
        if attribute.mutability != "WriteOnly":
            try:
                value = model.read(definition, attribute)
            except Exception as exc:  # a live source failed: report the variable, no value
                LOG.warning("reading %s failed: %s", definition.variable.text(), exc)
                value = None
            if value is not None and len(value) <= REPORTING_VALUE_SIZE:
                entry["value"] = value
        attributes.append(entry)
    return {
        "component": definition.component.wire(),
        "variable": definition.variable.wire(),
        "variableAttribute": attributes,
        "variableCharacteristics": definition.characteristics.wire(),
    }


def _truthy(model: DeviceModel, definition: VariableDef) -> bool:
    attribute = definition.attribute("Actual")
    if attribute is None or attribute.mutability == "WriteOnly":
        return False
    try:
        return model.read(definition, attribute) == "true"
    except Exception:
        return False


def base_report(model: DeviceModel, report_base: str) -> Report:
    """B07: ConfigurationInventory (what the CSMS can set, B07.FR.07), FullInventory
    (everything, B07.FR.08), SummaryInventory (availability and problems, B07.FR.09)."""
    definitions = model.variables()
    if report_base == "FullInventory":
        chosen = definitions
    elif report_base == "ConfigurationInventory":
        chosen = [d for d in definitions if d.settable]
    elif report_base == "SummaryInventory":
        abnormal = {
            d.component for d in definitions if d.variable.name in _ABNORMAL and _truthy(model, d)
        }
        chosen = [
            d
            for d in definitions
            if (d.variable.name == "AvailabilityState" and d.component.name in _TIERS)
            or (d.component in abnormal and d.variable.name in _ABNORMAL)
        ]
    else:
        return Report("NotSupported")  # B07.FR.02
    return Report("Accepted", tuple(report_data(model, d) for d in chosen))


def _matches(definition: VariableDef, wanted: Mapping[str, Any]) -> bool:
    """B08.FR.20-25: a filter's absent variable, instance, evse or connectorId is a wildcard."""
    component: ComponentKey = definition.component
    want_c = wanted["component"]
    if component.name != want_c["name"]:
        return False
    if want_c.get("instance") and component.instance != want_c["instance"]:
        return False
    evse = want_c.get("evse")
    if evse is not None:
        if component.evse_id != evse["id"]:
            return False
        if "connectorId" in evse and component.connector_id != evse["connectorId"]:
            return False
    variable = wanted.get("variable")
    if variable is not None:
        if definition.variable.name != variable["name"]:
            return False
        if variable.get("instance") and definition.variable.instance != variable["instance"]:
            return False
    return True


def custom_report(
    model: DeviceModel,
    component_variables: Sequence[Mapping[str, Any]] | None = None,
    component_criteria: Sequence[str] | None = None,
    supported_criteria: Sequence[str] = CRITERIA,
) -> Report:
    """B08: the variables that match any of ``component_variables`` (all when absent) of the
    components that meet any of ``component_criteria`` (B08.FR.13; all when absent).
    Active / Available / Enabled: the variable is true or the component has none
    (B08.FR.07-09); Problem: the variable is true (B08.FR.10). EmptyResultSet when nothing
    matches (B08.FR.15); NotSupported for a criterion not in ``supported_criteria``."""
    criteria = list(component_criteria or ())
    if any(c not in supported_criteria for c in criteria):
        return Report("NotSupported")  # B08.FR.02
    definitions = model.variables()
    if criteria:
        # The criterion variables of each component (Active, Available, ... have no instance).
        flags: dict[ComponentKey, dict[str, VariableDef]] = {d.component: {} for d in definitions}
        for d in definitions:
            if d.variable.instance is None and d.variable.name in CRITERIA:
                flags[d.component][d.variable.name] = d
        met = set()
        for component, named in flags.items():
            for criterion in criteria:
                flag = named.get(criterion)
                if flag is None:
                    meets = criterion != "Problem"  # no such variable: in, except for Problem
                else:
                    meets = _truthy(model, flag)
                if meets:
                    met.add(component)
                    break
        definitions = [d for d in definitions if d.component in met]
    if component_variables:
        definitions = [d for d in definitions if any(_matches(d, w) for w in component_variables)]
    if not definitions:
        return Report("EmptyResultSet")
    return Report("Accepted", tuple(report_data(model, d) for d in definitions))


def notify_report_pages(
    request_id: int,
    data: Sequence[dict[str, Any]],
    generated_at: str,
    items_per_page: int,
    max_bytes: int | None = None,
) -> list[dict[str, Any]]:
    """The NotifyReportRequest payloads of one report: seqNo from 0 (B07.FR.10, B08.FR.14),
    the same requestId (B07.FR.04, B08.FR.04), tbc true on all but the last, at most
    ``items_per_page`` entries and (when given) ``max_bytes`` of JSON per page (a single entry
    larger than that still goes, alone)."""
    if items_per_page < 1:
        raise ValueError("items_per_page must be at least 1")
    pages: list[list[dict[str, Any]]] = [[]]
    size = 0
    for entry in data:
        entry_bytes = len(json.dumps(entry, separators=(",", ":"))) + 1
        page = pages[-1]
        full = len(page) >= items_per_page or (
            max_bytes is not None and page and size + entry_bytes > max_bytes
        )
        if full:
            pages.append([])
            size = 0
        pages[-1].append(entry)
        size += entry_bytes
    out = []
    for seq_no, page in enumerate(pages):
        payload: dict[str, Any] = {
            "requestId": request_id,
            "generatedAt": generated_at,
            "seqNo": seq_no,
            "tbc": seq_no < len(pages) - 1,
        }
        if page:
            payload["reportData"] = page
        out.append(payload)
    return out
