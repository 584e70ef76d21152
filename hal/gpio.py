"""Raspberry Pi GPIO drivers (driver name "gpio") on gpiozero: contactor, lock, light, inputs."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from gpiozero import RGBLED, DigitalInputDevice, DigitalOutputDevice, GPIOZeroError
from gpiozero.pins.mock import MockFactory, MockPWMPin

from hal.base import (
    FAULT_KIND_NAMES,
    ConnectorLock,
    Contactor,
    DeviceError,
    FaultCallback,
    FaultInput,
    FaultKind,
    Indicator,
    IndicatorState,
    PhaseSwitch,
    VehicleCallback,
    VehicleInterface,
    VehicleState,
)
from hal.contactor_feedback import FeedbackFault, FeedbackSupervisor
from hal.registry import (
    OFFLINE_KEY,
    REQUIRED,
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

# ctx.shared keys. One pin factory per station: gpiozero reserves pins per factory, and a
# test's MockFactory must see every pin of the station to check their histories.
FACTORY_KEY: Final = "gpio.factory"
# Which dotted key chose the factory from the config; absent when a test injected it.
FACTORY_CHOSEN_BY_KEY: Final = "gpio.factory_chosen_by"
PINS_KEY: Final = "gpio.pins"  # BCM pin -> dotted config key of its first user

# BCM 0 and 1 are the HAT ID EEPROM bus; 28+ are not on the 40-pin header.
MIN_BCM_PIN: Final = 2
MAX_BCM_PIN: Final = 27

PIN_FACTORY_CHOICES: Final = ("default", "mock")

# The spec wants a residual-current trip acted on within 100 ms; a longer debounce would
# eat the budget (lgpio reports a level only after it was stable for the bounce time).
MAX_FAULT_BOUNCE_S: Final = 0.05

# How often an async lock operation looks at its feedback contact.
_LOCK_POLL_S: Final = 0.01


# --- pin factory and pin bookkeeping -----------------------------------------------------


def get_pin_factory(settings: Mapping[str, Any], ctx: DriverContext) -> Any:
    """The station's gpiozero pin factory; None means gpiozero's default (lgpio on a Pi).

    A factory a test put into ``ctx.shared["gpio.factory"]`` wins over the config. Otherwise
    the first gpio device's ``pin_factory`` setting decides, and every later device must
    agree: a contactor silently switching a mock pin on a real Pi would be dangerous.
    """
    wanted = setting_str(settings, "pin_factory", None, ctx, choices=PIN_FACTORY_CHOICES)
    key = ctx.key("pin_factory")
    if ctx.shared.get(OFFLINE_KEY) and FACTORY_KEY not in ctx.shared:
        ctx.shared[FACTORY_KEY] = MockFactory(pin_class=MockPWMPin)  # validate, never drive
    if FACTORY_KEY in ctx.shared:
        factory = ctx.shared[FACTORY_KEY]
        chosen_by = ctx.shared.get(FACTORY_CHOSEN_BY_KEY)
        if chosen_by is not None:
            before = "mock" if isinstance(factory, MockFactory) else "default"
            if (wanted or "default") != before:
                raise DriverConfigError(
                    key,
                    f"all gpio devices of a station must use the same pin factory; "
                    f"{chosen_by} chose {before!r}, this device asks for {wanted or 'default'!r}",
                )
        return factory
    factory = MockFactory(pin_class=MockPWMPin) if wanted == "mock" else None
    ctx.shared[FACTORY_KEY] = factory
    ctx.shared[FACTORY_CHOSEN_BY_KEY] = key
    return factory


def _setting_pin(settings: Mapping[str, Any], name: str, ctx: DriverContext) -> int:
    """A required BCM pin number."""
    return setting_int(settings, name, REQUIRED, ctx, MIN_BCM_PIN, MAX_BCM_PIN)


def _optional_pin(settings: Mapping[str, Any], name: str, ctx: DriverContext) -> int | None:
    """A BCM pin number, or None when absent (or null)."""
    if settings.get(name) is None:
        return None
    return _setting_pin(settings, name, ctx)


class _PinClaim:
    """Pins a driver holds in the station's pin table; released again on close."""

    def __init__(self, ctx: DriverContext, pins: Mapping[str, int | None]) -> None:
        table: dict[int, str] = ctx.shared.setdefault(PINS_KEY, {})
        mine: dict[int, str] = {}
        # Check everything before recording anything, so a failed driver leaves no claims.
        for name, pin in pins.items():
            if pin is None:
                continue
            key = ctx.key(name)
            first = table.get(pin, mine.get(pin))
            if first is not None:
                raise DriverConfigError(key, f"GPIO {pin} is already used by {first}")
            mine[pin] = key
        table.update(mine)
        self._table = table
        self._mine = mine

    def release(self) -> None:
        for pin, key in self._mine.items():
            if self._table.get(pin) == key:
                del self._table[pin]
        self._mine = {}


