"""Stateful simulated drivers (driver name "sim") with linked vehicle, contactor and meter."""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from hal.base import (
    FAULT_KIND_NAMES,
    ConnectorLock,
    Contactor,
    DeviceError,
    EnergyMeter,
    FaultCallback,
    FaultInput,
    FaultKind,
    Indicator,
    IndicatorState,
    MeterReading,
    PhaseSwitch,
    TokenCallback,
    TokenReader,
    VehicleCallback,
    VehicleInterface,
    VehicleState,
)
from hal.registry import (
    DriverConfigError,
    DriverContext,
    register_driver,
    reject_unknown,
    setting_bool,
    setting_float,
    setting_int,
    setting_str,
)

log = logging.getLogger(__name__)

DEFAULT_VOLTAGE_V: Final = 230.0
DEFAULT_PHASES: Final = 3
DEFAULT_CAR_POWER_W: Final = 11000.0
GRID_FREQUENCY_HZ: Final = 50.0

# OCPP 1.6 ChargePointErrorCode values that name a fault (everything except NoError).

# 4 to 20 bytes of UID, as hex: covers 4/7/10-byte ISO 14443 UIDs and longer vendor IDs.
_UID_RE: Final = re.compile(r"(?:[0-9A-Fa-f]{2}){4,20}")

_READER_KEY: Final = "sim.reader"


