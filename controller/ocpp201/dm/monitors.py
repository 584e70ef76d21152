"""Variable monitors (Part 1 4.4, Part 2 N02-N08): what may be monitored and the stored set.

A monitor is kept in the Store settings as ``mon.<id>`` (one JSON row each), so custom and
changed preconfigured monitors survive restarts (N04 remark, N07.FR.13); the threshold state
(``tripped``) is kept with it, so a value back in range after a reboot is still reported as
cleared (N07.FR.14)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol

from controller.ocpp201.dm.types import ComponentKey, VariableDef, VariableKey, json_number

LOG = logging.getLogger(__name__)

PREFIX = "mon."
MonitorType = Literal[
    "UpperThreshold", "LowerThreshold", "Delta", "Periodic", "PeriodicClockAligned"
]
Kind = Literal["HardWiredMonitor", "PreconfiguredMonitor", "CustomMonitor"]
THRESHOLDS = frozenset({"UpperThreshold", "LowerThreshold"})
PERIODIC = frozenset({"Periodic", "PeriodicClockAligned"})
NUMERIC = frozenset({"integer", "decimal"})
# Part 1 4.4 table: which monitor types fit which dataType.
_SUPPORTED: dict[str, frozenset[str]] = {
    "integer": frozenset({"UpperThreshold", "LowerThreshold", "Delta", *PERIODIC}),
    "decimal": frozenset({"UpperThreshold", "LowerThreshold", "Delta", *PERIODIC}),
    "dateTime": frozenset({"Delta"}),
}
_NON_NUMERIC = frozenset({"Delta", *PERIODIC})
# GetMonitoringReport monitoringCriteria -> the types it selects (N02.FR.12-14).
CRITERIA: dict[str, frozenset[str]] = {
    "ThresholdMonitoring": THRESHOLDS,
    "DeltaMonitoring": frozenset({"Delta"}),
    "PeriodicMonitoring": PERIODIC,
}
# Ids: hard-wired and preconfigured monitors have fixed ids below this; custom ones above.
FIRST_CUSTOM_ID = 1000
# A periodic interval below this is Rejected (ValueTooLow): every event is a durable write,
# so a CSMS must not make the station write its flash every second.
MIN_PERIOD_S = Decimal(10)
# At most this many monitors are installed (more are Rejected, TooManyElements): each is
# a settings row and is evaluated on every change of its variable.
MAX_MONITORS = 200


class MonitorSettings(Protocol):
    """What the monitor store needs of controller.storage.store.Store."""

    def settings_with_prefix(self, prefix: str) -> dict[str, str]: ...

    def set_setting(self, key: str, value: str) -> None: ...

    def delete_setting(self, key: str) -> None: ...


@dataclass(frozen=True)
class Monitor:
    """One VariableMonitoring of a component-variable (SetMonitoringDataType)."""

    id: int
    component: ComponentKey
    variable: VariableKey
    type: MonitorType
    value: Decimal
    severity: int
    transaction: bool = False
    kind: Kind = "CustomMonitor"
    tripped: bool = False  # a threshold monitor whose value is out of range (not cleared)

    def wire(self) -> dict[str, Any]:
        """VariableMonitoringType."""
        return {
            "id": self.id,
            "transaction": self.transaction,
            "value": json_number(self.value),
            "type": self.type,
            "severity": self.severity,
        }

    def to_json(self) -> str:
        data = asdict(self)
        data["value"] = str(self.value)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Monitor:
        data = json.loads(text)
        return cls(
            id=int(data["id"]),
            component=ComponentKey(**data["component"]),
            variable=VariableKey(**data["variable"]),
            type=data["type"],
            value=Decimal(data["value"]),
            severity=int(data["severity"]),
            transaction=bool(data["transaction"]),
            kind=data["kind"],
            tripped=bool(data.get("tripped", False)),
        )


def supports(definition: VariableDef, monitor_type: str) -> bool:
    """Part 1 4.4: thresholds on numbers only, Delta on anything, periodic on all but dateTime;
    only on variables that declare supportsMonitoring and have an Actual attribute."""
    if not definition.characteristics.supports_monitoring:
        return False
    if definition.attribute("Actual") is None:
        return False
    allowed = _SUPPORTED.get(definition.characteristics.data_type, _NON_NUMERIC)
    return monitor_type in allowed


def value_problem(definition: VariableDef, monitor_type: str, value: Decimal) -> str | None:
    """Why ``value`` does not fit (a reason code of Appendix 5), or None: a threshold outside
    the variable's range (N04.FR.06), a negative Delta (N04.FR.14), a periodic interval below
    a second."""
    if not value.is_finite():
        return "ValueOutOfRange"
    if monitor_type in THRESHOLDS:
        low, high = definition.characteristics.min_limit, definition.characteristics.max_limit
        if (low is not None and value < low) or (high is not None and value > high):
            return "ValueOutOfRange"
    elif monitor_type == "Delta":
        if value < 0:
            return "ValuePositiveOnly"
    elif value < MIN_PERIOD_S:
        return "ValueTooLow"
    return None


def still_valid(monitor: Monitor, definition: VariableDef | None) -> bool:
    """A stored monitor whose variable is gone or no longer takes its type after an update
    is removed (N04 remark)."""
    return definition is not None and supports(definition, monitor.type)


def number(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        out = Decimal(text)
    except InvalidOperation:
        return None
    return out if out.is_finite() else None


class MonitorStore:
    """The installed monitors by id, written through to the settings."""

    def __init__(self, settings: MonitorSettings) -> None:
        self._settings = settings
        self._monitors: dict[int, Monitor] = {}
        for key, text in settings.settings_with_prefix(PREFIX).items():
            try:
                monitor = Monitor.from_json(text)
            except (ValueError, KeyError, TypeError, InvalidOperation):
                LOG.warning("ignoring the stored monitor %s", key)
                continue
            self._monitors[monitor.id] = monitor

    def __len__(self) -> int:
        return len(self._monitors)

    def all(self) -> list[Monitor]:
        return sorted(self._monitors.values(), key=lambda m: m.id)

    def get(self, monitor_id: int) -> Monitor | None:
        return self._monitors.get(monitor_id)

    def on(self, component: ComponentKey, variable: VariableKey) -> list[Monitor]:
        return [m for m in self.all() if m.component == component and m.variable == variable]

    def put(self, monitor: Monitor) -> None:
        self._settings.set_setting(f"{PREFIX}{monitor.id}", monitor.to_json())
        self._monitors[monitor.id] = monitor

    def remove(self, monitor_id: int) -> None:
        self._settings.delete_setting(f"{PREFIX}{monitor_id}")
        self._monitors.pop(monitor_id, None)

    def set_tripped(self, monitor: Monitor, tripped: bool) -> Monitor:
        changed = replace(monitor, tripped=tripped)
        if monitor.id in self._monitors:
            self.put(changed)
        return changed

    def next_custom_id(self) -> int:
        ids = [m.id for m in self._monitors.values() if m.id >= FIRST_CUSTOM_ID]
        return max(ids, default=FIRST_CUSTOM_ID - 1) + 1

    def replace_all(self, keep: Iterable[Monitor]) -> None:
        """Only ``keep`` stays installed (SetMonitoringBase)."""
        wanted = {m.id: m for m in keep}
        for monitor_id in list(self._monitors):
            if monitor_id not in wanted:
                self.remove(monitor_id)
        for monitor in wanted.values():
            if self._monitors.get(monitor.id) != monitor:
                self.put(monitor)