def _hardware_error(ctx: DriverContext, name: str, exc: Exception) -> DriverConfigError:
    hint = ""
    if isinstance(exc, ImportError):
        hint = '; on a machine without GPIO set pin_factory = "mock"'
    return DriverConfigError(ctx.key(name), f"cannot use this pin: {exc}{hint}")


class _Input:
    """A digital input with its own polarity, independent of the pull resistor.

    gpiozero ties the active state to the pull (pull-up means active low) and refuses
    both at once, so the device is created with the pull only and the polarity is applied
    here: ``asserted`` is True when the pin is at its active level.
    """

    def __init__(
        self,
        pin: int,
        active_high: bool,
        pull_up: bool,
        bounce_time_s: float | None,
        factory: Any,
    ) -> None:
        self.device = DigitalInputDevice(
            pin, pull_up=pull_up, bounce_time=bounce_time_s, pin_factory=factory
        )
        # gpiozero's is_active means "high" without pull-up and "low" with it.
        self._invert = active_high == pull_up
        self._on_change: Callable[[], None] | None = None
        # Both edges go to one handler that reads the level again: it may run late on
        # gpiozero's thread, and the current level is what matters, not the edge.
        self.device.when_activated = self._changed
        self.device.when_deactivated = self._changed

    @property
    def asserted(self) -> bool:
        return bool(self.device.is_active) != self._invert

    def on_change(self, callback: Callable[[], None] | None) -> None:
        self._on_change = callback

    def _changed(self) -> None:
        callback = self._on_change
        if callback is not None:
            callback()

    def close(self) -> None:
        self._on_change = None
        self.device.close()


def _close_all(devices: list[Any]) -> None:
    for device in devices:
        try:
            device.close()
        except Exception:  # closing is best effort; the first error is what matters
            log.debug("closing %r failed", device, exc_info=True)


# --- contactor ---------------------------------------------------------------------------


