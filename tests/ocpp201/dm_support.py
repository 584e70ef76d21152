"""Shared by the device model tests: a station description, live values to steer, and the
official 2.0.1 JSON schemas the ``ocpp`` library ships."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from controller.ocpp201.dm import (
    DeviceModel,
    EvseDescription,
    LiveValues,
    StationDescription,
    build_station_model,
)
from controller.storage.store import Store

SPEC = Path("/work/shared/ocpp-spec/2.0.1")
CSV = SPEC / "appendices-csv" / "dm_components_vars.csv"


def description(evses: int = 2) -> StationDescription:
    return StationDescription(
        evses=tuple(
            EvseDescription(evse_id=n, max_current_a=Decimal(16), phases=3)
            for n in range(1, evses + 1)
        ),
        has_reader=True,
    )


@dataclass
class Live:
    """Live values a test sets; ``values()`` wires them in as LiveValues."""

    states: dict[tuple[int | None, int | None], str] = field(default_factory=dict)
    power_w: dict[int, Decimal] = field(default_factory=dict)
    energy_wh: dict[int, Decimal] = field(default_factory=dict)
    closed: dict[int, bool] = field(default_factory=dict)
    problems: set[int | None] = field(default_factory=set)
    certificates: int = 2
    broken: bool = False

    def _power(self, evse: int) -> Decimal | None:
        if self.broken:
            raise OSError("meter does not answer")
        return self.power_w.get(evse)

    def values(self) -> LiveValues:
        return LiveValues(
            availability=lambda e, c: self.states.get((e, c), "Available"),
            power_w=self._power,
            energy_wh=lambda e: self.energy_wh.get(e),
            contactor_closed=lambda e: self.closed.get(e, False),
            problem=lambda e: e in self.problems,
            utc_now=lambda: "2026-01-01T12:00:00Z",
            certificate_entries=lambda: self.certificates,
            local_list_entries=lambda: 0,
            charging_profile_entries=lambda: 0,
        )


def station_model(store: Store, live: Live | None = None, evses: int = 2) -> DeviceModel:
    return build_station_model(store, description(evses), (live or Live()).values())


@cache
def schema(name: str) -> dict[str, Any]:
    text = (resources.files("ocpp") / "v201" / "schemas" / f"{name}.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def validate(name: str, payload: dict[str, Any]) -> None:
    """Raise if ``payload`` is not a valid ``name`` (e.g. GetVariablesResponse) message; it is
    also JSON-encoded as the wire would (no Decimal or other non-JSON values slip through)."""
    wire = json.loads(json.dumps(payload))
    checker = jsonschema.validators.validator_for(schema(name))
    checker(schema(name)).validate(wire)


def item(
    component: str,
    variable: str,
    *,
    value: str | None = None,
    evse: int | None = None,
    connector: int | None = None,
    component_instance: str | None = None,
    variable_instance: str | None = None,
    attribute_type: str | None = None,
) -> dict[str, Any]:
    """A GetVariableData (or, with ``value``, SetVariableData) item."""
    c: dict[str, Any] = {"name": component}
    if component_instance is not None:
        c["instance"] = component_instance
    if evse is not None:
        c["evse"] = {"id": evse} if connector is None else {"id": evse, "connectorId": connector}
    v: dict[str, Any] = {"name": variable}
    if variable_instance is not None:
        v["instance"] = variable_instance
    out: dict[str, Any] = {"component": c, "variable": v}
    if attribute_type is not None:
        out["attributeType"] = attribute_type
    if value is not None:
        out["attributeValue"] = value
    return out