def _finite_non_negative(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    if value < 0:
        raise ValueError(f"{what} must not be negative, got {value!r}")
    return float(value)


class SimRig:
    """The physics of one simulated connector: who draws how much power, and when.

    Not thread-safe: drive the simulation from one thread (the event loop). Every change
    that alters the power flow calls ``_integrate`` first, so the meter integrates each
    piecewise-constant power segment exactly.
    """

    def __init__(
        self,
        monotonic_s: Callable[[], float],
        connector_id: int = 1,
        voltage_v: float = DEFAULT_VOLTAGE_V,
        phases: int = DEFAULT_PHASES,
    ) -> None:
        self.connector_id = connector_id
        self.monotonic_s = monotonic_s
        self.voltage_v = DEFAULT_VOLTAGE_V
        self.phases = DEFAULT_PHASES
        self.vehicle: SimVehicle | None = None
        self.contactor: SimContactor | None = None
        self.meter: SimMeter | None = None
        self.lock: SimLock | None = None
        self.indicator: SimIndicator | None = None
        self.fault: SimFaultInput | None = None
        self.phase_switch: SimPhaseSwitch | None = None
        self.configure(voltage_v=voltage_v, phases=phases)

    def configure(self, voltage_v: float | None = None, phases: int | None = None) -> None:
        """Change the supply; integrates first because power per ampere changes."""
        if voltage_v is not None:
            voltage_v = _finite_non_negative(voltage_v, "voltage_v")
            if voltage_v <= 0:
                raise ValueError("voltage_v must be positive")
        if phases is not None and phases not in (1, 3):
            raise ValueError(f"phases must be 1 or 3, got {phases!r}")
        self._integrate()
        if voltage_v is not None:
            self.voltage_v = voltage_v
        if phases is not None:
            self.phases = phases

    def power_w(self) -> float:
        """Power flowing into the car right now."""
        if self.vehicle is None:
            return 0.0
        closed = self.contactor is not None and self.contactor.physically_closed
        return self.vehicle.drawn_power_w(closed)

    def _integrate(self) -> None:
        if self.meter is not None:
            self.meter._integrate()


def get_rig(ctx: DriverContext) -> SimRig:
    """The rig of ``ctx.connector_id``, created by whichever sim driver asks first."""
    key = f"sim.rig.{ctx.connector_id}"
    rig = ctx.shared.get(key)
    if not isinstance(rig, SimRig):
        rig = SimRig(ctx.monotonic_s, connector_id=ctx.connector_id)
        ctx.shared[key] = rig
    return rig


class SimControl:
    """Drives the simulated devices of one station by connector number (plug, card, vehicle
    state, fault), for the local API's /api/sim endpoints and the demo: whoever drives the
    simulation needs no knowledge of rigs or of the driver registry's shared dict.

    Errors: ``LookupError`` when the connector (or the station) has no such simulated device.
    """

    def __init__(self, shared: dict[str, Any]) -> None:
        self._shared = shared

    @property
    def simulated(self) -> bool:
        return any(key.startswith("sim.") for key in self._shared)

    def _vehicle(self, connector_id: int) -> SimVehicle:
        rig = self._shared.get(f"sim.rig.{connector_id}")
        if not isinstance(rig, SimRig) or rig.vehicle is None:
            raise LookupError(f"connector {connector_id} has no simulated vehicle")
        return rig.vehicle

    def plug(self, connector_id: int) -> None:
        self._vehicle(connector_id).plug()

    def unplug(self, connector_id: int) -> None:
        self._vehicle(connector_id).unplug()

    def vehicle(self, connector_id: int, state: VehicleState, power_w: float | None) -> None:
        self._vehicle(connector_id).set_state(state, power_w=power_w)

    def card(self, uid: str) -> bool:
        """Present a card at the simulated reader; False when it was not delivered."""
        reader = self._shared.get(_READER_KEY)
        if not isinstance(reader, SimTokenReader):
            raise LookupError('no simulated reader configured ([reader] driver = "sim")')
        return reader.present(uid)

    def fault(self, connector_id: int, code: str | None) -> bool:
        """Raise (a FaultKind name) or clear the connector's simulated fault input; False
        when the connector has a simulated vehicle but no simulated fault input."""
        rig = self._shared.get(f"sim.rig.{connector_id}")
        self._vehicle(connector_id)  # a simulated connector at all
        assert isinstance(rig, SimRig)
        if rig.fault is None:
            return False
        if code is None:
            rig.fault.clear()
        else:
            rig.fault.inject(code)
        return True


class SimVehicle(VehicleInterface):
    """A car on the control pilot.

    The car's wish (``set_state``) and the EVSE's offer (``set_max_current_a``) combine into
    the effective state: a car that wants energy shows C/D only while current is offered,
    otherwise it waits in B, as a real car does on a pilot without PWM.
    """

    def __init__(self, rig: SimRig, power_w: float = DEFAULT_CAR_POWER_W) -> None:
        self._rig = rig
        self._power_w = _finite_non_negative(power_w, "power_w")
        self._wanted = VehicleState.A
        # The state plug() returns to: the car's last energy wish (B, C or D).
        self._plug_state = VehicleState.C
        self._max_current_a = 0.0
        self._state = VehicleState.A
        self._on_state: VehicleCallback | None = None
        rig._integrate()
        rig.vehicle = self

    # VehicleInterface
    def start(self, on_state: VehicleCallback) -> None:
        """Register ``on_state``; it is not called for the current state, read ``state``."""
        self._on_state = on_state

    def stop(self) -> None:
        self._on_state = None

    @property
    def state(self) -> VehicleState:
        return self._state

    def set_max_current_a(self, current_a: float) -> None:
        current_a = _finite_non_negative(current_a, "current_a")
        self._rig._integrate()
        self._max_current_a = current_a
        self._update()

    @property
    def max_current_a(self) -> float:
        return self._max_current_a

    # simulation control
    @property
    def power_w(self) -> float:
        """What the car would draw if allowed (its on-board charger limit)."""
        return self._power_w

    @property
    def wanted_state(self) -> VehicleState:
        """The state the car shows when the EVSE offers current."""
        return self._wanted

    def plug(self) -> None:
        """Plug the car in; it returns to its last wish (B, C or D). No-op when plugged."""
        if self._wanted is VehicleState.A:
            self._set_wanted(self._plug_state)

    def unplug(self) -> None:
        """Pull the cable; this also clears a forced E/F state."""
        self._set_wanted(VehicleState.A)

    def set_state(self, state: VehicleState, power_w: float | None = None) -> None:
        """Set what the car does; ``power_w`` changes its on-board charger power."""
        if not isinstance(state, VehicleState):
            raise ValueError(f"state must be a VehicleState, got {state!r}")
        if power_w is not None:
            power_w = _finite_non_negative(power_w, "power_w")
        self._rig._integrate()
        if power_w is not None:
            self._power_w = power_w
        if state in (VehicleState.B, VehicleState.C, VehicleState.D):
            self._plug_state = state
        self._set_wanted(state)

    def drawn_power_w(self, contactor_closed: bool) -> float:
        """Power the car takes: only with the contactor closed, in C/D, within the offer."""
        if not contactor_closed or not self._state.requests_energy:
            return 0.0
        offered_w = self._max_current_a * self._rig.voltage_v * self._rig.phases
        return min(self._power_w, offered_w)

    def _set_wanted(self, state: VehicleState) -> None:
        self._rig._integrate()
        self._wanted = state
        self._update()

    def _update(self) -> None:
        effective = self._wanted
        if effective.requests_energy and self._max_current_a <= 0:
            effective = VehicleState.B
        if effective is self._state:
            return
        self._state = effective
        # Called last: the callback may re-enter (e.g. set_max_current_a(0)) and must see
        # the new state already in place.
        if self._on_state is not None:
            self._on_state(effective)


class SimContactor(Contactor):
    """A contactor with optional welded contacts; ``closed`` is the commanded state."""

    def __init__(self, rig: SimRig, welded: bool = False) -> None:
        self._rig = rig
        self._weld_on_close = welded
        self._commanded = False
        self._physical = False
        self.history: list[tuple[float, bool]] = []  # (monotonic_s, commanded) per call
        rig._integrate()
        rig.contactor = self

    def set_closed(self, closed: bool) -> None:
        # Integrate first: the power segment up to now belongs to the old position.
        self._rig._integrate()
        self._commanded = bool(closed)
        if self._commanded or not (self._weld_on_close and self._physical):
            self._physical = self._commanded
        self.history.append((self._rig.monotonic_s(), self._commanded))

    @property
    def closed(self) -> bool:
        return self._commanded

    @property
    def physically_closed(self) -> bool:
        """Where the contacts really are; this is what lets current through."""
        return self._physical

    @property
    def welded(self) -> bool:
        return self._physical and not self._commanded


class SimMeter(EnergyMeter):
    """An energy meter integrating the rig's power over the injected monotonic clock.

    With ``state_file`` the register survives restarts like a real meter's non-volatile
    register; it is saved atomically at most every ``save_interval_s`` and on close.
    """

    def __init__(
        self,
        rig: SimRig,
        initial_energy_wh: float = 0.0,
        state_file: str | os.PathLike[str] | None = None,
        save_interval_s: float = 10.0,
    ) -> None:
        self._rig = rig
        self._state_file = Path(state_file) if state_file is not None else None
        self._save_interval_s = _finite_non_negative(save_interval_s, "save_interval_s")
        self._energy_wh = _finite_non_negative(initial_energy_wh, "initial_energy_wh")
        if self._state_file is not None:
            stored = self._load(self._state_file)
            if stored is not None:
                self._energy_wh = stored
        self._failing = False
        # Whatever flowed before this meter existed is not ours to count.
        rig._integrate()
        self._last_s = rig.monotonic_s()
        self._saved_s = self._last_s
        self._saved_energy_wh: float | None = None
        rig.meter = self

    @staticmethod
    def _load(path: Path) -> float | None:
        """The stored register, None if there is no file yet; ValueError if corrupt."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
            energy_wh = data["energy_wh"]
            return _finite_non_negative(energy_wh, "energy_wh")
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"meter state file {path} is corrupt: {exc}") from exc

    @property
    def energy_wh(self) -> float:
        """The import register, up to date."""
        self._integrate()
        return self._energy_wh

    def fail(self, on: bool) -> None:
        """Make ``read`` raise DeviceError (the register keeps counting, as it would)."""
        self._failing = on

    async def read(self) -> MeterReading:
        self._integrate()
        if self._failing:
            raise DeviceError("simulated meter does not answer")
        rig = self._rig
        power_w = rig.power_w()
        current_a = power_w / rig.voltage_v / rig.phases if power_w > 0 else 0.0
        return MeterReading(
            energy_wh=self._energy_wh,
            power_w=power_w,
            voltage_v=(rig.voltage_v,) * rig.phases,
            current_a=(current_a,) * rig.phases,
            frequency_hz=GRID_FREQUENCY_HZ,
        )

    async def close_driver(self) -> None:
        self._integrate()
        self.save()

    def save(self) -> None:
        """Write the register now (tmp file + os.replace, so a crash never leaves half a file)."""
        path = self._state_file
        if path is None:
            return
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"energy_wh": self._energy_wh}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        self._saved_s = self._last_s
        self._saved_energy_wh = self._energy_wh

    def _integrate(self) -> None:
        """Add the energy of the segment since the last call at the current power."""
        now_s = self._rig.monotonic_s()
        elapsed_s = now_s - self._last_s
        if elapsed_s > 0:
            self._energy_wh += self._rig.power_w() * elapsed_s / 3600.0
        # A clock that went backwards (it should not) restarts the segment instead of
        # subtracting energy: the register must never decrease.
        self._last_s = now_s
        if (
            self._state_file is not None
            and now_s - self._saved_s >= self._save_interval_s
            and self._energy_wh != self._saved_energy_wh
        ):
            try:
                self.save()
            except OSError:
                # A full disk must not stop the meter; the next interval retries.
                log.warning("cannot save simulated meter register", exc_info=True)
                self._saved_s = now_s


class SimTokenReader(TokenReader):
    """A card reader; ``present`` simulates holding a card to it."""

    def __init__(self) -> None:
        self._on_token: TokenCallback | None = None

    def start(self, on_token: TokenCallback) -> None:
        self._on_token = on_token

    def stop(self) -> None:
        self._on_token = None

    def present(self, uid: str) -> bool:
        """Deliver ``uid`` (4-20 bytes of hex); False when the reader is not started."""
        if not isinstance(uid, str) or _UID_RE.fullmatch(uid) is None:
            raise ValueError(f"UID must be 8-40 hex digits (4-20 bytes), got {uid!r}")
        if self._on_token is None:
            return False
        self._on_token(uid.upper())
        return True


class SimLock(ConnectorLock):
    """A cable lock that moves at once, or not at all while failing."""

    def __init__(self, fail: bool = False) -> None:
        self._locked = False
        self._failing = fail

    def set_failing(self, on: bool) -> None:
        self._failing = on

    async def lock(self) -> bool:
        if self._failing:
            return False
        self._locked = True
        return True

    async def unlock(self) -> bool:
        if self._failing:
            return False
        self._locked = False
        return True

    @property
    def locked(self) -> bool:
        return self._locked


class SimIndicator(Indicator):
    """A status light that remembers what it was told to show."""

    def __init__(self) -> None:
        self.state = IndicatorState.OFF
        self.history: list[IndicatorState] = []

    def show(self, state: IndicatorState) -> None:
        self.state = state
        self.history.append(state)


class SimPhaseSwitch(PhaseSwitch):
    """A simulated 1p/3p relay: it sets the rig's phases (the power the car draws per
    ampere) and records every move with the rig's clock and the contactor's position."""

    def __init__(self, rig: SimRig) -> None:
        self._rig = rig
        self._phases = rig.phases
        # (monotonic_s, phases, contactor physically closed) per move
        self.history: list[tuple[float, int, bool]] = []
        rig.phase_switch = self

    def set_phases(self, phases: int) -> None:
        if phases not in (1, 3):
            raise ValueError(f"phases must be 1 or 3, got {phases!r}")
        if phases == self._phases:
            return
        self._rig.configure(phases=phases)
        self._phases = phases
        closed = self._rig.contactor is not None and self._rig.contactor.physically_closed
        self.history.append((self._rig.monotonic_s(), phases, closed))

    @property
    def phases(self) -> int:
        return self._phases


class SimFaultInput(FaultInput):
    """A safety input whose fault is injected by tests or the simulation control API."""

    def __init__(self) -> None:
        self._fault: FaultKind | None = None
        self._on_change: FaultCallback | None = None

    def start(self, on_change: FaultCallback) -> None:
        self._on_change = on_change

    def stop(self) -> None:
        self._on_change = None

    @property
    def active_fault(self) -> FaultKind | None:
        return self._fault

    def inject(self, code: str) -> None:
        """Raise the fault named ``code`` (a ``FaultKind`` value such as GroundFailure)."""
        if code not in FAULT_KIND_NAMES:
            raise ValueError(
                f"unknown fault code {code!r}; use one of {', '.join(sorted(FAULT_KIND_NAMES))}"
            )
        self._set(FaultKind(code))

    def clear(self) -> None:
        self._set(None)

    def _set(self, fault: FaultKind | None) -> None:
        if fault == self._fault:
            return
        self._fault = fault
        if self._on_change is not None:
            self._on_change(fault)


# --- registry factories ------------------------------------------------------------------


@register_driver("vehicle", "sim")
def _create_vehicle(settings: Mapping[str, Any], ctx: DriverContext) -> SimVehicle:
    reject_unknown(settings, {"power_w", "voltage_v", "phases"}, ctx)
    power_w = setting_float(settings, "power_w", DEFAULT_CAR_POWER_W, ctx, 0.0, 1_000_000.0)
    voltage_v = setting_float(settings, "voltage_v", DEFAULT_VOLTAGE_V, ctx, 1.0, 1000.0)
    phases = setting_int(settings, "phases", DEFAULT_PHASES, ctx, choices=(1, 3))
    rig = get_rig(ctx)
    rig.configure(voltage_v=voltage_v, phases=phases)
    return SimVehicle(rig, power_w=power_w)


@register_driver("contactor", "sim")
def _create_contactor(settings: Mapping[str, Any], ctx: DriverContext) -> SimContactor:
    reject_unknown(settings, {"welded"}, ctx)
    return SimContactor(get_rig(ctx), welded=setting_bool(settings, "welded", False, ctx))


@register_driver("phase_switch", "sim")
def _create_phase_switch(settings: Mapping[str, Any], ctx: DriverContext) -> SimPhaseSwitch:
    reject_unknown(settings, set(), ctx)
    return SimPhaseSwitch(get_rig(ctx))


@register_driver("meter", "sim")
def _create_meter(settings: Mapping[str, Any], ctx: DriverContext) -> SimMeter:
    reject_unknown(settings, {"initial_energy_wh", "state_file", "save_interval_s"}, ctx)
    initial_energy_wh = setting_float(settings, "initial_energy_wh", 0.0, ctx, min_value=0.0)
    state_file = setting_str(settings, "state_file", None, ctx)
    save_interval_s = setting_float(settings, "save_interval_s", 10.0, ctx, min_value=0.0)
    try:
        return SimMeter(
            get_rig(ctx),
            initial_energy_wh=initial_energy_wh,
            state_file=state_file,
            save_interval_s=save_interval_s,
        )
    except (ValueError, OSError) as exc:
        raise DriverConfigError(
            ctx.key("state_file"),
            f"{exc}; fix or delete the file (the register then restarts at initial_energy_wh)",
        ) from exc


@register_driver("reader", "sim")
def _create_reader(settings: Mapping[str, Any], ctx: DriverContext) -> SimTokenReader:
    reject_unknown(settings, set(), ctx)
    reader = SimTokenReader()
    # Station-wide, so the simulation control API finds it without a connector id.
    ctx.shared[_READER_KEY] = reader
    return reader


@register_driver("lock", "sim")
def _create_lock(settings: Mapping[str, Any], ctx: DriverContext) -> SimLock:
    reject_unknown(settings, {"fail"}, ctx)
    lock = SimLock(fail=setting_bool(settings, "fail", False, ctx))
    get_rig(ctx).lock = lock
    return lock


@register_driver("indicator", "sim")
def _create_indicator(settings: Mapping[str, Any], ctx: DriverContext) -> SimIndicator:
    reject_unknown(settings, set(), ctx)
    indicator = SimIndicator()
    get_rig(ctx).indicator = indicator
    return indicator


@register_driver("fault", "sim")
def _create_fault(settings: Mapping[str, Any], ctx: DriverContext) -> SimFaultInput:
    reject_unknown(settings, set(), ctx)
    fault = SimFaultInput()
    get_rig(ctx).fault = fault
    return fault