class GpioContactor(Contactor):
    """A contactor coil on one output, with an optional auxiliary (mirror) contact input.

    ``closed`` is whether the coil is driven. With a feedback contact a monitor thread
    compares the coil with the feedback; a disagreement lasting ``feedback_delay_s`` is a
    ``PowerSwitchFailure``:

    * welded: the feedback says closed while the coil is off. The coil is then never
      driven (``set_closed(True)`` is refused) until the feedback has read open for
      ``feedback_delay_s``; then the fault clears.
    * failed to close (or dropped out): the coil is on but the feedback says open. The coil
      is switched off; the fault clears once the runtime commanded open, the feedback
      agrees and ``retry_delay_s`` has passed, so a broken coil is not retried many times a
      second (the state machine closes again as soon as the fault clears).

    A close refused during a fault is not replayed when it clears: the runtime commands
    again when its model leaves the fault. The decisions are hal/contactor_feedback.py's
    (``FeedbackSupervisor``, shared by any driver with a feedback contact); this class owns
    the pins, the lock and the monitor thread.

    No asyncio inside: ``set_closed`` may be called from any thread, ``on_fault`` is
    called from the monitor thread.
    """

    def __init__(
        self,
        output: Any,
        feedback: _Input | None = None,
        feedback_delay_s: float = 0.3,
        monitor_interval_s: float = 0.1,
        retry_delay_s: float = 30.0,
        claim: _PinClaim | None = None,
    ) -> None:
        self._output = output
        self._feedback = feedback
        self._claim = claim
        # RLock: on_fault is never called under it, but a callback calling set_closed
        # from the monitor thread must not deadlock if that ever changes.
        self._lock = threading.RLock()
        self._driven = False  # what the coil output does
        self._supervisor = FeedbackSupervisor(
            time.monotonic(),
            delay_s=feedback_delay_s,
            retry_delay_s=retry_delay_s,
            recheck_s=monitor_interval_s,
        )
        self._reported: FaultKind | None = None  # last value handed to on_fault
        self._on_fault: FaultCallback | None = None
        self._closed_driver = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        output.off()  # gpiozero already starts it off; say so where the reader looks
        if feedback is not None:
            feedback.on_change(self._wake.set)
            # Started here, not in start_monitor: a welded contact must block the coil even
            # if nobody listens for the fault.
            self._thread = threading.Thread(
                target=self._run, name=f"gpio-contactor-{output.pin}", daemon=True
            )
            self._thread.start()

    # Contactor
    def set_closed(self, closed: bool) -> None:
        closed = bool(closed)
        with self._lock:
            if self._closed_driver:
                if closed:
                    raise DeviceError("contactor driver is closed")
                return
            supervisor = self._supervisor
            supervisor.command(closed, time.monotonic())
            drive = closed and supervisor.may_drive
            if closed and not drive:
                assert supervisor.fault is not None
                log.warning(
                    "contactor stays open: feedback fault (%s) is latched", supervisor.fault.value
                )
            self._drive(drive)
        self._wake.set()

    @property
    def closed(self) -> bool:
        return self._driven

    @property
    def welded(self) -> bool:
        return self._supervisor.fault is FeedbackFault.WELDED

    @property
    def feedback_closed(self) -> bool | None:
        """What the auxiliary contact says; None without a feedback input."""
        return None if self._feedback is None else self._feedback.asserted

    def start_monitor(self, on_fault: FaultCallback) -> None:
        with self._lock:
            self._on_fault = on_fault
            # A fault found before anybody listened is reported now.
            self._reported = None
        self._wake.set()

    def close_driver(self) -> None:
        with self._lock:
            if self._closed_driver:
                return
            self._supervisor.command(False, time.monotonic())
            self._drive(False)
            self._closed_driver = True
            self._on_fault = None
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)
        # The pin becomes a floating input: the coil driver board must hold the coil off
        # then, as it must while the Pi boots.
        _close_all([self._output] + ([self._feedback] if self._feedback is not None else []))
        if self._claim is not None:
            self._claim.release()

    # internals
    def _drive(self, on: bool) -> None:
        """Switch the coil; caller holds the lock. A new command restarts the delay."""
        if on != self._driven:
            if on:
                self._output.on()
            else:
                self._output.off()
            self._driven = on
            self._supervisor.coil_switched()

    def _run(self) -> None:
        while True:
            self._wake.clear()
            with self._lock:
                if self._closed_driver:
                    return
                timeout_s = self._evaluate(time.monotonic())
            self._notify()
            self._wake.wait(timeout_s)

    def _evaluate(self, now_s: float) -> float:
        """Update the fault from coil and feedback; returns how long to sleep. Holds lock."""
        assert self._feedback is not None
        verdict = self._supervisor.evaluate(self._driven, self._feedback.asserted, now_s)
        if verdict.force_off:
            self._drive(False)
        return verdict.recheck_s

    def _notify(self) -> None:
        """Report a changed fault; outside the lock, only ever from the monitor thread."""
        with self._lock:
            code = None if self._supervisor.fault is None else FaultKind.POWER_SWITCH
            callback = self._on_fault
            if callback is None or code == self._reported:
                return
            self._reported = code
        try:
            callback(code)
        except Exception:
            log.exception("contactor fault callback failed")


# --- fault input -------------------------------------------------------------------------


