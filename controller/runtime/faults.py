"""Connector faults: the sources that raise them, their merge into one, and their history."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from controller.core import connector as sm
from controller.core.timestamps import iso_utc
from controller.runtime.clock import Clock
from controller.runtime.connector import ConnectorRuntime
from hal.base import FaultKind, VehicleState

LOG = logging.getLogger(__name__)

# Recent error codes kept in memory for the local status page (oldest dropped first).
FAULT_HISTORY_SIZE = 50


@dataclass
class FaultEvent:
    """A connector's fault (or pilot warning) from ``at`` until ``cleared_at`` (None: on)."""

    connector: int
    error_code: str  # the FaultKind's name (the local API's field name)
    source: str  # which input raised it (input, meter, lock, contactor-feedback, ...) or "vehicle"
    at: str
    cleared_at: str | None = None


class Faults:
    """Each source (fault input, meter, lock, contactor feedback, driver errors, API) holds
    its own fault; the connector's state machine sees the first active one."""

    def __init__(
        self,
        *,
        connectors: dict[int, ConnectorRuntime],
        clock: Clock,
        dispatch: Callable[[int, sm.Event], None],
    ) -> None:
        self._connectors = connectors
        self._clock = clock
        self._dispatch = dispatch
        self.history: deque[FaultEvent] = deque(maxlen=FAULT_HISTORY_SIZE)
        # ``listener(connector_id, kind, source)`` when a source raises a fault it did not
        # hold before (the composition root turns a tamper switch into a security event).
        self.listeners: list[Callable[[int, FaultKind, str], None]] = []

    def set(self, c: ConnectorRuntime, source: str, fault: FaultKind | None) -> None:
        """``source`` raises ``fault`` (None: clears its own)."""
        if fault is None:
            c.faults.pop(source, None)
        else:
            raised = c.faults.get(source) is not fault
            c.faults[source] = fault
            if raised:
                for listener in self.listeners:
                    try:
                        listener(c.connector_id, fault, source)
                    except Exception:
                        LOG.exception("fault listener failed")
        effective = next(iter(c.faults.values()), None)
        if effective != c.state.fault:
            if effective is not None:
                LOG.error(
                    "connector %d fault: %s (%s)",
                    c.connector_id,
                    effective,
                    source,
                    extra={"connector": c.connector_id},
                )
            self._dispatch(c.connector_id, sm.FaultChanged(effective))

    def on_input(self, connector_id: int, fault: FaultKind | None) -> None:
        """The connector's fault input (RCD, E-stop, ...), from the driver."""
        self.set(self._connectors[connector_id], "input", fault)

    def on_contactor_feedback(self, connector_id: int, fault: FaultKind | None) -> None:
        """Weld / failed-to-close supervision of the contactor driver."""
        self.set(self._connectors[connector_id], "contactor-feedback", fault)

    def external(self, connector_id: int, fault: FaultKind | None) -> None:
        """A fault from outside the connector's own inputs (API, simulation, supervisor)."""
        self.set(self._connectors[connector_id], "external", fault)

    def vehicle_changed(self, c: ConnectorRuntime, state: VehicleState) -> None:
        if not state.plugged and "lock" in c.faults:
            # The cable is out: a lock that failed to engage no longer matters.
            self.set(c, "lock", None)

    def lock_moved(self, c: ConnectorRuntime, locking: bool, ok: bool) -> None:
        """A lock or unlock finished; only a failed lock is a fault (the cable may come out)."""
        if ok and locking and "lock" in c.faults:
            self.set(c, "lock", None)
        if not ok:
            LOG.error("connector %d: %s failed", c.connector_id, "lock" if locking else "unlock")
            if locking:
                self.set(c, "lock", FaultKind.CONNECTOR_LOCK)

    def note(self, c: ConnectorRuntime, condition: FaultKind | None) -> None:
        """History: close the connector's open event, open one for a new code."""
        now = iso_utc(self._clock.utc_now())
        for event in reversed(self.history):
            if event.connector == c.connector_id:
                if event.cleared_at is None:
                    event.cleared_at = now
                break
        if condition is not None:
            source = next((s for s, kind in c.faults.items() if kind is condition), "vehicle")
            self.history.append(FaultEvent(c.connector_id, condition.value, source, now))
