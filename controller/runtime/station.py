"""Station runtime: runs the connector state machines and executes their commands on the HAL."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from controller.core import connector as sm
from controller.core.control import AvailabilityResult, ConnectorView, UnlockResult
from controller.core.policy import ChargingPolicy
from controller.core.port import AuthDecision, CsmsPort, Sample, TxStart, TxStop
from controller.core.records import StationRecords, StoreError, TxRecord
from controller.core.timestamps import iso_utc, shift_iso
from controller.runtime.clock import Clock
from controller.runtime.tasks import TaskGroup
from hal.base import (
    ConnectorLock,
    Contactor,
    DeviceError,
    EnergyMeter,
    FaultInput,
    FaultKind,
    Indicator,
    IndicatorState,
    MeterReading,
    TokenReader,
    VehicleInterface,
    VehicleState,
)

LOG = logging.getLogger(__name__)

METER_FAILURES_BEFORE_FAULT = 3
VEHICLE_READY_TIMEOUT_S = 2.0
MAX_STOP_TX_SAMPLES = 48
# The last reading of a running transaction is persisted at least this often (and every
# MeterValueSampleInterval when that is shorter), so an unclean stop loses at most this
# much energy from the bill; nothing is written while the register stands still.
MAX_PERSIST_INTERVAL_S = 60
# While the database cannot be written (disk full), a write is retried this often.
STORAGE_PROBE_INTERVAL_S = 60
# Store settings key marking a transaction whose idTag the CSMS invalidated (value: the
# register limit of MaxEnergyOnInvalidId in Wh, or "" for none), so a resumed
# transaction does not get its energy back.
_DEAUTH_KEY = "tx.deauthorized.{}"
# Recent error codes kept in memory for the local status page (oldest dropped first).
FAULT_HISTORY_SIZE = 50

_INDICATOR = {
    sm.Phase.AVAILABLE: IndicatorState.AVAILABLE,
    sm.Phase.PREPARING: IndicatorState.PREPARING,
    sm.Phase.CHARGING: IndicatorState.CHARGING,
    sm.Phase.SUSPENDED_EV: IndicatorState.SUSPENDED,
    sm.Phase.SUSPENDED_EVSE: IndicatorState.SUSPENDED,
    sm.Phase.FINISHING: IndicatorState.FINISHING,
    sm.Phase.RESERVED: IndicatorState.RESERVED,
    sm.Phase.UNAVAILABLE: IndicatorState.UNAVAILABLE,
    sm.Phase.FAULTED: IndicatorState.FAULT,
}


@dataclass
class ConnectorHardware:
    """The devices of one connector; lock, indicator and fault input are optional."""

    contactor: Contactor
    meter: EnergyMeter
    vehicle: VehicleInterface
    lock: ConnectorLock | None = None
    indicator: Indicator | None = None
    fault: FaultInput | None = None
    max_current_a: float = 32.0


@dataclass
class FaultEvent:
    """A connector's fault (or pilot warning) from ``at`` until ``cleared_at`` (None: on)."""

    connector: int
    error_code: str  # the FaultKind's name (the local API's field name)
    source: str  # which input raised it (input, meter, lock, contactor-feedback, ...) or "vehicle"
    at: str
    cleared_at: str | None = None


@dataclass
class ConnectorRuntime:
    """Mutable runtime data around the pure state of one connector."""

    connector_id: int
    hw: ConnectorHardware
    state: sm.ConnectorState
    tx_key: int | None = None
    tx_id_tag: str | None = None
    tx_meter_start_wh: int = 0
    tx_started_s: float = 0.0
    last_sample_s: float = 0.0
    last_persist_s: float = 0.0
    persisted_wh: int = 0  # register value known to be durable for the open transaction
    deauth_marked: bool = False  # _DEAUTH_KEY written for the open transaction
    samples: list[Sample] = field(default_factory=list)
    reading: MeterReading | None = None  # the last good reading (kept through an outage)
    reading_at: str | None = None  # when ``reading`` was taken (UTC, ISO 8601)
    meter_failures: int = 0  # failed reads since the last good one
    faults: dict[str, FaultKind] = field(default_factory=dict)  # source -> fault
    status_since_s: float = 0.0

    @property
    def live_reading(self) -> MeterReading | None:
        """The reading of the latest poll; None while the meter does not answer, so that
        no sample repeats an old register with a fresh timestamp."""
        return self.reading if self.meter_failures == 0 else None