class GpioFaultInput(FaultInput):
    """A safety contact (RCD trip, residual-current monitor relay): asserted = ``code``.

    The level is read when asked (``active_fault``) and on every edge; ``on_change`` runs on
    gpiozero's thread, directly in the edge handler, so the trip latency is gpiozero's.
    """

    def __init__(self, input_: _Input, code: FaultKind, claim: _PinClaim | None = None) -> None:
        self._input = input_
        self._code = FaultKind(code)
        self._claim = claim
        self._lock = threading.RLock()
        self._on_change: FaultCallback | None = None
        self._reported: FaultKind | None = None
        input_.on_change(self._changed)

    def start(self, on_change: FaultCallback) -> None:
        with self._lock:
            self._on_change = on_change
            # The caller reads active_fault right after start(); only changes after that
            # are reported.
            self._reported = self.active_fault

    def stop(self) -> None:
        with self._lock:
            self._on_change = None

    @property
    def active_fault(self) -> FaultKind | None:
        return self._code if self._input.asserted else None

    def close(self) -> None:
        """Release the pin (not part of FaultInput: stop() keeps the input readable)."""
        self.stop()
        self._input.close()
        if self._claim is not None:
            self._claim.release()

    def _changed(self) -> None:
        # Called under the lock so two racing edges cannot report out of order; on_change
        # only queues (call_soon_threadsafe) and returns.
        with self._lock:
            fault = self.active_fault
            if self._on_change is None or fault == self._reported:
                return
            self._reported = fault
            try:
                self._on_change(fault)
            except Exception:
                log.exception("fault input callback failed")


# --- cable lock --------------------------------------------------------------------------


class GpioLock(ConnectorLock):
    """A cable lock: a solenoid (one output, on = locked) or a motor (two outputs pulsed).

    With a feedback contact (asserted = locked), lock/unlock return whether it confirmed
    the new position within ``timeout_s`` (counted from the start of the movement);
    without one they return True once the outputs were driven and ``locked`` is the last
    commanded position.
    """

    def __init__(
        self,
        solenoid: Any | None = None,
        lock_output: Any | None = None,
        unlock_output: Any | None = None,
        feedback: _Input | None = None,
        pulse_s: float = 0.5,
        timeout_s: float = 1.0,
        claim: _PinClaim | None = None,
    ) -> None:
        if (solenoid is None) == (lock_output is None or unlock_output is None):
            raise ValueError("give either a solenoid or both motor outputs")
        self._solenoid = solenoid
        self._lock_output = lock_output
        self._unlock_output = unlock_output
        self._feedback = feedback
        self._pulse_s = pulse_s
        self._timeout_s = timeout_s
        self._claim = claim
        self._commanded_locked = False
        self._moving = asyncio.Lock()  # one movement at a time: never both motor outputs

    async def lock(self) -> bool:
        return await self._move(True)

    async def unlock(self) -> bool:
        return await self._move(False)

    @property
    def locked(self) -> bool:
        if self._feedback is not None:
            return self._feedback.asserted
        return self._commanded_locked

    def close(self) -> None:
        """Release the pins; a solenoid lock falls open, a motor lock stays where it is."""
        outputs = [o for o in (self._solenoid, self._lock_output, self._unlock_output) if o]
        for output in outputs:
            output.off()
        _close_all(outputs + ([self._feedback] if self._feedback is not None else []))
        if self._claim is not None:
            self._claim.release()

    async def _move(self, locked: bool) -> bool:
        async with self._moving:
            loop = asyncio.get_running_loop()
            deadline_s = loop.time() + self._timeout_s
            self._commanded_locked = locked
            if self._solenoid is not None:
                if locked:
                    self._solenoid.on()
                else:
                    self._solenoid.off()
            else:
                await self._pulse(locked)
            if self._feedback is None:
                return True
            while self._feedback.asserted != locked:
                if loop.time() >= deadline_s:
                    log.error(
                        "cable lock did not %s within %.2f s",
                        "lock" if locked else "unlock",
                        self._timeout_s,
                    )
                    return False
                await asyncio.sleep(_LOCK_POLL_S)
            return True

    async def _pulse(self, locked: bool) -> None:
        assert self._lock_output is not None and self._unlock_output is not None
        on, other = (
            (self._lock_output, self._unlock_output)
            if locked
            else (self._unlock_output, self._lock_output)
        )
        # The opposite output goes off first: both on shorts an H-bridge.
        other.off()
        try:
            on.on()
            await asyncio.sleep(self._pulse_s)
        finally:
            on.off()  # also when cancelled: a stalled motor must not stay powered


# --- status light ------------------------------------------------------------------------

