"""Station runtime: runs the connector state machines and executes their commands on the HAL."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from controller.core import connector as sm
from controller.core.charging_profiles import ChargingProfile, ProfilePurpose, RateUnit
from controller.core.composite import CompositeSchedule
from controller.core.control import AvailabilityResult, ConnectorView, UnlockResult
from controller.core.loadshare import SiteConfig
from controller.core.policy import ChargingPolicy
from controller.core.port import AuthDecision, CsmsPort, Sample, TxStart, TxStop
from controller.core.records import StationRecords, StoreError
from controller.core.reservations import (
    CancelResult,
    Reservation,
    ReservationEnd,
    ReserveResult,
    same_token,
)
from controller.core.safety import wants_current
from controller.core.timestamps import iso_utc
from controller.runtime import snapshot as snap
from controller.runtime.clock import Clock, sleep_or_event
from controller.runtime.connector import ConnectorHardware, ConnectorRuntime
from controller.runtime.control import Control
from controller.runtime.faults import FaultEvent, Faults
from controller.runtime.history import SessionHistory
from controller.runtime.limits import SmartCharging
from controller.runtime.metering import STORAGE_PROBE_INTERVAL_S, Metering
from controller.runtime.recovery import Recovery
from controller.runtime.reservations import Reservations
from controller.runtime.tasks import TaskGroup
from hal.base import FaultKind, IndicatorState, TokenReader, VehicleState

__all__ = [
    "STORAGE_PROBE_INTERVAL_S",
    "ConnectorHardware",
    "ConnectorRuntime",
    "FaultEvent",
    "Station",
]

LOG = logging.getLogger(__name__)

VEHICLE_READY_TIMEOUT_S = 2.0
# While no energy can flow, the meter is read this often to notice a failing meter (a fault
# then makes the loop tick every interval again until it answers or is faulted).
IDLE_METER_POLL_S = 60.0
# Deadlines this close count as due (float noise between the monotonic and UTC clocks).
_EARLY_S = 0.001

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


class Station:
    """Owns the connectors; the CSMS side is reached only through ``CsmsPort``.

    The facade that implements ``core.control.StationControl``: it dispatches events to the
    state machines and executes their commands (contactor, pilot, lock, transactions);
    metering, recovery, faults, control commands and the snapshot are its collaborators.
    """

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
        site: SiteConfig | None = None,
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
            switch = hw.phase_switch
            state = sm.initial_state(
                max_current_a=hw.max_current_a,
                operative=operative,
                now_s=clock.monotonic_s(),
                phases=switch.phases if switch is not None else hw.phases,
                phase_switch=switch is not None,
                phase_switch_pause_s=hw.phase_switch_pause_s,
                phase_switch_settle_s=hw.phase_switch_settle_s,
            )
            self.connectors[index] = ConnectorRuntime(index, hw, state)
        self._tasks = TaskGroup("station")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: list[Callable[[int, sm.Command], None]] = []
        self._events: deque[tuple[int, sm.Event]] = deque()  # see dispatch()
        # The running session's power and offered power over time (status page chart).
        self._history: dict[int, SessionHistory] = {}
        self._dispatching = False
        self._stepping = False  # executing a step's commands (see _now_iso)
        self._step_iso: str | None = None
        self.started = False
        # False while a CSMS is configured but not connected (the client says so); a
        # standalone charger has none to miss.
        self.csms_online = True
        self.online_listeners: list[Callable[[bool], None]] = []
        # Monotonic time the last tick finished (start() counts as one) and whether one is
        # running: the app's watchdog stops pinging systemd when a tick makes no progress.
        self.last_tick_s = clock.monotonic_s()
        self._ticking = False
        # Set by events: the idle tick loop looks again at once (see _tick_loop).
        self._wake = asyncio.Event()
        self.faults = Faults(connectors=self.connectors, clock=clock, dispatch=self.dispatch)
        self.metering = Metering(
            connectors=self.connectors,
            store=store,
            clock=clock,
            policy=self._current_policy,
            port=self._attached_port,
            faults=self.faults,
            dispatch=self.dispatch,
            tick_interval_s=tick_interval_s,
        )
        self.recovery = Recovery(
            connectors=self.connectors,
            store=store,
            clock=clock,
            port=self._attached_port,
            dispatch=self.dispatch,
            boot_id=boot_id,
        )
        self.control = Control(
            connectors=self.connectors,
            store=store,
            policy=self._current_policy,
            dispatch=self.dispatch,
            recovery=self.recovery,
            stopping=self._stops_pending,
        )
        self.smart = SmartCharging(
            records=store,
            clock=clock,
            connectors=self.connectors,
            dispatch=self.dispatch,
            site=site,
        )
        self.reservations = Reservations(
            connectors=self.connectors,
            store=store,
            clock=clock,
            dispatch=self.dispatch,
            station_operative=lambda: self.control.station_operative,
        )
        add_trust_listener = getattr(clock, "add_trust_listener", None)
        if add_trust_listener is not None:
            add_trust_listener(self.metering.on_time_confirmed)

    def _current_policy(self) -> ChargingPolicy:
        return self.policy

    def _attached_port(self) -> CsmsPort:
        assert self.port is not None, "attach_port() first"
        return self.port

    # ------------------------------------------------------------------ lifecycle

    def attach_port(self, port: CsmsPort) -> None:
        self.port = port

    def add_listener(self, listener: Callable[[int, sm.Command], None]) -> None:
        """Observe executed commands, session events included (demo output, tests,
        benchmarks)."""
        self._listeners.append(listener)

    async def start(self) -> None:
        """Read meters, close what an unclean stop left open, then follow the hardware."""
        assert self.port is not None, "attach_port() first"
        self._loop = asyncio.get_running_loop()
        for c in self.connectors.values():
            c.hw.contactor.set_closed(False)  # fail safe, whatever the driver did
            await self.metering.poll(c)
        resumable = self.recovery.open_transactions(resume=self.resume_transactions)
        self.reservations.restore()  # before the boot statuses: Reserved persists (B11.FR.05)
        for c in self.connectors.values():
            self._apply_policy(c)
            c.status_since_s = self.clock.monotonic_s()
            self._report_status(c, c.state.phase, c.state.condition)
            self._show_indicator(c)  # the boot status has no Notify of its own
            c.hw.contactor.start_monitor(
                self._threadsafe(c.connector_id, self.faults.on_contactor_feedback)
            )
            c.hw.vehicle.start(self._threadsafe(c.connector_id, self._on_vehicle))
            await c.hw.vehicle.wait_ready(VEHICLE_READY_TIMEOUT_S)
            if c.hw.fault is not None:
                c.hw.fault.start(self._threadsafe(c.connector_id, self.faults.on_input))
                if c.hw.fault.active_fault:
                    self.faults.set(c, "input", c.hw.fault.active_fault)
            self._on_vehicle(c.connector_id, c.hw.vehicle.state)
            tx = resumable.pop(c.connector_id, None)
            if tx is not None:
                self.recovery.resume_or_close(c, tx)
        if self.reader is not None:
            loop = self._loop

            def on_token(uid: str) -> None:
                loop.call_soon_threadsafe(self.present_token, uid)

            self.reader.start(on_token)
        self.last_tick_s = self.clock.monotonic_s()
        self._tasks.spawn(self._tick_loop(), name="tick", critical=True)
        self._tasks.spawn(self.smart.run(), name="smart-charging", critical=True)
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

    # ------------------------------------------------------------------ events

    def dispatch(self, connector_id: int, event: sm.Event) -> None:
        """Feed an event to the connector's state machine and execute its commands.

        Run to completion: an event raised while commands are executing (a fault from a
        failing driver, a limit from a transaction that just started) is queued and
        stepped after the current step's commands, never in the middle of them, so the
        hardware always follows the states in order and no stale command of an earlier
        state runs after a later one.
        """
        if not isinstance(event, sm.Tick):
            self._wake.set()
            now_s = self.clock.monotonic_s()
            if self.connectors[connector_id].state.now_s < now_s:
                # The idle loop does not tick: bring the machine's clock up to now first,
                # so that what this event stamps (authorized_at_s) and what time alone
                # would have ended by now (ConnectionTimeOut) are right.
                self._events.append((connector_id, sm.Tick(now_s)))
        self._events.append((connector_id, event))
        if self._dispatching:
            return
        self._dispatching = True
        failure: BaseException | None = None
        try:
            while self._events:
                cid, next_event = self._events.popleft()
                try:
                    self._step(cid, next_event)
                except Exception as exc:  # the next queued events still run
                    LOG.exception("connector %d: executing %s failed", cid, next_event)
                    failure = failure or exc
        finally:
            self._dispatching = False
        # A fault, an availability change or a session may end or move a reservation. Once
        # the queue is empty, so that what it dispatches is stepped at once (its own
        # dispatches re-enter here; sync() guards against running twice).
        self.reservations.sync()
        if failure is not None:
            raise failure

    def _step(self, connector_id: int, event: sm.Event) -> None:
        c = self.connectors[connector_id]
        shared = self.smart.shares_site and not isinstance(event, sm.CurrentLimitChanged)
        if shared and not wants_current(c.state):
            trial, _ = sm.step(c.state, event)  # pure: nothing executed
            if wants_current(trial):
                # A session begins to want current under a shared (site) limit: the others
                # are lowered and its share set before this step offers anything.
                first, then = self.smart.make_room(connector_id, trial)
                for cid, limit_event in first:
                    self._step_only(cid, limit_event)
                for cid, limit_event in then:
                    self._events.append((cid, limit_event))  # after this step
        old = self._step_only(connector_id, event)
        if shared and (
            wants_current(old) != wants_current(c.state)
            or old.vehicle.requests_energy != c.state.vehicle.requests_energy
        ):
            # Ended, paused or resumed: share again (the raised limits queue after this).
            self.smart.refresh()

    def _step_only(self, connector_id: int, event: sm.Event) -> sm.ConnectorState:
        """Step one state machine and execute its commands; the state before."""
        c = self.connectors[connector_id]
        old = c.state
        c.state, commands = sm.step(c.state, event)
        if c.state.condition != old.condition:
            self.faults.note(c, c.state.condition)
        if c.state.contactor_closed and not old.contactor_closed:
            LOG.info("connector %d: contactor permitted by %s", connector_id, event)
        outer = self._stepping
        self._stepping = True
        try:
            for command in commands:
                self._execute(c, command)
        finally:
            self._stepping = outer
            if not outer:
                self._step_iso = None
        return old

    def _on_vehicle(self, connector_id: int, state: VehicleState) -> None:
        c = self.connectors[connector_id]
        self.faults.vehicle_changed(c, state)
        self.dispatch(connector_id, sm.VehicleChanged(state))

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

        def mine(c: ConnectorRuntime) -> bool:  # reserved for this card
            reserved = c.state.reserved_for
            return reserved is not None and same_token(reserved, id_tag) and not c.state.tx_active

        def waiting(c: ConnectorRuntime) -> bool:  # plugged in, waiting for a card
            s = c.state
            return s.vehicle.plugged and not s.tx_active and not s.finishing and s.operative

        def own_reservation(c: ConnectorRuntime) -> bool:  # not one for any connector
            r = self.reservations.on_connector(c.connector_id)
            return r is not None and not r.any_connector

        for c in conns:  # the card that started a transaction stops it
            if c.state.tx_active and c.state.authorized_tag == id_tag:
                return c.connector_id
        candidates = (
            # plugged in and reserved for this card
            lambda c: waiting(c) and mine(c),
            # the connector reserved for this card (ReserveNow for that connector)
            lambda c: mine(c) and own_reservation(c),
            # plugged in and waiting (a reservation for any connector is used there, too)
            lambda c: waiting(c) and (c.state.reserved_for is None or c.state.reserved_parent),
            # the connector kept for this card by a reservation for any connector
            mine,
            # plugged in but reserved for another driver: refused there (5.13)
            waiting,
            # tap first, plug later
            lambda c: c.state.phase is sm.Phase.AVAILABLE,
            # reserved for a group: maybe this card's parent idTag (5.13)
            lambda c: (
                c.state.reserved_parent is not None
                and c.state.authorizing is None
                and c.state.operative
                and not c.state.tx_active
            ),
            # any running transaction: maybe a group card to stop it
            lambda c: c.state.tx_active,
        )
        for wanted in candidates:
            for c in conns:
                if wanted(c):
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
                    self._loop.call_soon(self.faults.set, c, "store", FaultKind.INTERNAL)
                else:
                    self._switch(c, on)
            case sm.SwitchPhases(phases=n):
                self._switch_phases(c, n)
            case sm.SetCurrentLimit(current_a=amps):
                try:
                    c.hw.vehicle.set_max_current_a(amps)
                except Exception:
                    LOG.exception("connector %d: setting pilot current failed", c.connector_id)
                    self.faults.set(c, "pilot", FaultKind.EV_COMMUNICATION)
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
                if rid is not None:
                    self.reservations.used(rid)  # 5.13 (1): the transaction ends it
            case sm.StopTx(reason=reason, id_tag=tag):
                self._stop_tx(c, reason, tag)
            case sm.PhaseChanged(phase=phase, condition=condition):
                c.status_since_s = self.clock.monotonic_s()
                self._show_indicator(c)
                self._report_status(c, phase, condition)
            case sm.SessionEvent(kind=kind, resumed=resumed):
                if kind is sm.SessionEventKind.TRANSACTION_STARTED and c.tx_key is not None:
                    started_at = self._tx_started_at(c.tx_key) if resumed else self.clock.utc_now()
                    self.smart.transaction_started(c.connector_id, c.tx_key, started_at)
                elif kind is sm.SessionEventKind.AUTHORIZATION_CANCELLED:
                    self.smart.set_pending_tx_profile(c.connector_id, None)
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
            self._loop.call_soon(self.faults.set, c, "contactor", FaultKind.POWER_SWITCH)

    def _switch_phases(self, c: ConnectorRuntime, phases: int) -> None:
        """Move the phase relay (the state machine has kept the contactor open and offered
        nothing for the pause); the limits are then computed again for the new phases."""
        assert c.hw.phase_switch is not None
        LOG.info(
            "connector %d: switching to %d phase%s",
            c.connector_id,
            phases,
            "" if phases == 1 else "s",
            extra={"connector": c.connector_id},
        )
        try:
            c.hw.phase_switch.set_phases(phases)
        except Exception:
            LOG.exception("connector %d: phase switch failed", c.connector_id)
            # Deferred like a contactor failure: we are inside dispatch.
            assert self._loop is not None
            self._loop.call_soon(self.faults.set, c, "phase_switch", FaultKind.POWER_SWITCH)
        self.smart.refresh()  # W limits and shares follow the phases switched in

    async def _move_lock(self, c: ConnectorRuntime, lock: bool) -> None:
        assert c.hw.lock is not None
        ok = await (c.hw.lock.lock() if lock else c.hw.lock.unlock())
        self.faults.lock_moved(c, lock, ok)

    async def _authorize(self, connector_id: int, id_tag: str) -> None:
        assert self.port is not None
        try:
            decision = await self.port.authorize(id_tag)
        except Exception:
            LOG.exception("authorization of %s failed", id_tag)
            decision = AuthDecision(False, "Invalid", source="error")
        LOG.info("card %s: %s (%s)", id_tag, decision.status, decision.source)
        accepted = decision.accepts_at(connector_id)
        if decision.accepted and not accepted:
            LOG.info("card %s: not for connector %d", id_tag, connector_id)
        if accepted:
            # A reservation for any connector that admits this driver is used here.
            self.reservations.claim(connector_id, id_tag, decision.parent_id_tag)
        self.dispatch(connector_id, sm.AuthResult(id_tag, accepted, decision.parent_id_tag))

    def _now_iso(self) -> str:
        """Now as UTC ISO 8601; one instant for all commands of one step (a status, a start
        and its session events happen at the same time, and are stamped once)."""
        if self._step_iso is not None:
            return self._step_iso
        now = iso_utc(self.clock.utc_now())
        if self._stepping:
            self._step_iso = now
        return now

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
            tx_key = self.port.start_transaction(
                TxStart(c.connector_id, id_tag, energy_wh, now, reservation_id)
            )
        except StoreError:
            LOG.exception("connector %d: transaction start could not be recorded", c.connector_id)
            return
        c.attach_tx(
            tx_key,
            id_tag,
            energy_wh,
            persisted_wh=energy_wh,  # begin_transaction stored it as the last reading
            now_s=self.clock.monotonic_s(),
            samples=[Sample(c.reading, now, "Transaction.Begin")],
            deauth_marked=False,
        )
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
        self.smart.transaction_ended(tx_key)
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
        await self.metering.poll(c)
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
        self.recovery.clear_deauth_mark(tx_key, known=deauth_marked)
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

    # ------------------------------------------------------------------ periodic work

    async def _tick_loop(self) -> None:
        """Tick every ``tick_interval_s`` while energy may flow (or the meter needs watching);
        otherwise sleep until the next thing that time alone changes, or an event.

        Idle, the loop wakes only for a meter health read every IDLE_METER_POLL_S, a state
        machine timeout, a reservation's expiry, a clock-aligned sample or a storage probe:
        an idle charger costs almost no CPU (issue 16). Any event from the hardware, the
        CSMS or the API wakes it at once (``dispatch``), so it ticks again as soon as a
        session begins.
        """
        while True:
            self._wake.clear()
            self.last_tick_s = self.clock.monotonic_s()
            self._ticking = False
            delay_s = self._next_tick_in_s()
            if delay_s is None:
                await self.clock.sleep(self.tick_interval_s)
            else:
                await sleep_or_event(self.clock.sleep(delay_s), self._wake)
            self._ticking = True
            await self._tick()

    async def _tick(self) -> None:
        now_s = self.clock.monotonic_s()
        busy = any(self._busy(c) for c in self.connectors.values())
        for c in self.connectors.values():
            if busy or self._meter_poll_due(c, now_s):
                await self.metering.poll(c)
            self.metering.measure_energy(c)
            self.dispatch(c.connector_id, sm.Tick(now_s))
            self.metering.maybe_sample(c, now_s)
            self.metering.maybe_persist(c, now_s)
            self._record_history(c, now_s)
        self.metering.maybe_probe_storage(now_s)
        self.reservations.tick(self.clock.utc_now())
        self.metering.maybe_aligned(self.clock.utc_now())

    def _busy(self, c: ConnectorRuntime) -> bool:
        """Whether the connector needs a tick every interval: energy may flow (a transaction
        or a closed contactor: samples, billing, limits), or the meter has not answered yet
        or is failing (MeterReady, the meter fault)."""
        s = c.state
        return (
            c.tx_key is not None
            or s.tx_active
            or s.contactor_closed
            or not s.meter_ready
            or c.meter_failures > 0
        )

    def _meter_poll_due(self, c: ConnectorRuntime, now_s: float) -> bool:
        return c.polled_s is None or now_s - c.polled_s >= IDLE_METER_POLL_S - _EARLY_S

    def _next_tick_in_s(self) -> float | None:
        """Seconds until the next tick that changes anything, or None: tick every
        ``tick_interval_s`` (a connector is busy, or the database is being probed)."""
        if self.store.degraded or any(self._busy(c) for c in self.connectors.values()):
            return None
        now_s = self.clock.monotonic_s()
        utc_now = self.clock.utc_now()
        delays = [IDLE_METER_POLL_S]
        for c in self.connectors.values():
            due_s = sm.tick_due_at_s(c.state)
            if due_s is not None:
                delays.append(due_s - now_s)
            if c.polled_s is not None:
                delays.append(c.polled_s + IDLE_METER_POLL_S - now_s)
        expiry = self.reservations.next_expiry()
        if expiry is not None:
            delays.append((expiry - utc_now).total_seconds())
        aligned_s = self.metering.next_aligned_in_s(utc_now)
        if aligned_s is not None:
            delays.append(aligned_s)
        delay_s = min(delays)
        # Something already due (or a clock that stepped) is done at the next regular tick:
        # never a loop that spins on a deadline in the past.
        return delay_s if delay_s > _EARLY_S else self.tick_interval_s

    def tick_stalled_for_s(self) -> float:
        """How long the tick loop has been stuck in one tick (a meter read that does not
        return, say), counted from the end of the previous one; 0 while it sleeps."""
        if not self._ticking:
            return 0.0
        return self.clock.monotonic_s() - self.last_tick_s

    def _record_history(self, c: ConnectorRuntime, now_s: float) -> None:
        if c.tx_key is None:
            self._history.pop(c.connector_id, None)
            return
        history = self._history.get(c.connector_id)
        if history is None or history.tx_key != c.tx_key:
            tx = self.store.get_transaction(c.tx_key)
            started_at = tx.started_at if tx is not None else self._now_iso()
            history = SessionHistory(c.tx_key, c.tx_started_s, started_at)
            self._history[c.connector_id] = history
        live = c.live_reading
        history.add(now_s, None if live is None else live.power_w, c.offered_power_w)

    def session_history(self, connector_id: int) -> dict[str, Any] | None:
        """The running session's power against its offered power (None: no session)."""
        history = self._history.get(connector_id)
        if history is None or self.connectors[connector_id].tx_key != history.tx_key:
            return None
        return history.as_json()

    def persist_interval_s(self) -> int:
        return self.metering.persist_interval_s()

    def _stops_pending(self) -> bool:
        """Whether a transaction's stop is still reading its meter or being recorded."""
        return any(t.get_name().endswith("stop-tx") for t in self._pending_tasks())

    def _pending_tasks(self) -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t.get_name().startswith("station:")]

    # ------------------------------------------------------------------ policy

    def set_policy(self, policy: ChargingPolicy) -> None:
        """A new charging policy (the CSMS changed the configuration): from the next tick
        on for sampling, at once for the connectors' session rules."""
        self.policy = policy
        self._wake.set()  # sample intervals may have changed
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

    # ------------------------------------------------------------------ StationControl

    @property
    def station_operative(self) -> bool:
        return self.control.station_operative

    def connector_ids(self) -> list[int]:
        return list(self.connectors)

    def view(self, connector_id: int) -> ConnectorView:
        return snap.view(self.connectors[connector_id])

    def connector_for_tx(self, tx_key: int) -> ConnectorRuntime | None:
        return self.control.connector_for_tx(tx_key)

    def remote_start(
        self, connector_id: int | None, id_tag: str, parent_id_tag: str | None = None
    ) -> int | None:
        return self.control.remote_start(connector_id, id_tag, parent_id_tag)

    def begin_remote(
        self,
        connector_id: int,
        id_tag: str,
        tx_profile: ChargingProfile | None = None,
        parent_id_tag: str | None = None,
    ) -> None:
        self.smart.set_pending_tx_profile(connector_id, tx_profile)
        self.reservations.claim(connector_id, id_tag, parent_id_tag)
        self.control.begin_remote(connector_id, id_tag, parent_id_tag)

    # ------------------------------------------------------------------ smart charging

    def running_transactions(self) -> dict[int, int]:
        return {cid: c.tx_key for cid, c in self.connectors.items() if c.tx_key is not None}

    def installed_profiles(self, backend: str | None = None) -> tuple[ChargingProfile, ...]:
        return self.smart.profiles_of(backend)

    def add_profile_backend(self, backend: str) -> None:
        """A backend besides the primary that may install its own profiles (an energy
        manager): its stored profiles apply from now on, combined as the minimum."""
        self.smart.add_backend(backend)

    def install_profile(
        self,
        profile: ChargingProfile,
        *,
        same_level_replaces: bool = True,
        backend: str | None = None,
    ) -> None:
        self.smart.install(profile, same_level_replaces=same_level_replaces, backend=backend)

    def clear_profiles(
        self,
        *,
        profile_id: int | None = None,
        connector_id: int | None = None,
        purpose: ProfilePurpose | None = None,
        stack_level: int | None = None,
        backend: str | None = None,
    ) -> int:
        return self.smart.clear(
            profile_id=profile_id,
            connector_id=connector_id,
            purpose=purpose,
            stack_level=stack_level,
            backend=backend,
        )

    def composite_schedule(
        self, connector_id: int, duration_s: int, unit: RateUnit | None = None
    ) -> CompositeSchedule:
        return self.smart.composite(connector_id, duration_s, unit)

    def set_local_limit(self, connector_id: int, limit_a: Decimal, timeout_s: float) -> None:
        """A local limit (home energy manager, PV script) on a connector or, with 0, the
        station; it falls back to ``[site] fallback_current_a`` unless set again within
        ``timeout_s``."""
        self.smart.set_local_limit(connector_id, limit_a, timeout_s)

    def clear_local_limit(self, connector_id: int) -> bool:
        return self.smart.clear_local_limit(connector_id)

    def on_local_limit(self, listener: Callable[[int, Decimal | None], None]) -> None:
        self.smart.add_local_limit_listener(listener)

    @property
    def fallback_current_a(self) -> Decimal:
        return self.smart.fallback_current_a

    def _tx_started_at(self, tx_key: int) -> datetime:
        """When the transaction started (its record; now if unreadable)."""
        tx = self.store.get_transaction(tx_key)
        if tx is not None:
            try:
                return datetime.fromisoformat(tx.started_at.replace("Z", "+00:00"))
            except ValueError:
                pass
        return self.clock.utc_now()

    def stop_transaction(self, tx_key: int, reason: sm.StopCause) -> bool:
        return self.control.stop_transaction(tx_key, reason)

    def deauthorize(self, tx_key: int) -> None:
        self.control.deauthorize(tx_key)

    async def stop_all(self, reason: sm.StopCause) -> None:
        await self.control.stop_all(reason)

    def change_availability(
        self, connector_id: int, operative: bool, *, cascade: bool = True
    ) -> AvailabilityResult:
        return self.control.change_availability(connector_id, operative, cascade=cascade)

    async def unlock(self, connector_id: int) -> UnlockResult:
        return await self.control.unlock(connector_id)

    def reserve(self, reservation: Reservation, *, any_connector_supported: bool) -> ReserveResult:
        return self.reservations.reserve(
            reservation, any_connector_supported=any_connector_supported
        )

    def cancel_reservation(self, reservation_id: int) -> CancelResult:
        return self.reservations.cancel(reservation_id)

    def current_reservations(self) -> list[Reservation]:
        return self.reservations.all()

    def on_reservation_ended(self, listener: Callable[[Reservation, ReservationEnd], None]) -> None:
        self.reservations.add_listener(listener)

    def set_csms_online(self, online: bool) -> None:
        """The CSMS connection went up or down: an idle connector's light says "offline"
        (cards then only work from the local list / cache) instead of "available"."""
        if online == self.csms_online:
            return
        self.csms_online = online
        for listener in self.online_listeners:
            listener(online)
        if self.started:
            for c in self.connectors.values():
                self._show_indicator(c)

    def set_connector_fault(self, connector_id: int, fault: FaultKind | None) -> None:
        """A fault from outside the connector's own inputs (API, simulation, supervisor)."""
        self.faults.external(connector_id, fault)

    def snapshot(self) -> dict[str, Any]:
        """The data behind GET /api/status."""
        return snap.snapshot(
            connectors=self.connectors.values(),
            store=self.store,
            clock=self.clock,
            port=self.port,
            faults=reversed(self.faults.history),
            limits=self.smart.limit,
            reservations=self.reservations,
        )

    def local_limits(self) -> list[dict[str, Any]]:
        """The local limits set through the API (GET /api/limit)."""
        return [{"connector": cid, **details} for cid, details in self.smart.local_limits().items()]