class Station:
    """Owns the connectors; the CSMS side is reached only through ``CsmsPort``."""

    def __init__(
        self,
        *,
        connectors: list[ConnectorHardware],
        reader: TokenReader | None,
        policy: ChargingPolicy,
        store: StationRecords,
        clock: Clock,
        boot_id: str = "",
        tick_interval_s: float = 1.0,
        resume_transactions: bool = False,
    ) -> None:
        self.policy = policy
        self.resume_transactions = resume_transactions
        self.store = store
        self.clock = clock
        self.reader = reader
        self.boot_id = boot_id
        self.tick_interval_s = tick_interval_s
        self.port: CsmsPort | None = None
        self.connectors: dict[int, ConnectorRuntime] = {}
        for index, hw in enumerate(connectors, start=1):
            operative = store.get_setting(f"availability.{index}") != "Inoperative"
            state = sm.initial_state(
                max_current_a=hw.max_current_a, operative=operative, now_s=clock.monotonic_s()
            )
            self.connectors[index] = ConnectorRuntime(index, hw, state)
        self.station_operative = store.get_setting("availability.0") != "Inoperative"
        self._tasks = TaskGroup("station")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: list[Callable[[int, sm.Command], None]] = []
        self.started = False
        # False while a CSMS is configured but not connected (the client says so); a
        # standalone charger has none to miss.
        self.csms_online = True
        self._storage_probe_at_s: float | None = None  # next write probe while degraded
        # Monotonic time the last tick finished (start() counts as one): the app's watchdog
        # stops pinging systemd when the tick loop makes no progress.
        self.last_tick_s = clock.monotonic_s()
        self.fault_history: deque[FaultEvent] = deque(maxlen=FAULT_HISTORY_SIZE)
        add_trust_listener = getattr(clock, "add_trust_listener", None)
        if add_trust_listener is not None:
            add_trust_listener(self._on_time_confirmed)

    def _on_time_confirmed(self, shift_s: float) -> None:
        """The clock was confirmed (NTP / CSMS): samples kept for StopTransaction's
        transactionData were stamped on the unconfirmed clock in this process; move them
        as the journal moves the queued messages (issue 4 item 7)."""
        if not shift_s:
            return
        for c in self.connectors.values():
            c.samples = [replace(s, timestamp=shift_iso(s.timestamp, shift_s)) for s in c.samples]
            if c.reading_at is not None:
                c.reading_at = shift_iso(c.reading_at, shift_s)

    # ------------------------------------------------------------------ lifecycle

    def attach_port(self, port: CsmsPort) -> None:
        self.port = port

    def add_listener(self, listener: Callable[[int, sm.Command], None]) -> None:
        """Observe executed commands (demo output, tests, benchmarks)."""
        self._listeners.append(listener)

    async def start(self) -> None:
        """Read meters, close what an unclean stop left open, then follow the hardware."""
        assert self.port is not None, "attach_port() first"
        self._loop = asyncio.get_running_loop()
        for c in self.connectors.values():
            c.hw.contactor.set_closed(False)  # fail safe, whatever the driver did
            await self._poll_meter(c)
        resumable = self._recover_open_transactions()
        for c in self.connectors.values():
            self._apply_policy(c)
            c.status_since_s = self.clock.monotonic_s()
            self._report_status(c, c.state.phase, c.state.condition)
            self._show_indicator(c)  # the boot status has no Notify of its own
            c.hw.contactor.start_monitor(self._threadsafe(c.connector_id, self._on_contactor_fault))
            c.hw.vehicle.start(self._threadsafe(c.connector_id, self._on_vehicle))
            await c.hw.vehicle.wait_ready(VEHICLE_READY_TIMEOUT_S)
            if c.hw.fault is not None:
                c.hw.fault.start(self._threadsafe(c.connector_id, self._on_fault))
                if c.hw.fault.active_fault:
                    self._set_fault(c, "input", c.hw.fault.active_fault)
            self._on_vehicle(c.connector_id, c.hw.vehicle.state)
            tx = resumable.pop(c.connector_id, None)
            if tx is not None:
                self._resume_or_close(c, tx)
        if self.reader is not None:
            loop = self._loop

            def on_token(uid: str) -> None:
                loop.call_soon_threadsafe(self.present_token, uid)

            self.reader.start(on_token)
        self.last_tick_s = self.clock.monotonic_s()
        self._tasks.spawn(self._tick_loop(), name="tick", critical=True)
        self.started = True

    async def stop(self, reason: sm.StopCause | None = None) -> None:
        """Stop transactions with ``reason`` (None leaves them for recovery) and go safe."""
        try:
            if reason is not None:
                await self.stop_all(reason)
        finally:
            # Whatever failed above, every contactor is opened, each on its own: one
            # broken driver must not keep the next contactor closed.
            await self._tasks.cancel_all()
            for c in self.connectors.values():
                contactor = c.hw.contactor
                for action in (
                    functools.partial(contactor.set_closed, False),
                    c.hw.vehicle.stop,
                    c.hw.fault.stop if c.hw.fault is not None else None,
                ):
                    if action is None:
                        continue
                    try:
                        action()
                    except Exception:
                        LOG.exception("connector %d: stopping a device failed", c.connector_id)
            if self.reader is not None:
                try:
                    self.reader.stop()
                except Exception:
                    LOG.exception("stopping the card reader failed")
            self.started = False

    def _threadsafe(
        self, connector_id: int, fn: Callable[[int, Any], None]
    ) -> Callable[[Any], None]:
        """Hardware callbacks may come from driver threads: hop onto the event loop."""
        loop = self._loop
        assert loop is not None

        def callback(value: Any) -> None:
            loop.call_soon_threadsafe(fn, connector_id, value)

        return callback

    def _recover_open_transactions(self) -> dict[int, TxRecord]:
        """Close what an unclean stop left open; return those that may be resumed instead
        (``resume_transactions``: the newest open one per connector, decided once the
        vehicle interface is ready)."""
        resumable: dict[int, TxRecord] = {}
        for tx in self.store.open_transactions():
            if self.resume_transactions and tx.connector_id in self.connectors:
                older = resumable.get(tx.connector_id)
                resumable[tx.connector_id] = tx  # ordered by tx_key: the newest wins
                if older is None:
                    continue
                tx = older
            self._close_recovered(tx)
        return resumable

    def _close_recovered(self, tx: TxRecord) -> None:
        assert self.port is not None
        # Same OS boot: the controller process died (crash, kill, watchdog) -> Reboot.
        # Different boot id: the whole board lost power -> PowerLoss.
        same_boot = tx.boot_id and tx.boot_id == self.boot_id
        reason = sm.StopCause.REBOOT if same_boot else sm.StopCause.POWER_LOSS
        LOG.warning(
            "closing transaction %d left open by an unclean stop: %s, %d Wh",
            tx.tx_key,
            reason,
            tx.last_meter_wh,
        )
        self.port.stop_transaction(
            tx.tx_key,
            TxStop(
                meter_stop_wh=tx.last_meter_wh,
                timestamp=tx.last_meter_at,
                reason=reason,
                id_tag=None,
                stamped_now=False,
            ),
        )
        self._clear_deauth_mark(tx.tx_key, known=None)

    def _resume_or_close(self, c: ConnectorRuntime, tx: TxRecord) -> None:
        """Re-attach ``tx`` if the vehicle is still plugged and the connector can charge;
        otherwise close it like any transaction an unclean stop left open (4.10 / 7.36)."""
        reading_wh = round(c.reading.energy_wh) if c.reading is not None else None
        if reading_wh is None or reading_wh < tx.last_meter_wh:
            # Without a reading at least the persisted one the bill cannot continue.
            LOG.warning(
                "connector %d: transaction %d not resumed (meter %s Wh < stored %d Wh)",
                c.connector_id,
                tx.tx_key,
                reading_wh,
                tx.last_meter_wh,
            )
            self._close_recovered(tx)
            return
        mark = self.store.get_setting(_DEAUTH_KEY.format(tx.tx_key))
        limit_wh = float(mark) if mark else None
        if limit_wh is not None and reading_wh >= limit_wh:
            limit_wh = None  # the MaxEnergyOnInvalidId allowance is used up already
        now_s = self.clock.monotonic_s()
        c.tx_key = tx.tx_key  # before dispatch: the contactor may close right away
        c.tx_id_tag = tx.id_tag
        c.tx_meter_start_wh = tx.meter_start_wh
        c.tx_started_s = c.last_sample_s = c.last_persist_s = now_s
        c.persisted_wh = tx.last_meter_wh
        c.deauth_marked = mark is not None
        c.samples = []
        self.dispatch(
            c.connector_id,
            sm.ResumeTx(
                tx.id_tag,
                parent_id_tag=self._parent_of(tx.id_tag),
                deauthorized=mark is not None,
                energy_limit_wh=limit_wh,
            ),
        )
        if not c.state.tx_active:
            LOG.info(
                "connector %d: transaction %d not resumed (vehicle %s)",
                c.connector_id,
                tx.tx_key,
                c.state.vehicle.value,
            )
            c.tx_key = None
            c.tx_id_tag = None
            c.deauth_marked = False
            self._close_recovered(tx)
            return
        LOG.warning(
            "connector %d: transaction %d resumed for %s after an unclean stop, %d Wh",
            c.connector_id,
            tx.tx_key,
            tx.id_tag,
            reading_wh,
        )

    def _parent_of(self, id_tag: str) -> str | None:
        """The parent idTag as last known (local list first, then the cache; 3.5.3)."""
        for info in (self.store.local_list_get(id_tag), self.store.cache_get(id_tag)):
            if info is not None:
                return info[1]
        return None

    def _clear_deauth_mark(self, tx_key: int, *, known: bool | None) -> None:
        """Drop the Deauthorized marker of a closed transaction (``known`` None: look)."""
        key = _DEAUTH_KEY.format(tx_key)
        if known is None:
            known = self.store.get_setting(key) is not None
        if not known:
            return
        try:
            self.store.delete_setting(key)
        except StoreError:
            LOG.exception("could not drop %s", key)

    # ------------------------------------------------------------------ events

    def dispatch(self, connector_id: int, event: sm.Event) -> None:
        c = self.connectors[connector_id]
        old = c.state
        c.state, commands = sm.step(c.state, event)
        if c.state.condition != old.condition:
            self._note_fault(c, c.state.condition)
        if c.state.contactor_closed and not old.contactor_closed:
            LOG.info("connector %d: contactor permitted by %s", connector_id, event)
        for command in commands:
            self._execute(c, command)

    def _note_fault(self, c: ConnectorRuntime, condition: FaultKind | None) -> None:
        """Fault history: close the connector's open event, open one for a new code."""
        now = self._now_iso()
        for event in reversed(self.fault_history):
            if event.connector == c.connector_id:
                if event.cleared_at is None:
                    event.cleared_at = now
                break
        if condition is not None:
            source = next((s for s, kind in c.faults.items() if kind is condition), "vehicle")
            self.fault_history.append(FaultEvent(c.connector_id, condition.value, source, now))

    def _on_vehicle(self, connector_id: int, state: VehicleState) -> None:
        c = self.connectors[connector_id]
        if not state.plugged and "lock" in c.faults:
            # The cable is out: a lock that failed to engage no longer matters.
            self._set_fault(c, "lock", None)
        self.dispatch(connector_id, sm.VehicleChanged(state))

    def _on_contactor_fault(self, connector_id: int, fault: FaultKind | None) -> None:
        self._set_fault(self.connectors[connector_id], "contactor-feedback", fault)

    def _on_fault(self, connector_id: int, fault: FaultKind | None) -> None:
        self._set_fault(self.connectors[connector_id], "input", fault)

    def _set_fault(self, c: ConnectorRuntime, source: str, fault: FaultKind | None) -> None:
        if fault is None:
            c.faults.pop(source, None)
        else:
            c.faults[source] = fault
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
            self.dispatch(c.connector_id, sm.FaultChanged(effective))

    def present_token(self, id_tag: str) -> int | None:
        """A card at the (shared) reader: route it to the connector it is meant for."""
        target = self._connector_for_token(id_tag)
        if target is None:
            LOG.info("card %s ignored: no connector can take it", id_tag)
            return None
        self.dispatch(target, sm.TokenPresented(id_tag))
        return target

    def _connector_for_token(self, id_tag: str) -> int | None:
        conns = list(self.connectors.values())
        for c in conns:  # the card that started a transaction stops it
            if c.state.tx_active and c.state.authorized_tag == id_tag:
                return c.connector_id
        for c in conns:  # a reserved connector for this card
            if c.state.reserved_for == id_tag and not c.state.tx_active:
                return c.connector_id
        for c in conns:  # plugged in and waiting
            s = c.state
            if s.vehicle.plugged and not s.tx_active and not s.finishing and s.operative:
                return c.connector_id
        for c in conns:  # tap first, plug later
            s = c.state
            if s.phase is sm.Phase.AVAILABLE:
                return c.connector_id
        for c in conns:  # any running transaction: maybe a group card to stop it
            if c.state.tx_active:
                return c.connector_id
        return None

    # ------------------------------------------------------------------ commands

    def _execute(self, c: ConnectorRuntime, command: sm.Command) -> None:
        match command:
            case sm.SwitchContactor(on=on):
                if on and c.tx_key is None:
                    # Never deliver energy that is not durably recorded as a transaction.
                    LOG.error(
                        "connector %d: no recorded transaction, contactor stays open",
                        c.connector_id,
                    )
                    assert self._loop is not None
                    self._loop.call_soon(self._set_fault, c, "store", FaultKind.INTERNAL)
                else:
                    self._switch(c, on)
            case sm.SetCurrentLimit(current_a=amps):
                try:
                    c.hw.vehicle.set_max_current_a(amps)
                except Exception:
                    LOG.exception("connector %d: setting pilot current failed", c.connector_id)
                    self._set_fault(c, "pilot", FaultKind.EV_COMMUNICATION)
            case sm.Lock():
                if c.hw.lock is not None:
                    self._tasks.spawn(self._move_lock(c, True), name="lock")
            case sm.Unlock():
                if c.hw.lock is not None:
                    self._tasks.spawn(self._move_lock(c, False), name="unlock")
            case sm.RequestAuthorization(id_tag=tag):
                self._tasks.spawn(self._authorize(c.connector_id, tag), name="authorize")
            case sm.StartTx(id_tag=tag, reservation_id=rid):
                self._start_tx(c, tag, rid)
            case sm.StopTx(reason=reason, id_tag=tag):
                self._stop_tx(c, reason, tag)
            case sm.PhaseChanged(phase=phase, condition=condition):
                c.status_since_s = self.clock.monotonic_s()
                self._show_indicator(c)
                self._report_status(c, phase, condition)
            case sm.SessionEvent():
                if self.port is not None:
                    self.port.session_event(c.connector_id, command, self._now_iso())
        for listener in self._listeners:
            listener(c.connector_id, command)

    def _switch(self, c: ConnectorRuntime, on: bool) -> None:
        try:
            c.hw.contactor.set_closed(on)
        except Exception:
            LOG.exception("connector %d: contactor driver failed", c.connector_id)
            try:
                c.hw.contactor.set_closed(False)
            except Exception:
                LOG.exception("connector %d: contactor could not be opened", c.connector_id)
            # Defer: we are inside dispatch; the fault opens the contactor in the model.
            assert self._loop is not None
            self._loop.call_soon(self._set_fault, c, "contactor", FaultKind.POWER_SWITCH)

    async def _move_lock(self, c: ConnectorRuntime, lock: bool) -> None:
        assert c.hw.lock is not None
        ok = await (c.hw.lock.lock() if lock else c.hw.lock.unlock())
        if ok and lock and "lock" in c.faults:
            self._set_fault(c, "lock", None)
        if not ok:
            LOG.error("connector %d: %s failed", c.connector_id, "lock" if lock else "unlock")
            if lock:
                self._set_fault(c, "lock", FaultKind.CONNECTOR_LOCK)

    async def _authorize(self, connector_id: int, id_tag: str) -> None:
        assert self.port is not None
        try:
            decision = await self.port.authorize(id_tag)
        except Exception:
            LOG.exception("authorization of %s failed", id_tag)
            decision = AuthDecision(False, "Invalid", source="error")
        LOG.info("card %s: %s (%s)", id_tag, decision.status, decision.source)
        self.dispatch(
            connector_id, sm.AuthResult(id_tag, decision.accepted, decision.parent_id_tag)
        )

    def _now_iso(self) -> str:
        return iso_utc(self.clock.utc_now())

    def _start_tx(self, c: ConnectorRuntime, id_tag: str, reservation_id: int | None) -> None:
        assert self.port is not None
        if c.reading is None:
            # The state machine starts nothing before MeterReady; should that ever fail,
            # no transaction is recorded, so the contactor refuses to close (InternalError)
            # instead of billing from a made-up meterStart.
            LOG.error("connector %d: no meter reading, transaction not started", c.connector_id)
            return
        # The contactor has been open since that reading, so it is the exact start register.
        energy_wh = round(c.reading.energy_wh)
        now = self._now_iso()
        try:
            c.tx_key = self.port.start_transaction(
                TxStart(c.connector_id, id_tag, energy_wh, now, reservation_id)
            )
        except StoreError:
            LOG.exception("connector %d: transaction start could not be recorded", c.connector_id)
            return
        c.tx_id_tag = id_tag
        c.tx_meter_start_wh = energy_wh
        c.tx_started_s = c.last_sample_s = c.last_persist_s = self.clock.monotonic_s()
        c.persisted_wh = energy_wh  # begin_transaction stored it as the last reading
        c.deauth_marked = False
        c.samples = [Sample(c.reading, now, "Transaction.Begin")]
        LOG.info(
            "connector %d: transaction %d started for %s",
            c.connector_id,
            c.tx_key,
            id_tag,
            extra={"connector": c.connector_id, "tx_key": c.tx_key},
        )

    def _stop_tx(self, c: ConnectorRuntime, reason: sm.StopCause, id_tag: str | None) -> None:
        tx_key = c.tx_key
        if tx_key is None:
            return
        c.tx_key = None
        marked, c.deauth_marked = c.deauth_marked, False
        self._tasks.spawn(
            self._finish_stop(c, tx_key, reason, id_tag, list(c.samples), marked),
            name="stop-tx",
        )
        c.samples = []

    async def _finish_stop(
        self,
        c: ConnectorRuntime,
        tx_key: int,
        reason: sm.StopCause,
        id_tag: str | None,
        samples: list[Sample],
        deauth_marked: bool = False,
    ) -> None:
        assert self.port is not None
        # Read after the contactor opened so the last watt-hours are billed.
        await self._poll_meter(c)
        reading = c.live_reading
        if reading is not None:
            stopped_at = self._now_iso()
            samples.append(Sample(reading, stopped_at, "Transaction.End"))
        else:
            # The meter is silent: bill its last real reading, stamped when it was taken
            # (not the stop time, which would claim a register nobody read then).
            reading = c.reading
            stopped_at = c.reading_at or self._now_iso()
            LOG.warning(
                "connector %d: meter silent at the stop of transaction %d; meterStop is the "
                "reading of %s",
                c.connector_id,
                tx_key,
                stopped_at,
            )
        energy_wh = round(reading.energy_wh) if reading is not None else c.tx_meter_start_wh
        self.port.stop_transaction(
            tx_key,
            TxStop(
                meter_stop_wh=max(energy_wh, c.tx_meter_start_wh),
                timestamp=stopped_at,
                reason=reason,
                id_tag=id_tag,
                transaction_data=samples,
            ),
        )
        self._clear_deauth_mark(tx_key, known=deauth_marked)
        LOG.info(
            "connector %d: transaction %d stopped (%s), %d Wh",
            c.connector_id,
            tx_key,
            reason.value,
            energy_wh - c.tx_meter_start_wh,
            extra={"connector": c.connector_id, "tx_key": tx_key},
        )

    def _report_status(
        self, c: ConnectorRuntime, phase: sm.Phase, condition: FaultKind | None
    ) -> None:
        if self.port is not None:
            self.port.status_changed(c.connector_id, phase, condition, self._now_iso())

    # ------------------------------------------------------------------ periodic work

    async def _poll_meter(self, c: ConnectorRuntime) -> None:
        try:
            reading = await c.hw.meter.read()
        except (TimeoutError, DeviceError, OSError) as exc:
            c.meter_failures += 1
            LOG.warning("connector %d: meter read failed (%s)", c.connector_id, exc)
            if c.meter_failures >= METER_FAILURES_BEFORE_FAULT:
                self._set_fault(c, "meter", FaultKind.METER)
            return
        if c.reading is not None and reading.energy_wh < c.reading.energy_wh:
            # A register must never run backwards; keep the higher value (meter reset).
            LOG.warning("connector %d: meter register went backwards", c.connector_id)
            reading = MeterReading(
                c.reading.energy_wh,
                reading.power_w,
                reading.voltage_v,
                reading.current_a,
                reading.frequency_hz,
                reading.energy_export_wh,
            )
        c.reading = reading
        c.reading_at = self._now_iso()
        if c.meter_failures:
            c.meter_failures = 0
            self._set_fault(c, "meter", None)
        if not c.state.meter_ready:
            LOG.info("connector %d: meter answered, %.0f Wh", c.connector_id, reading.energy_wh)
            self.dispatch(c.connector_id, sm.MeterReady())

    async def _tick_loop(self) -> None:
        last_aligned: int | None = None
        while True:
            await self.clock.sleep(self.tick_interval_s)
            now_s = self.clock.monotonic_s()
            for c in self.connectors.values():
                await self._poll_meter(c)
                if c.state.energy_limit_wh is not None and c.reading is not None:
                    self.dispatch(c.connector_id, sm.EnergyMeasured(c.reading.energy_wh))
                self.dispatch(c.connector_id, sm.Tick(now_s))
                self._maybe_sample(c, now_s)
                self._maybe_persist(c, now_s)
            self._maybe_probe_storage(now_s)
            aligned_s = self.policy.aligned_interval_s
            if aligned_s > 0:
                slot = int(self.clock.utc_now().timestamp()) // aligned_s
                if last_aligned is not None and slot != last_aligned:
                    self._aligned_sample()
                last_aligned = slot
            else:
                last_aligned = None
            self.last_tick_s = self.clock.monotonic_s()

    def _maybe_probe_storage(self, now_s: float) -> None:
        """While the database is not writable (transaction data kept in memory), try to
        write it out every STORAGE_PROBE_INTERVAL_S."""
        if not self.store.degraded:
            self._storage_probe_at_s = None
            return
        if self._storage_probe_at_s is None:
            self._storage_probe_at_s = now_s + STORAGE_PROBE_INTERVAL_S
            return
        if now_s < self._storage_probe_at_s:
            return
        if self.store.flush():
            self._storage_probe_at_s = None
        else:
            self._storage_probe_at_s = now_s + STORAGE_PROBE_INTERVAL_S

    def _maybe_sample(self, c: ConnectorRuntime, now_s: float) -> None:
        interval_s = self.policy.sample_interval_s
        reading = c.live_reading
        if c.tx_key is None or interval_s <= 0 or reading is None or c.reading_at is None:
            # A silent meter gives no sample: the gap shows in the data, and the first
            # sample after it comes from the first good reading (due at once).
            return
        # Due half a tick early: the loop only looks every tick, so "at least interval_s"
        # would space samples interval_s + up to a tick apart (and a crash could lose that
        # much energy); this way the gaps are centred on interval_s.
        if now_s - c.last_sample_s < interval_s - self.tick_interval_s / 2:
            return
        c.last_sample_s = now_s
        assert self.port is not None
        sample = Sample(reading, c.reading_at, "Sample.Periodic", c.state.offered_current_a)
        self.port.meter_values(c.connector_id, c.tx_key, [sample])
        self._keep_for_stop(c, sample)

    def persist_interval_s(self) -> int:
        """How often the reading of a running transaction is made durable: every
        MeterValueSampleInterval, but at least every MAX_PERSIST_INTERVAL_S."""
        sample_s = self.policy.sample_interval_s
        return sample_s if 0 < sample_s <= MAX_PERSIST_INTERVAL_S else MAX_PERSIST_INTERVAL_S

    def _maybe_persist(self, c: ConnectorRuntime, now_s: float) -> None:
        """Bound the energy an unclean stop loses to one persist interval (crash recovery
        bills the last persisted reading), writing only when the register advanced."""
        if c.tx_key is None or c.reading is None:
            return
        if now_s - c.last_persist_s < self.persist_interval_s() - self.tick_interval_s / 2:
            return  # half a tick early, as _maybe_sample
        c.last_persist_s = now_s
        energy_wh = round(c.reading.energy_wh)
        if energy_wh <= c.persisted_wh:
            return  # no energy flowed: no write (flash wear)
        tx = self.store.get_transaction(c.tx_key)
        if tx is not None and tx.last_meter_wh >= energy_wh:
            c.persisted_wh = tx.last_meter_wh  # a MeterValues already stored it
            return
        try:
            self.store.record_meter(c.tx_key, energy_wh, c.reading_at or self._now_iso())
        except StoreError:
            LOG.exception("connector %d: could not persist the reading", c.connector_id)
            return
        c.persisted_wh = energy_wh

    @staticmethod
    def _keep_for_stop(c: ConnectorRuntime, sample: Sample) -> None:
        """Remember a sample for StopTransaction.transactionData, bounded in size."""
        c.samples.append(sample)
        if len(c.samples) > MAX_STOP_TX_SAMPLES:
            # Keep Transaction.Begin and thin out the middle.
            c.samples = c.samples[:1] + c.samples[2::2]

    def _aligned_sample(self) -> None:
        assert self.port is not None
        now = self._now_iso()
        for c in self.connectors.values():
            if c.live_reading is None:
                continue  # no invented sample while the meter is silent
            sample = Sample(c.live_reading, now, "Sample.Clock")
            self.port.meter_values(c.connector_id, c.tx_key, [sample])
            if c.tx_key is not None:
                self._keep_for_stop(c, sample)

    # ------------------------------------------------------------------ policy

    def set_policy(self, policy: ChargingPolicy) -> None:
        """A new charging policy (the CSMS changed the configuration): from the next tick
        on for sampling, at once for the connectors' session rules."""
        self.policy = policy
        if self.started:
            for c in self.connectors.values():
                self._apply_policy(c)

    def _apply_policy(self, c: ConnectorRuntime) -> None:
        self.dispatch(
            c.connector_id,
            sm.SettingsChanged(
                connection_timeout_s=self.policy.connection_timeout_s,
                stop_on_ev_disconnect=self.policy.stop_on_ev_disconnect,
                unlock_on_ev_disconnect=self.policy.unlock_on_ev_disconnect,
            ),
        )

    # ------------------------------------------------------------------ CSMS requests

    def connector_ids(self) -> list[int]:
        return list(self.connectors)

    def view(self, connector_id: int) -> ConnectorView:
        c = self.connectors[connector_id]
        return ConnectorView(
            connector_id=connector_id,
            phase=c.state.phase,
            condition=c.state.condition,
            tx_key=c.tx_key,
            plugged=c.state.vehicle.plugged,
            offered_current_a=c.state.offered_current_a,
            live_reading=c.live_reading,
        )

    def connector_for_tx(self, tx_key: int) -> ConnectorRuntime | None:
        for c in self.connectors.values():
            if c.tx_key == tx_key:
                return c
        return None

    def remote_start(self, connector_id: int | None, id_tag: str) -> int | None:
        """Pick the connector for a RemoteStartTransaction; None means Rejected."""
        candidates = (
            [self.connectors[connector_id]]
            if connector_id is not None
            else sorted(
                self.connectors.values(),
                key=lambda c: (not c.state.vehicle.plugged, c.connector_id),
            )
        )
        for c in candidates:
            if sm.can_start_remotely(c.state) and c.state.authorized_tag is None:
                if c.state.reserved_for is not None and c.state.reserved_for != id_tag:
                    continue
                return c.connector_id
        return None

    def begin_remote(self, connector_id: int, id_tag: str) -> None:
        self.dispatch(connector_id, sm.RemoteStart(id_tag))

    def stop_transaction(self, tx_key: int, reason: sm.StopCause) -> bool:
        c = self.connector_for_tx(tx_key)
        if c is None:
            return False
        self.dispatch(c.connector_id, sm.StopRequest(reason))
        return True

    def deauthorize(self, tx_key: int) -> None:
        """StartTransaction.conf said the idTag is not Accepted (3.5.4 / 4.8, errata 3.17).

        StopTransactionOnInvalidId=true: stop with reason DeAuthorized. False: the
        transaction stays open but energy delivery stops (SuspendedEVSE), after at most
        MaxEnergyOnInvalidId Wh more if that optional key is set (9.1.14).
        """
        c = self.connector_for_tx(tx_key)
        if c is None:
            return  # already stopped
        if self.policy.stop_on_invalid_id:
            self.stop_transaction(tx_key, sm.StopCause.DE_AUTHORIZED)
            return
        max_wh = self.policy.max_energy_on_invalid_id_wh
        limit_wh = (
            round(c.reading.energy_wh) + max_wh
            if max_wh is not None and c.reading is not None
            else None
        )
        LOG.warning(
            "connector %d: idTag of transaction %d invalidated; energy %s",
            c.connector_id,
            tx_key,
            "stopped" if limit_wh is None else f"up to register {limit_wh} Wh",
        )
        self.dispatch(c.connector_id, sm.Deauthorized(limit_wh))
        try:
            # Remembered so that a resumed transaction does not get its energy back.
            self.store.set_setting(
                _DEAUTH_KEY.format(tx_key), "" if limit_wh is None else str(limit_wh)
            )
            c.deauth_marked = True
        except StoreError:
            LOG.exception("could not record the invalidation of transaction %d", tx_key)

    async def stop_all(self, reason: sm.StopCause) -> None:
        for c in self.connectors.values():
            if c.tx_key is not None:
                self.dispatch(c.connector_id, sm.StopRequest(reason))
        # Let the stop tasks read the meters and persist the StopTransactions.
        for _ in range(50):
            if not any(t.get_name().endswith("stop-tx") for t in self._pending_tasks()):
                break
            await asyncio.sleep(0.01)

    def _pending_tasks(self) -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t.get_name().startswith("station:")]

    def change_availability(self, connector_id: int, operative: bool) -> AvailabilityResult:
        """ChangeAvailability (5.2): Accepted, or Scheduled while a transaction runs."""
        targets = (
            list(self.connectors.values()) if connector_id == 0 else [self.connectors[connector_id]]
        )
        value = "Operative" if operative else "Inoperative"
        self.store.set_setting(f"availability.{connector_id}", value)
        if connector_id == 0:
            self.station_operative = operative
            for c in targets:
                self.store.set_setting(f"availability.{c.connector_id}", value)
        scheduled = False
        for c in targets:
            if c.state.tx_active and not operative:
                scheduled = True
            self.dispatch(c.connector_id, sm.AvailabilityChanged(operative))
        return AvailabilityResult.SCHEDULED if scheduled else AvailabilityResult.ACCEPTED

    async def unlock(self, connector_id: int) -> UnlockResult:
        """UnlockConnector (5.18): stop the transaction, then release the cable."""
        c = self.connectors[connector_id]
        if c.hw.lock is None:
            return UnlockResult.NOT_SUPPORTED
        self.dispatch(connector_id, sm.StopRequest(sm.StopCause.UNLOCK_COMMAND))
        ok = await c.hw.lock.unlock()
        return UnlockResult.UNLOCKED if ok else UnlockResult.UNLOCK_FAILED

    def set_csms_online(self, online: bool) -> None:
        """The CSMS connection went up or down: an idle connector's light says "offline"
        (cards then only work from the local list / cache) instead of "available"."""
        if online == self.csms_online:
            return
        self.csms_online = online
        if self.started:
            for c in self.connectors.values():
                self._show_indicator(c)

    def _show_indicator(self, c: ConnectorRuntime) -> None:
        if c.hw.indicator is None:
            return
        shown = _INDICATOR[c.state.phase]
        if shown is IndicatorState.AVAILABLE and not self.csms_online:
            shown = IndicatorState.OFFLINE
        try:
            c.hw.indicator.show(shown)
        except Exception:  # a broken light must not stop charging
            LOG.exception("connector %d: indicator failed", c.connector_id)

    def set_connector_fault(self, connector_id: int, fault: FaultKind | None) -> None:
        """A fault from outside the connector's own inputs (API, simulation, supervisor)."""
        self._set_fault(self.connectors[connector_id], "external", fault)

    # ------------------------------------------------------------------ status

    def snapshot(self) -> dict[str, Any]:
        """The data behind GET /api/status."""
        out = []
        for c in self.connectors.values():
            tx = self.store.get_transaction(c.tx_key) if c.tx_key is not None else None
            energy_wh = c.reading.energy_wh if c.reading else None
            live = c.live_reading
            out.append(
                {
                    "connector": c.connector_id,
                    "status": c.state.phase.value,
                    "error_code": "NoError" if c.state.condition is None else c.state.condition,
                    "vehicle_state": c.state.vehicle.value,
                    "contactor_closed": c.hw.contactor.closed,
                    "offered_current_a": c.state.offered_current_a,
                    "transaction_id": None if tx is None else tx.csms_tx_id,
                    "transaction_key": c.tx_key,
                    "id_tag": c.tx_id_tag if c.tx_key is not None else None,
                    "energy_wh": None if energy_wh is None else round(energy_wh, 1),
                    "session_energy_wh": (
                        round(energy_wh - c.tx_meter_start_wh, 1)
                        if energy_wh is not None and c.tx_key is not None
                        else None
                    ),
                    # A silent meter's last power is not the power now.
                    "power_w": round(live.power_w, 1) if live else None,
                    "meter_ok": live is not None,
                    "meter_reading_at": c.reading_at,
                }
            )
        port = self.port
        return {
            "connectors": out,
            "clock": {
                "utc": iso_utc(self.clock.utc_now()),
                "trusted": getattr(self.clock, "trusted", True),
                "trust_source": getattr(self.clock, "trust_source", "system"),
            },
            "faults": [vars(event).copy() for event in reversed(self.fault_history)],
            "csms": {
                "state": port.connection_state() if port else "none",
                "queued_messages": port.queued_messages() if port else 0,
                "storage": "degraded" if self.store.degraded else "ok",
            },
        }