_Colour = tuple[float, float, float]
OFF: Final[_Colour] = (0.0, 0.0, 0.0)
RED: Final[_Colour] = (1.0, 0.0, 0.0)
GREEN: Final[_Colour] = (0.0, 1.0, 0.0)
BLUE: Final[_Colour] = (0.0, 0.0, 1.0)
CYAN: Final[_Colour] = (0.0, 1.0, 1.0)
YELLOW: Final[_Colour] = (1.0, 1.0, 0.0)
MAGENTA: Final[_Colour] = (1.0, 0.0, 1.0)
DIM_WHITE: Final[_Colour] = (0.1, 0.1, 0.1)

# state -> (pattern, colour). Patterns: "steady", "blink" (on_s, off_s), "pulse" (fade).
_PATTERNS: Final[dict[IndicatorState, tuple[str, _Colour]]] = {
    IndicatorState.OFF: ("steady", OFF),
    IndicatorState.AVAILABLE: ("steady", GREEN),
    IndicatorState.PREPARING: ("steady", BLUE),
    IndicatorState.CHARGING: ("pulse", BLUE),
    IndicatorState.SUSPENDED: ("steady", YELLOW),
    IndicatorState.FINISHING: ("steady", BLUE),
    IndicatorState.RESERVED: ("steady", MAGENTA),
    IndicatorState.UNAVAILABLE: ("steady", DIM_WHITE),
    IndicatorState.FAULT: ("fast_blink", RED),
    IndicatorState.OFFLINE: ("slow_blink", YELLOW),
}
# Without PWM a channel is only on or off: no fading, no dimming.
_NO_PWM: Final[dict[IndicatorState, tuple[str, _Colour]]] = {
    IndicatorState.CHARGING: ("steady", CYAN),
    IndicatorState.UNAVAILABLE: ("steady", OFF),
}
_BLINK_S: Final = {"fast_blink": (0.25, 0.25), "slow_blink": (1.0, 1.0)}
_PULSE_FADE_S: Final = 1.0


class GpioIndicator(Indicator):
    """An RGB LED; ``show`` starts gpiozero's background thread for patterns, never blocks."""

    def __init__(self, led: Any, pwm: bool = True, claim: _PinClaim | None = None) -> None:
        self._led = led
        self._pwm = pwm
        self._claim = claim
        self.state: IndicatorState | None = None

    @staticmethod
    def pattern_for(state: IndicatorState, pwm: bool = True) -> tuple[str, _Colour]:
        """(pattern, colour) shown for ``state``."""
        if not pwm and state in _NO_PWM:
            return _NO_PWM[state]
        return _PATTERNS[state]

    def show(self, state: IndicatorState) -> None:
        if state is self.state:
            return  # restarting a blink on every repeated call would make it stutter
        self.state = state
        pattern, colour = self.pattern_for(state, self._pwm)
        if pattern == "steady":
            self._led.color = colour  # also stops a running blink/pulse thread
        elif pattern == "pulse":
            self._led.pulse(
                fade_in_time=_PULSE_FADE_S, fade_out_time=_PULSE_FADE_S, on_color=colour
            )
        else:
            on_s, off_s = _BLINK_S[pattern]
            self._led.blink(on_time=on_s, off_time=off_s, on_color=colour, background=True)

    def close(self) -> None:
        _close_all([self._led])
        if self._claim is not None:
            self._claim.release()


# --- phase switch ------------------------------------------------------------------------


class GpioPhaseSwitch(PhaseSwitch):
    """A 1p/3p relay on one output: driven selects one phase, released all three (the
    wired default, also where it rests when evsed stops or the Pi loses power).

    The driver switches when told: that the contactor is open and nothing offered is the
    caller's rule (controller/core/connector.py), not this class's.
    """

    def __init__(self, output: Any, claim: _PinClaim | None = None) -> None:
        self._output = output
        self._claim = claim
        self._lock = threading.Lock()
        output.off()  # all three phases until told otherwise

    def set_phases(self, phases: int) -> None:
        if phases not in (1, 3):
            raise ValueError(f"phases must be 1 or 3, got {phases!r}")
        with self._lock:
            if phases == 1:
                self._output.on()
            else:
                self._output.off()

    @property
    def phases(self) -> int:
        return 1 if self._output.value else 3

    def close_driver(self) -> None:
        with self._lock:
            _close_all([self._output])
            if self._claim is not None:
                self._claim.release()
                self._claim = None


# --- plug-detect vehicle -----------------------------------------------------------------


