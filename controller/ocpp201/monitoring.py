"""OCPP 2.0.1 monitoring (N02-N08): variable monitors set by the CSMS, the monitoring base and
level, monitoring reports, and NotifyEvent when a monitor triggers or a fault occurs."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from controller.core.timestamps import iso_utc
from controller.csms.rpc import CallError, CallTimeout, ConnectionLost
from controller.ocpp201 import status as status201
from controller.ocpp201.dm import ComponentKey, DeviceModel, VariableKey
from controller.ocpp201.dm.monitors import (
    CRITERIA,
    MAX_MONITORS,
    NUMERIC,
    PERIODIC,
    THRESHOLDS,
    Monitor,
    MonitorStore,
    number,
    still_valid,
    supports,
    value_problem,
)
from controller.ocpp201.dm.types import VariableDef, status_info
from controller.runtime.clock import sleep_or_event
from controller.storage.writes import EventKind, Outgoing
from hal.base import FaultKind

if TYPE_CHECKING:
    import asyncio

    from controller.ocpp201.client import Ocpp201Client

LOG = logging.getLogger(__name__)

CTRLR = "MonitoringCtrlr"
# Live values that change without a station event (power, energy) are sampled at this rate,
# and only while a monitor needs them (issue 16: an idle station stays asleep).
LIVE_POLL_S = 5.0
# Values read from the station that change with its events (availability, problems, the
# contactor): evaluated when the station reports a status change, never polled.
EVENT_DRIVEN = frozenset({"AvailabilityState", "Available", "Problem", "Active"})
EVENT_ID_KEY = "monitoring.event_id"
PRECONFIGURED_KEY = "monitoring.preconfigured"
# Preconfigured monitors: EVSE n AvailabilityState, Delta, 8-Informational, id 100 + n.
PRECONFIGURED_SEVERITY = 8
PRECONFIGURED_FIRST_ID = 100
ACTUAL_VALUE_CHARS = 2500
# A fault's severity (Part 2 SetMonitoringLevelRequest): 0 where people may be in danger
# (exposed live parts, residual current, a welded contactor), 1 for hardware that stops
# charging, 2 software, 3/4 what degrades it, 6 a warning.
FAULT_SEVERITY: dict[FaultKind, int] = {
    FaultKind.TAMPER: 0,
    FaultKind.GROUND: 0,
    FaultKind.POWER_SWITCH: 0,
    FaultKind.OVER_CURRENT: 1,
    FaultKind.OVER_VOLTAGE: 1,
    FaultKind.HIGH_TEMPERATURE: 1,
    FaultKind.METER: 1,
    FaultKind.CONNECTOR_LOCK: 1,
    FaultKind.INTERNAL: 2,
    FaultKind.EV_COMMUNICATION: 3,
    FaultKind.READER: 4,
    FaultKind.UNDER_VOLTAGE: 4,
    FaultKind.OTHER: 4,
    FaultKind.WEAK_SIGNAL: 6,
}


@dataclass(frozen=True)
class Triggered:
    """What a monitor reports: trigger Alerting / Delta / Periodic, the value, cleared."""

    trigger: str
    actual: str
    cleared: bool = False


def evaluate(
    monitor: Monitor, value: str | None, numeric: bool, reference: str | None
) -> tuple[Triggered | None, bool, str | None]:
    """One threshold or delta monitor against the variable's Actual ``value``: (what to
    report or None, the monitor's new tripped state, the new delta reference).

    UpperThreshold triggers above its value, LowerThreshold below it, never on it
    (N07.FR.16/17); back within, cleared (N07.FR.02). A numeric Delta triggers when the value
    moved more than the monitor's value from the reference (N07.FR.18), any other Delta on
    every change (N07.FR.19); the reported value becomes the new reference (Part 1 4.4)."""
    if value is None:
        return None, monitor.tripped, reference
    if monitor.type in THRESHOLDS:
        v = number(value)
        if v is None:
            return None, monitor.tripped, reference
        out = v > monitor.value if monitor.type == "UpperThreshold" else v < monitor.value
        if out and not monitor.tripped:
            return Triggered("Alerting", value), True, reference
        if not out and monitor.tripped:
            return Triggered("Alerting", value, cleared=True), False, reference
        return None, monitor.tripped, reference
    if monitor.type == "Delta":
        if numeric:
            v, ref = number(value), number(reference)
            if v is None or ref is None:
                return None, False, value  # the first number is the reference
            if abs(v - ref) > monitor.value:
                return Triggered("Delta", value), False, value
            return None, False, reference
        if value != reference:  # also a first value of an unset one
            return Triggered("Delta", value), False, value
        return None, False, reference
    return None, monitor.tripped, reference


def next_aligned_s(now_epoch_s: float, interval_s: Decimal) -> float:
    """Seconds from ``now`` to the next multiple of ``interval_s`` after midnight UTC
    (N08.FR.07: 900 s fires at 0, 15, 30 and 45 minutes past each hour)."""
    step = float(interval_s)
    day_s = now_epoch_s % 86400
    following = (math.floor(day_s / step) + 1) * step
    if following >= 86400:
        following = 86400  # the next day starts a new alignment
    return following - day_s


class Monitoring:
    """The client's monitors: requests (ROUTES below) and their evaluation."""

    def __init__(self, client: Ocpp201Client, model: DeviceModel) -> None:
        self.client = client
        self.model = model
        self.store = MonitorStore(client.store)
        self._references: dict[int, str | None] = {}
        self._due_s: dict[int, float] = {}  # periodic monitor id -> monotonic deadline
        self._faults: dict[int, FaultKind | None] = {}
        self._wakeup: asyncio.Event | None = None
        self._poke_live = False
        if client.store.get_setting(PRECONFIGURED_KEY) is None:
            for monitor in self.preconfigured():
                if self.store.get(monitor.id) is None:
                    self.store.put(monitor)
            client.store.set_setting(PRECONFIGURED_KEY, "1")
        for monitor in self.store.all():
            if not still_valid(monitor, self._definition(monitor)):
                LOG.warning(
                    "monitor %d on %s removed: not monitorable any more",
                    monitor.id,
                    monitor.variable.text(),
                )
                self.store.remove(monitor.id)
                continue
            self._installed(monitor)
        model.on_change(self._stored_value_changed)

    # ------------------------------------------------------------------ the set

    def preconfigured(self) -> list[Monitor]:
        out = []
        for definition in self.model.variables():
            c = definition.component
            if c.name == "EVSE" and definition.variable == VariableKey("AvailabilityState"):
                assert c.evse_id is not None
                out.append(
                    Monitor(
                        PRECONFIGURED_FIRST_ID + c.evse_id,
                        c,
                        definition.variable,
                        "Delta",
                        Decimal(1),
                        PRECONFIGURED_SEVERITY,
                        kind="PreconfiguredMonitor",
                    )
                )
        return out

    def _installed(self, monitor: Monitor) -> None:
        """A monitor is set or loaded: the reference of a delta is the value now (Part 1 4.4:
        also after a reboot), a periodic one is due one interval from now."""
        if monitor.type == "Delta":
            self._references[monitor.id] = self._read(monitor)
        if monitor.type in PERIODIC:
            self._due_s[monitor.id] = self._next_due(monitor)
        self._wake()

    def _forget(self, monitor_id: int) -> None:
        self._references.pop(monitor_id, None)
        self._due_s.pop(monitor_id, None)

    def _definition(self, monitor: Monitor) -> VariableDef | None:
        return self.model.find(monitor.component, monitor.variable)

    def _read(self, monitor: Monitor) -> str | None:
        definition = self._definition(monitor)
        attribute = None if definition is None else definition.attribute("Actual")
        if definition is None or attribute is None:
            return None
        try:
            return self.model.read(definition, attribute)
        except Exception:
            # A live provider's failure (a meter not answering) is no monitor event.
            LOG.debug("reading %s failed", monitor.variable.text(), exc_info=True)
            return None

    def _next_due(self, monitor: Monitor) -> float:
        now = self.client.clock.monotonic_s()
        if monitor.type == "PeriodicClockAligned":
            epoch = self.client.clock.utc_now().timestamp()
            return now + next_aligned_s(epoch, monitor.value)
        return now + float(monitor.value)

    # ------------------------------------------------------------------ rules

    def level(self) -> int:
        return self.model.get_int(CTRLR, "ActiveMonitoringLevel")

    def _enabled(self) -> bool:
        return self.model.get_bool(CTRLR, "Enabled")

    def _active(self, monitor: Monitor) -> bool:
        """A transaction monitor counts only while its EVSE (any, for a station-wide
        component) has a transaction."""
        if not monitor.transaction:
            return True
        station = self.client.station
        ids = (
            [monitor.component.evse_id]
            if monitor.component.evse_id is not None
            else station.connector_ids()
        )
        for cid in ids:
            try:
                if station.view(cid).tx_key is not None:
                    return True
            except KeyError:
                continue
        return False

    # ------------------------------------------------------------------ evaluation

    def _stored_value_changed(
        self, component: ComponentKey, variable: VariableKey, value: str
    ) -> None:
        for monitor in self.store.on(component, variable):
            self._check(monitor, value)

    def _check(self, monitor: Monitor, value: str | None) -> None:
        if monitor.type in PERIODIC or not self._active(monitor):
            return
        definition = self._definition(monitor)
        if definition is None:
            return
        numeric = definition.characteristics.data_type in NUMERIC
        found, tripped, reference = evaluate(
            monitor, value, numeric, self._references.get(monitor.id)
        )
        if monitor.type == "Delta":
            self._references[monitor.id] = reference
        elif tripped != monitor.tripped:
            monitor = self.store.set_tripped(monitor, tripped)
        if found is not None:
            self._report(monitor, found)

    def check_live(self, *, sampled: bool) -> None:
        """Evaluate monitors on live values: the event-driven ones, and with ``sampled``
        also those on values that change by themselves (power, energy)."""
        for monitor in self.store.all():
            if monitor.type in PERIODIC:
                continue
            definition = self._definition(monitor)
            attribute = None if definition is None else definition.attribute("Actual")
            if attribute is None or attribute.provider is None:
                continue
            if monitor.variable.name in EVENT_DRIVEN or sampled:
                self._check(monitor, self._read(monitor))

    def _sampling_needed(self) -> bool:
        for monitor in self.store.all():
            if monitor.type in PERIODIC or monitor.variable.name in EVENT_DRIVEN:
                continue
            definition = self._definition(monitor)
            attribute = None if definition is None else definition.attribute("Actual")
            if attribute is not None and attribute.provider is not None and self._active(monitor):
                return True
        return False

    def _fire_periodic(self) -> None:
        now = self.client.clock.monotonic_s()
        for monitor_id, due_s in list(self._due_s.items()):
            if due_s > now:
                continue
            monitor = self.store.get(monitor_id)
            if monitor is None:
                self._due_s.pop(monitor_id, None)
                continue
            self._due_s[monitor_id] = self._next_due(monitor)
            if self._active(monitor):
                self._report(monitor, Triggered("Periodic", self._read(monitor) or ""))

    async def run(self) -> None:
        """Periodic monitors when due, sampled live values while a monitor needs them, the
        event-driven ones when the station reported a change; asleep otherwise."""
        import asyncio

        self._wakeup = asyncio.Event()
        clock = self.client.clock
        # N07.FR.14: a threshold exceeded before a restart is cleared when its value is back.
        for monitor in self.store.all():
            if monitor.type in THRESHOLDS:
                self._check(monitor, self._read(monitor))
        while True:
            self._wakeup.clear()
            self._fire_periodic()
            sampled = self._sampling_needed()
            poked, self._poke_live = self._poke_live, False
            if sampled or poked:
                self.check_live(sampled=sampled)
            delays = [due - clock.monotonic_s() for due in self._due_s.values()]
            if sampled:
                delays.append(LIVE_POLL_S)
            if not delays:
                await self._wakeup.wait()
            else:
                await sleep_or_event(clock.sleep(max(0.0, min(delays))), self._wakeup)

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def station_changed(self, connector_id: int, condition: FaultKind | None) -> None:
        """The station reported a status: evaluate the monitors on its live values, and
        report a fault that appeared or went (hard-wired, N07)."""
        self._poke_live = True
        self._wake()
        before = self._faults.get(connector_id)
        if condition == before:
            return
        self._faults[connector_id] = condition
        if before is not None:
            self._fault_event(connector_id, before, cleared=True)
        if condition is not None:
            self._fault_event(connector_id, condition, cleared=False)

    def _fault_event(self, connector_id: int, kind: FaultKind, *, cleared: bool) -> None:
        evse_id, _ = status201.evse_of(connector_id)
        component = ComponentKey("EVSE", evse_id=evse_id)
        if kind is FaultKind.METER:
            component = ComponentKey("FiscalMetering", evse_id=evse_id)
        elif kind is FaultKind.POWER_SWITCH:
            component = ComponentKey("PowerContactor", evse_id=evse_id)
        elif kind is FaultKind.READER:
            component = ComponentKey("TokenReader")
        data: dict[str, Any] = {
            "trigger": "Alerting",
            "actualValue": "false" if cleared else "true",
            "techCode": kind.value,
            "eventNotificationType": "HardWiredNotification",
            "component": component.wire(),
            "variable": {"name": "Problem"},
        }
        if cleared:
            data["cleared"] = True
        tx_id = self._transaction_id(connector_id)
        if tx_id is not None:
            data["transactionId"] = tx_id  # the fault hit this transaction (EventDataType)
        self._send(data, FAULT_SEVERITY.get(kind, 4))

    def _transaction_id(self, connector_id: int) -> str | None:
        """The charger's transactionId of the transaction running on the connector."""
        try:
            tx_key = self.client.station.view(connector_id).tx_key
        except KeyError:
            return None
        record = None if tx_key is None else self.client.store.get_transaction(tx_key)
        return None if record is None or not record.tx_id else record.tx_id

    # ------------------------------------------------------------------ NotifyEvent

    def _report(self, monitor: Monitor, found: Triggered) -> None:
        definition = self._definition(monitor)
        attribute = None if definition is None else definition.attribute("Actual")
        write_only = attribute is not None and attribute.mutability == "WriteOnly"
        data: dict[str, Any] = {
            "trigger": found.trigger,
            # N07.FR.10: a write-only value is never sent.
            "actualValue": "" if write_only else found.actual[:ACTUAL_VALUE_CHARS],
            "variableMonitoringId": monitor.id,
            "eventNotificationType": monitor.kind,
            "component": monitor.component.wire(),
            "variable": monitor.variable.wire(),
        }
        if found.cleared:
            data["cleared"] = True
        self._send(data, monitor.severity)

    def _send(self, data: dict[str, Any], severity: int) -> None:
        """One NotifyEventRequest (seqNo 0, N07.FR.07) through the durable outbox: only at
        or below the monitoring level (N07.FR.15); offline only at or below
        OfflineQueuingSeverity (N07.FR.04, N08.FR.03), others are not reported."""
        if not self._enabled() or severity > self.level():
            return
        client = self.client
        online = client.connection_state() == "accepted"
        if not online and severity > self.model.get_int(CTRLR, "OfflineQueuingSeverity"):
            LOG.info("monitoring event of severity %d not queued while offline", severity)
            return
        now = iso_utc(client.clock.utc_now())
        event_id = int(client.store.get_setting(EVENT_ID_KEY) or "0") + 1
        client.store.set_setting(EVENT_ID_KEY, str(event_id))
        payload = {
            "generatedAt": now,
            "seqNo": 0,
            "eventData": [{"eventId": event_id, "timestamp": now, **data}],
        }
        client.journal.enqueue(
            EventKind.NOTICE, [Outgoing(client.backend, "NotifyEvent", payload, 0)]
        )
        client.pump.wake()

    # ------------------------------------------------------------------ requests

    def set_monitors(self, items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [self._set_one(item) for item in items]

    def _set_one(self, item: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = {
            "type": item["type"],
            "severity": item["severity"],
            "component": _echo(item["component"]),
            "variable": _echo(item["variable"]),
        }

        def refused(status: str, reason: str | None = None) -> dict[str, Any]:
            result["status"] = status
            if reason is not None:
                result["statusInfo"] = status_info(reason)
            return result

        component = ComponentKey.from_wire(item["component"])
        variable = VariableKey.from_wire(item["variable"])
        if not self.model.has_component(component):
            return refused("UnknownComponent")  # N04.FR.03
        definition = self.model.find(component, variable)
        if definition is None:
            return refused("UnknownVariable")  # N04.FR.04
        severity = int(item["severity"])
        if not 0 <= severity <= 9:
            return refused("Rejected", "ValueOutOfRange")
        old: Monitor | None = None
        if "id" in item:
            old = self.store.get(int(item["id"]))
            if old is None:
                return refused("Rejected", "InvalidValue")  # N04.FR.13
            if old.kind == "HardWiredMonitor":
                return refused("Rejected", "ReadOnly")  # N04.FR.18
            if (old.component, old.variable) != (definition.component, definition.variable):
                return refused("Rejected", "InvalidValue")  # N04.FR.16
        monitor_type = str(item["type"])
        if not supports(definition, monitor_type):
            return refused("UnsupportedMonitorType")  # N04.FR.05
        value = Decimal(str(item["value"]))
        problem = value_problem(definition, monitor_type, value)
        if problem is not None:
            return refused("Rejected", problem)  # N04.FR.06, N04.FR.14
        if old is None and len(self.store) >= MAX_MONITORS:
            return refused("Rejected", "TooManyElements")
        for other in self.store.on(definition.component, definition.variable):
            if other.type == monitor_type and other.severity == severity:
                if old is None or other.id != old.id:
                    return refused("Duplicate")  # N04.FR.10
        monitor = Monitor(
            old.id if old is not None else self.store.next_custom_id(),
            definition.component,
            definition.variable,
            monitor_type,  # type: ignore[arg-type]
            value,
            severity,
            bool(item.get("transaction", False)),
            kind="CustomMonitor",  # N04.FR.15: also a replaced preconfigured one
            # N07.FR.11: a changed threshold starts from the old state, so a new value that
            # clears the exceeded old one reports cleared.
            tripped=old is not None and old.type == monitor_type and old.tripped,
        )
        self.store.put(monitor)  # N04.FR.12 (same id) / N04.FR.11 (new id)
        self._forget(monitor.id)
        self._installed(monitor)
        if monitor_type in THRESHOLDS:
            self._check(monitor, self._read(monitor))
        result["status"] = "Accepted"
        result["id"] = monitor.id
        return result

    def clear_monitors(self, ids: Iterable[int]) -> list[dict[str, Any]]:
        """N06: Accepted (removed without a cleared event, N07.FR.12), NotFound, Rejected
        for a hard-wired monitor (N06.FR.03)."""
        out = []
        for monitor_id in ids:
            monitor = self.store.get(monitor_id)
            if monitor is None:
                status = "NotFound"
            elif monitor.kind == "HardWiredMonitor":
                status = "Rejected"
            else:
                self.store.remove(monitor_id)
                self._forget(monitor_id)
                status = "Accepted"
            out.append({"id": monitor_id, "status": status})
        return out

    def set_base(self, base: str) -> None:
        """N03: All adds the preconfigured monitors that are missing and keeps the custom
        ones; FactoryDefault keeps only the preconfigured ones as shipped; HardWiredOnly
        keeps none (evsed's hard-wired reports are its fault notifications)."""
        if base == "All":
            for monitor in self.preconfigured():
                if self.store.get(monitor.id) is None:
                    self.store.put(monitor)
                    self._installed(monitor)
        else:
            keep = self.preconfigured() if base == "FactoryDefault" else []
            self.store.replace_all(keep)
            self._references.clear()
            self._due_s.clear()
            for monitor in self.store.all():
                self._installed(monitor)
        self.model.set_internal(CTRLR, "ActiveMonitoringBase", base)

    def report(
        self, criteria: Iterable[str], component_variables: Iterable[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """MonitoringDataType entries of the monitors the filters select (N02.FR.05-21)."""
        types: set[str] = set()
        for criterion in criteria:
            types |= CRITERIA[criterion]
        wanted = list(component_variables)
        grouped: dict[tuple[ComponentKey, VariableKey], list[Monitor]] = {}
        for monitor in self.store.all():
            if types and monitor.type not in types:
                continue
            if wanted and not any(_matches(monitor, w) for w in wanted):
                continue
            grouped.setdefault((monitor.component, monitor.variable), []).append(monitor)
        return [
            {
                "component": c.wire(),
                "variable": v.wire(),
                "variableMonitoring": [m.wire() for m in monitors],
            }
            for (c, v), monitors in grouped.items()
        ]


def _echo(part: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in part.items() if k != "customData"}


def _matches(monitor: Monitor, wanted: Mapping[str, Any]) -> bool:
    """N02.FR.16-21: an absent variable, instance, evse or connectorId is a wildcard."""
    want_c = wanted["component"]
    c = monitor.component
    if c.name != want_c["name"]:
        return False
    if want_c.get("instance") and c.instance != want_c["instance"]:
        return False
    evse = want_c.get("evse")
    if evse is not None:
        if c.evse_id != evse["id"]:
            return False
        if "connectorId" in evse and c.connector_id != evse["connectorId"]:
            return False
    variable = wanted.get("variable")
    if variable is not None:
        if monitor.variable.name != variable["name"]:
            return False
        if variable.get("instance") and monitor.variable.instance != variable["instance"]:
            return False
    return True


# ---------------------------------------------------------------------- routes


def _monitoring(client: Ocpp201Client) -> Monitoring:
    monitoring = client.monitoring
    if monitoring is None:
        raise CallError("NotSupported", "monitoring needs the device model")
    return monitoring


def _check_limits(client: Ocpp201Client, action: str, count: int, payload: Any) -> None:
    """ItemsPerMessage / BytesPerMessage of MonitoringCtrlr (N04.FR.09, N06.FR.06/07) or
    DeviceDataCtrlr (GetReport, N02.FR.07)."""
    model = _monitoring(client).model
    ctrlr = "DeviceDataCtrlr" if action == "GetReport" else CTRLR
    items = model.find(ctrlr, VariableKey("ItemsPerMessage", action))
    size = model.find(ctrlr, VariableKey("BytesPerMessage", action))
    if items is not None and count > model.get_int(ctrlr, VariableKey("ItemsPerMessage", action)):
        raise CallError("OccurrenceConstraintViolation", f"too many items for {action}")
    length = len(json.dumps(payload, separators=(",", ":")))
    if size is not None and length > model.get_int(ctrlr, VariableKey("BytesPerMessage", action)):
        raise CallError("FormatViolation", f"too many bytes for {action}")


async def set_variable_monitoring(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    items = payload["setMonitoringData"]
    _check_limits(client, "SetVariableMonitoring", len(items), payload)
    return {"setMonitoringResult": _monitoring(client).set_monitors(items)}


async def clear_variable_monitoring(
    client: Ocpp201Client, payload: dict[str, Any]
) -> dict[str, Any]:
    ids = [int(i) for i in payload["id"]]
    _check_limits(client, "ClearVariableMonitoring", len(ids), payload)
    return {"clearMonitoringResult": _monitoring(client).clear_monitors(ids)}


async def set_monitoring_base(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    _monitoring(client).set_base(str(payload["monitoringBase"]))
    return {"status": "Accepted"}  # N03.FR.01: all three bases are supported


async def set_monitoring_level(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    severity = int(payload["severity"])
    if not 0 <= severity <= 9:
        return {"status": "Rejected", "statusInfo": status_info("ValueOutOfRange")}  # N05.FR.02
    _monitoring(client).model.set_internal(CTRLR, "ActiveMonitoringLevel", str(severity))
    return {"status": "Accepted"}


async def get_monitoring_report(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    """N02: Accepted and NotifyMonitoringReport pages after the answer, EmptyResultSet when
    nothing matches (N02.FR.10)."""
    monitoring = _monitoring(client)
    wanted = payload.get("componentVariable") or []
    _check_limits(client, "GetReport", len(wanted), payload)
    criteria = payload.get("monitoringCriteria") or []
    if any(c not in CRITERIA for c in criteria):
        return {"status": "NotSupported"}  # N02.FR.02
    entries = monitoring.report(criteria, wanted)
    if not entries:
        return {"status": "EmptyResultSet"}
    per_page = max(
        1, monitoring.model.get_int("DeviceDataCtrlr", VariableKey("ItemsPerMessage", "GetReport"))
    )
    request_id = int(payload["requestId"])
    client.spawn(_pages(client, request_id, entries, per_page), name="monitoring-report")
    return {"status": "Accepted"}


async def _pages(
    client: Ocpp201Client, request_id: int, entries: list[dict[str, Any]], per_page: int
) -> None:
    """NotifyMonitoringReport pages: the same requestId (N02.FR.04), seqNo from 0
    (N02.FR.09), tbc on all but the last."""
    pages = [entries[i : i + per_page] for i in range(0, len(entries), per_page)]
    generated_at = iso_utc(client.clock.utc_now())
    for seq_no, page in enumerate(pages):
        message = {
            "requestId": request_id,
            "tbc": seq_no < len(pages) - 1,
            "seqNo": seq_no,
            "generatedAt": generated_at,
            "monitor": page,
        }
        try:
            await client.call("NotifyMonitoringReport", message)
        except (CallError, CallTimeout, ConnectionLost) as exc:
            LOG.warning("NotifyMonitoringReport %d/%d not delivered: %s", seq_no, len(pages), exc)
            return


ROUTES = {
    "SetVariableMonitoring": set_variable_monitoring,
    "ClearVariableMonitoring": clear_variable_monitoring,
    "SetMonitoringBase": set_monitoring_base,
    "SetMonitoringLevel": set_monitoring_level,
    "GetMonitoringReport": get_monitoring_report,
}