class GpioPlugVehicle(VehicleInterface):
    """A plug-present switch instead of a control pilot: A unplugged, B plugged.

    Limits: there is no pilot, so the car is never told a current limit and the EVSE
    cannot see whether it wants energy, needs ventilation (D) or has a pilot fault (E/F).
    With ``assume_charging`` a plugged car counts as C while current is offered, so the
    station closes the contactor for an authorized transaction; the car's own charger
    must then be safe on a live socket. Without it the state never leaves B and the
    contactor is never closed (monitoring only). Not IEC 61851-1 conformant by itself.
    """

    def __init__(
        self, plug: _Input, assume_charging: bool = False, claim: _PinClaim | None = None
    ) -> None:
        self._plug = plug
        self._assume_charging = assume_charging
        self._claim = claim
        self._lock = threading.RLock()
        self._max_current_a = 0.0
        self._on_state: VehicleCallback | None = None
        self._state = self._compute()
        plug.on_change(self._update)

    def start(self, on_state: VehicleCallback) -> None:
        with self._lock:
            self._on_state = on_state
        self._update()  # a change between creation and start is reported

    def stop(self) -> None:
        with self._lock:
            self._on_state = None

    @property
    def state(self) -> VehicleState:
        return self._state

    def set_max_current_a(self, current_a: float) -> None:
        if isinstance(current_a, bool) or not isinstance(current_a, int | float):
            raise ValueError(f"current_a must be a number, got {current_a!r}")
        if not current_a >= 0:  # also rejects NaN
            raise ValueError(f"current_a must not be negative, got {current_a!r}")
        with self._lock:
            self._max_current_a = float(current_a)
        self._update()

    @property
    def max_current_a(self) -> float:
        return self._max_current_a

    @property
    def plugged(self) -> bool:
        return self._plug.asserted

    def close(self) -> None:
        self.stop()
        self._plug.close()
        if self._claim is not None:
            self._claim.release()

    def _compute(self) -> VehicleState:
        if not self._plug.asserted:
            return VehicleState.A
        if self._assume_charging and self._max_current_a > 0:
            return VehicleState.C
        return VehicleState.B

    def _update(self) -> None:
        # Under the lock so racing plug edges and current changes report in order.
        with self._lock:
            state = self._compute()
            if state is self._state:
                return
            self._state = state
            if self._on_state is not None:
                try:
                    self._on_state(state)
                except Exception:
                    log.exception("vehicle state callback failed")


# --- registry factories ------------------------------------------------------------------


def _input_settings(
    settings: Mapping[str, Any], ctx: DriverContext, prefix: str = ""
) -> tuple[bool, bool]:
    """(active_high, pull_up) of an input, from ``<prefix>active_high``/``<prefix>pull_up``."""
    active_high = setting_bool(settings, f"{prefix}active_high", True, ctx)
    pull_up = setting_bool(settings, f"{prefix}pull_up", False, ctx)
    return active_high, pull_up


@register_driver("contactor", "gpio")
def _create_contactor(settings: Mapping[str, Any], ctx: DriverContext) -> GpioContactor:
    reject_unknown(
        settings,
        {
            "pin_factory",
            "pin",
            "active_high",
            "feedback_pin",
            "feedback_active_high",
            "feedback_pull_up",
            "feedback_delay_s",
            "monitor_interval_s",
            "retry_delay_s",
        },
        ctx,
    )
    pin = _setting_pin(settings, "pin", ctx)
    active_high = setting_bool(settings, "active_high", True, ctx)
    feedback_pin = _optional_pin(settings, "feedback_pin", ctx)
    fb_active_high, fb_pull_up = _input_settings(settings, ctx, "feedback_")
    feedback_delay_s = setting_float(settings, "feedback_delay_s", 0.3, ctx, 0.01, 10.0)
    monitor_interval_s = setting_float(settings, "monitor_interval_s", 0.1, ctx, 0.005, 1.0)
    retry_delay_s = setting_float(settings, "retry_delay_s", 30.0, ctx, 0.0, 86400.0)
    factory = get_pin_factory(settings, ctx)
    claim = _PinClaim(ctx, {"pin": pin, "feedback_pin": feedback_pin})
    devices: list[Any] = []
    name = "pin"
    try:
        output = DigitalOutputDevice(
            pin, active_high=active_high, initial_value=False, pin_factory=factory
        )
        devices.append(output)
        feedback = None
        if feedback_pin is not None:
            name = "feedback_pin"
            feedback = _Input(feedback_pin, fb_active_high, fb_pull_up, None, factory)
            devices.append(feedback)
        return GpioContactor(
            output,
            feedback,
            feedback_delay_s=feedback_delay_s,
            monitor_interval_s=monitor_interval_s,
            retry_delay_s=retry_delay_s,
            claim=claim,
        )
    except (GPIOZeroError, OSError) as exc:
        _close_all(devices)
        claim.release()
        raise _hardware_error(ctx, name, exc) from exc


@register_driver("phase_switch", "gpio")
def _create_phase_switch(settings: Mapping[str, Any], ctx: DriverContext) -> GpioPhaseSwitch:
    reject_unknown(settings, {"pin_factory", "pin", "active_high"}, ctx)
    pin = _setting_pin(settings, "pin", ctx)
    active_high = setting_bool(settings, "active_high", True, ctx)
    factory = get_pin_factory(settings, ctx)
    claim = _PinClaim(ctx, {"pin": pin})
    try:
        output = DigitalOutputDevice(
            pin, active_high=active_high, initial_value=False, pin_factory=factory
        )
    except (GPIOZeroError, OSError) as exc:
        claim.release()
        raise _hardware_error(ctx, "pin", exc) from exc
    return GpioPhaseSwitch(output, claim=claim)


@register_driver("fault", "gpio")
def _create_fault(settings: Mapping[str, Any], ctx: DriverContext) -> GpioFaultInput:
    reject_unknown(
        settings, {"pin_factory", "pin", "active_high", "pull_up", "code", "bounce_time_s"}, ctx
    )
    pin = _setting_pin(settings, "pin", ctx)
    active_high, pull_up = _input_settings(settings, ctx)
    code = FaultKind(
        setting_str(settings, "code", FaultKind.GROUND.value, ctx, choices=FAULT_KIND_NAMES)
    )
    bounce_time_s: float | None = None
    if settings.get("bounce_time_s") is not None:
        bounce_time_s = setting_float(settings, "bounce_time_s", 0.0, ctx, 0.0)
        if bounce_time_s > MAX_FAULT_BOUNCE_S:
            raise DriverConfigError(
                ctx.key("bounce_time_s"),
                f"must be at most {MAX_FAULT_BOUNCE_S} s, got {bounce_time_s}: the debounce "
                "delays the trip, which must be acted on within 100 ms",
            )
        bounce_time_s = bounce_time_s or None  # 0 means no debounce to gpiozero too
    factory = get_pin_factory(settings, ctx)
    claim = _PinClaim(ctx, {"pin": pin})
    try:
        input_ = _Input(pin, active_high, pull_up, bounce_time_s, factory)
    except (GPIOZeroError, OSError) as exc:
        claim.release()
        raise _hardware_error(ctx, "pin", exc) from exc
    return GpioFaultInput(input_, code, claim=claim)


@register_driver("lock", "gpio")
def _create_lock(settings: Mapping[str, Any], ctx: DriverContext) -> GpioLock:
    reject_unknown(
        settings,
        {
            "pin_factory",
            "pin",
            "lock_pin",
            "unlock_pin",
            "active_high",
            "pulse_s",
            "feedback_pin",
            "feedback_active_high",
            "feedback_pull_up",
            "timeout_s",
        },
        ctx,
    )
    has_solenoid = settings.get("pin") is not None
    has_motor = settings.get("lock_pin") is not None or settings.get("unlock_pin") is not None
    if has_solenoid and has_motor:
        raise DriverConfigError(
            ctx.key("pin"),
            "set either pin (solenoid) or lock_pin and unlock_pin (motor), not both",
        )
    if not has_solenoid and not has_motor:
        raise DriverConfigError(
            ctx.key("pin"),
            "is required; or set lock_pin and unlock_pin for a motor-driven lock",
        )
    pins: dict[str, int | None]
    if has_solenoid:
        pins = {"pin": _setting_pin(settings, "pin", ctx)}
        if settings.get("pulse_s") is not None:
            raise DriverConfigError(
                ctx.key("pulse_s"), "only applies to a motor lock (lock_pin/unlock_pin)"
            )
    else:
        pins = {
            "lock_pin": _setting_pin(settings, "lock_pin", ctx),
            "unlock_pin": _setting_pin(settings, "unlock_pin", ctx),
        }
    active_high = setting_bool(settings, "active_high", True, ctx)
    pulse_s = setting_float(settings, "pulse_s", 0.5, ctx, 0.01, 10.0)
    timeout_s = setting_float(settings, "timeout_s", 1.0, ctx, 0.01, 60.0)
    if has_motor and timeout_s < pulse_s:
        raise DriverConfigError(
            ctx.key("timeout_s"),
            f"must be at least pulse_s ({pulse_s} s): it counts from the start of the pulse",
        )
    feedback_pin = _optional_pin(settings, "feedback_pin", ctx)
    fb_active_high, fb_pull_up = _input_settings(settings, ctx, "feedback_")
    factory = get_pin_factory(settings, ctx)
    claim = _PinClaim(ctx, {**pins, "feedback_pin": feedback_pin})
    devices: list[Any] = []
    outputs: dict[str, Any] = {}
    name = "pin"
    try:
        for name, pin in pins.items():
            outputs[name] = DigitalOutputDevice(
                pin, active_high=active_high, initial_value=False, pin_factory=factory
            )
            devices.append(outputs[name])
        feedback = None
        if feedback_pin is not None:
            name = "feedback_pin"
            feedback = _Input(feedback_pin, fb_active_high, fb_pull_up, None, factory)
            devices.append(feedback)
    except (GPIOZeroError, OSError) as exc:
        _close_all(devices)
        claim.release()
        raise _hardware_error(ctx, name, exc) from exc
    return GpioLock(
        solenoid=outputs.get("pin"),
        lock_output=outputs.get("lock_pin"),
        unlock_output=outputs.get("unlock_pin"),
        feedback=feedback,
        pulse_s=pulse_s,
        timeout_s=timeout_s,
        claim=claim,
    )


@register_driver("indicator", "gpio")
def _create_indicator(settings: Mapping[str, Any], ctx: DriverContext) -> GpioIndicator:
    reject_unknown(
        settings, {"pin_factory", "red_pin", "green_pin", "blue_pin", "active_high", "pwm"}, ctx
    )
    pins = {
        name: _setting_pin(settings, name, ctx) for name in ("red_pin", "green_pin", "blue_pin")
    }
    active_high = setting_bool(settings, "active_high", True, ctx)
    pwm = setting_bool(settings, "pwm", True, ctx)
    factory = get_pin_factory(settings, ctx)
    claim = _PinClaim(ctx, pins)
    try:
        led = RGBLED(
            pins["red_pin"],
            pins["green_pin"],
            pins["blue_pin"],
            active_high=active_high,
            initial_value=OFF,
            pwm=pwm,
            pin_factory=factory,
        )
    except (GPIOZeroError, OSError) as exc:
        claim.release()
        hint = "; set pwm = false if the pins cannot do PWM" if pwm else ""
        raise DriverConfigError(ctx.key("red_pin"), f"cannot use these pins: {exc}{hint}") from exc
    return GpioIndicator(led, pwm=pwm, claim=claim)


@register_driver("vehicle", "gpio")
def _create_vehicle(settings: Mapping[str, Any], ctx: DriverContext) -> GpioPlugVehicle:
    reject_unknown(
        settings,
        {"pin_factory", "plug_pin", "active_high", "pull_up", "bounce_time_s", "assume_charging"},
        ctx,
    )
    pin = _setting_pin(settings, "plug_pin", ctx)
    active_high, pull_up = _input_settings(settings, ctx)
    # A plug switch bounces; every bounce would otherwise be a StatusNotification.
    bounce_time_s = setting_float(settings, "bounce_time_s", 0.05, ctx, 0.0, 1.0) or None
    assume_charging = setting_bool(settings, "assume_charging", False, ctx)
    factory = get_pin_factory(settings, ctx)
    claim = _PinClaim(ctx, {"plug_pin": pin})
    try:
        plug = _Input(pin, active_high, pull_up, bounce_time_s, factory)
    except (GPIOZeroError, OSError) as exc:
        claim.release()
        raise _hardware_error(ctx, "plug_pin", exc) from exc
    return GpioPlugVehicle(plug, assume_charging=assume_charging, claim=claim)
