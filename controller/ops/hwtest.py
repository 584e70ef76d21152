"""`evsed hw-test`: interactive bring-up of the real hardware, one device at a time.

Steps (in this order; per connector unless noted):

* ``meter``     one reading: energy, power, voltages, currents, frequency
* ``vehicle``   the IEC 61851 control pilot state with its meaning
* ``reader``    (station-wide) waits for a card and prints its UID / idTag
* ``lock``      locks and unlocks the cable lock, after a confirmation
* ``indicator`` cycles the status light through every state
* ``contactor`` closes the contactor for a moment, only after typing YES

Every failure is translated into a diagnosis and a fix (``explain_error``) for the usual
bring-up mistakes: a wrong serial port, a wrong unit id or baud rate, missing permissions on
the serial port or GPIO, pcscd not running, no reader plugged in. The contactor is always
opened again (``finally``), the vehicle interface never offers current, and every driver is
released at the end of its step.
"""

from __future__ import annotations

import asyncio
import errno
import getpass
import inspect
import os
import re
import socket
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from controller.config import Config, DeviceConfig
from hal.base import IndicatorState, MeterReading, VehicleState
from hal.pcsc_diag import (
    SCARD_E_NO_READERS_AVAILABLE,
    SCARD_E_NO_SERVICE,
    SCARD_E_SERVICE_STOPPED,
    PcscProblem,
    list_readers,
)
from hal.registry import DriverConfigError, DriverContext, create_driver

STEPS: Final = ("meter", "vehicle", "reader", "lock", "indicator", "contactor")
STATION_STEPS: Final = frozenset({"reader"})

VEHICLE_MEANINGS: Final = {
    VehicleState.A: "no vehicle connected",
    VehicleState.B: "vehicle connected, not requesting energy",
    VehicleState.C: "vehicle connected, requesting energy",
    VehicleState.D: "vehicle connected, requesting energy, ventilation required",
    VehicleState.E: "error: control pilot shorted to PE or diode missing, no power",
    VehicleState.F: "EVSE not available (pilot at -12 V, or the pilot board does not answer)",
}

PASS: Final = "PASS"
FAIL: Final = "FAIL"
SKIP: Final = "SKIP"


# --- diagnosis ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Diagnosis:
    """What went wrong, in words a technician acts on, and what to do about it."""

    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.problem}: {self.fix}" if self.fix else self.problem


class CardTimeout(Exception):
    """No card was presented within the time given."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"no card within {timeout_s:g} s")
        self.timeout_s = timeout_s


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes / contexts, outermost first, without loops."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _is(exc: BaseException, class_name: str) -> bool:
    """Class test by name: the Modbus / gpiozero modules need not be importable here."""
    return any(cls.__name__ == class_name for cls in type(exc).__mro__)


def _group_for(path: str) -> str:
    if "gpio" in path:
        return "gpio"
    if path.startswith("/dev/bus/usb") or "hidraw" in path:
        return "plugdev"
    if path.startswith(("/dev/tty", "/dev/serial", "/dev/rs485")):
        return "dialout"
    return "dialout/gpio"


def _is_device(path: str) -> bool:
    return path.startswith(("/dev/", "/sys/")) or path == "?"


def _permission(path: str, user: str) -> Diagnosis:
    if not _is_device(path):
        return Diagnosis(
            f"permission denied on {path}", f"check its owner and mode (`ls -l {path}`)"
        )
    group = _group_for(path)
    if "/" in group:
        command = f"sudo usermod -aG dialout {user}; sudo usermod -aG gpio {user}"
    else:
        command = f"sudo usermod -aG {group} {user}"
    return Diagnosis(
        f"permission denied on {path}",
        f"add the user to the {group} group ({command}) and log in again",
    )


def _missing(path: str) -> Diagnosis:
    if not _is_device(path):
        return Diagnosis(f"{path} does not exist", "check the path in the config file")
    if "gpio" in path:
        return Diagnosis(
            f"{path} does not exist",
            "this machine has no GPIO chip (not a Raspberry Pi?); for a dry run set "
            'pin_factory = "mock" in the gpio driver sections',
        )
    return Diagnosis(
        f"serial port {path} does not exist",
        "check the adapter and `ls /dev/serial/by-id` (use that stable name as port)",
    )


def _busy(path: str) -> Diagnosis:
    return Diagnosis(
        f"{path} is in use by another program",
        "stop it first (a running evsed: `sudo systemctl stop evsed`; "
        "ModemManager or a serial console also grab serial ports)",
    )


_OPEN_PORT_RE: Final = re.compile(r"could not open port (\S+?):?\s")
_ERRNO_RE: Final = re.compile(r"\[Errno (\d+)\]")


def _os_error(exc: BaseException, settings: Mapping[str, Any], user: str) -> Diagnosis | None:
    """FileNotFoundError, PermissionError, EBUSY and pyserial's "could not open port"."""
    text = str(exc)
    match = _OPEN_PORT_RE.search(text)
    path = getattr(exc, "filename", None) or (match.group(1) if match else None)
    code = getattr(exc, "errno", None)
    if not isinstance(code, int) or code not in (errno.ENOENT, errno.EACCES, errno.EPERM):
        found = _ERRNO_RE.search(text)
        code = int(found.group(1)) if found else code
    if isinstance(exc, FileNotFoundError) or code == errno.ENOENT:
        return _missing(str(path or settings.get("port") or "?"))
    if isinstance(exc, PermissionError) or code in (errno.EACCES, errno.EPERM):
        return _permission(str(path or settings.get("port") or "?"), user)
    if code == errno.EBUSY:
        return _busy(str(path or settings.get("port") or "the device"))
    if match:
        return Diagnosis(
            f"cannot open serial port {match.group(1)}",
            "check the adapter (`dmesg | tail`) and that no other program uses it",
        )
    return None


def _line(settings: Mapping[str, Any]) -> str:
    if settings.get("host"):
        return f"{settings['host']}:{settings.get('tcp_port') or 502}"
    baud = settings.get("baudrate") or 9600
    frame = (
        f"{settings.get('bytesize') or 8}{settings.get('parity') or 'N'}"
        f"{settings.get('stopbits') or 1}"
    )
    port = settings.get("port")
    return f"{baud} baud ({frame}{f' on {port}' if port else ''})"


def _modbus_not_connected(settings: Mapping[str, Any], user: str) -> Diagnosis:
    host = settings.get("host")
    if host:
        where = f"{host}:{settings.get('tcp_port') or 502}"
        return Diagnosis(
            f"cannot connect to the Modbus TCP gateway {where}",
            "check the IP address, tcp_port (usually 502), the network cable and that the "
            "gateway is powered",
        )
    port = settings.get("port")
    if not isinstance(port, str):
        return Diagnosis("cannot open the Modbus port", "check the port setting")
    if not os.path.exists(port):
        return _missing(port)
    if not os.access(port, os.R_OK | os.W_OK):
        return _permission(port, user)
    return Diagnosis(
        f"cannot open serial port {port} although it exists",
        "is another program using it (a running evsed: `sudo systemctl stop evsed`; a serial "
        "console on /dev/serial0: disable it with `sudo raspi-config`)? Is it a serial port?",
    )


def _pcsc(exc: PcscProblem) -> Diagnosis:
    if exc.code in (SCARD_E_NO_SERVICE, SCARD_E_SERVICE_STOPPED):
        return Diagnosis(
            "pcscd is not running",
            "install and start it: `sudo apt install pcscd` and "
            "`sudo systemctl enable --now pcscd.socket`",
        )
    if exc.code == SCARD_E_NO_READERS_AVAILABLE or (not exc.readers and exc.pattern is None):
        return Diagnosis(
            "no card reader found",
            "plug in the USB reader and check `lsusb` and `pcsc_scan`; an ACR122U needs the "
            "kernel NFC modules blacklisted (pn533_usb, pn533, nfc in "
            "/etc/modprobe.d/blacklist-nfc.conf) and the libacsccid1 or libccid driver",
        )
    if exc.pattern is not None and exc.readers:
        return Diagnosis(
            f"no card reader matches {exc.pattern!r} (readers found: "
            f"{', '.join(repr(r) for r in exc.readers)})",
            "fix reader.reader in the config (a part of the name, or remove it to use any)",
        )
    if exc.pattern is not None:
        return Diagnosis(
            f"no card reader found (looking for {exc.pattern!r})",
            "plug in the USB reader and check `lsusb` and `pcsc_scan`",
        )
    return Diagnosis(f"PC/SC error: {exc}", "check `pcsc_scan` and `journalctl -u pcscd`")


_MISSING_LIBRARIES: Final = {
    "smartcard": (
        "pyscard is not installed",
        "install it into evsed's venv (`.venv/bin/pip install pyscard`; it needs "
        "`sudo apt install libpcsclite-dev swig` to build) and install pcscd",
    ),
    "pymodbus": ("pymodbus is not installed", "`.venv/bin/pip install pymodbus`"),
    "serial": ("pyserial is not installed", "`.venv/bin/pip install pyserial`"),
    "gpiozero": ("gpiozero is not installed", "`.venv/bin/pip install gpiozero lgpio`"),
}


def _missing_module(text: str) -> Diagnosis | None:
    for module, (problem, fix) in _MISSING_LIBRARIES.items():
        if f"No module named '{module}" in text:
            return Diagnosis(problem, fix)
    return None


def _gpio_factory_problem() -> Diagnosis:
    chips = sorted(
        f"/dev/{n}"
        for n in (os.listdir("/dev") if os.path.isdir("/dev") else ())
        if n.startswith("gpiochip")
    )
    if not chips:
        return _missing("/dev/gpiochip0")
    for chip in chips:
        if not os.access(chip, os.R_OK | os.W_OK):
            return _permission(chip, getpass.getuser())
    return Diagnosis(
        "gpiozero could not load a GPIO library",
        "install lgpio into evsed's venv (`.venv/bin/pip install lgpio`; "
        "`sudo apt install liblgpio-dev swig` first)",
    )


def explain_error(
    exc: BaseException,
    role: str = "",
    settings: Mapping[str, Any] | None = None,
    user: str | None = None,
) -> Diagnosis:
    """Translate what a driver raised into a diagnosis and a fix.

    ``role`` and ``settings`` (the driver section of the config) fill in what the exception
    does not say: the port, the unit id, the baud rate.
    """
    settings = settings or {}
    user = user or _current_user()
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, PcscProblem):
            return _pcsc(e)
        if isinstance(e, CardTimeout):
            return Diagnosis(
                f"no card presented within {e.timeout_s:g} s",
                "hold the card flat on the reader for a second; if the reader does not beep "
                "or blink, check it with `pcsc_scan`",
            )
        if isinstance(e, ModuleNotFoundError):
            found = _missing_module(f"No module named '{e.name}'")
            if found is not None:
                return found
    for e in chain:
        text = str(e)
        found = _missing_module(text)
        if found is not None:
            return found
        if isinstance(e, OSError) or "could not open port" in text:
            diagnosis = _os_error(e, settings, user)
            if diagnosis is not None:
                return diagnosis
    for e in chain:
        if _is(e, "ModbusTimeout"):
            unit = settings.get("unit_id") or 1
            return Diagnosis(
                f"no answer from unit id {unit} at {_line(settings)}",
                "check unit id, baud rate, parity, A/B wiring and termination "
                "(A/B swapped is the most common mistake; 120 ohm only at both line ends)",
            )
        if _is(e, "ModbusExceptionResponse"):
            code = getattr(e, "code", "?")
            unit = settings.get("unit_id") or 1
            hint = (
                "the register map does not fit this device: check the model setting"
                if code in (1, 2, 3)
                else "the device is busy or failing; try again, then power-cycle it"
            )
            return Diagnosis(f"unit id {unit} answered with Modbus exception {code}", hint)
        if _is(e, "ModbusNotConnected"):
            return _modbus_not_connected(settings, user)
    for e in chain:
        text = str(e)
        if _is(e, "BadPinFactory") or "Unable to load any default pin factory" in text:
            return _gpio_factory_problem()
        if "gpiochip" in text or "GPIO busy" in text:
            if "busy" in text.lower():
                return _busy("the GPIO pin")
            return _gpio_factory_problem()
    if isinstance(exc, DriverConfigError):
        return Diagnosis(
            f"configuration error at {exc.key or 'the driver section'}: {exc.reason}",
            "fix this key in the config file (`evsed check-config FILE` checks it)",
        )
    for e in chain:
        if _is(e, "DeviceError"):
            return Diagnosis(f"{role or 'device'} error: {e}", "check wiring and power")
    if isinstance(exc, TimeoutError):
        return Diagnosis(f"the {role or 'device'} did not answer in time", "check wiring and power")
    return Diagnosis(f"{type(exc).__name__}: {exc}", "see the message above")


def _current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in a container
        return "evsed"


# --- the run -----------------------------------------------------------------------------


@dataclass
class StepResult:
    step: str
    connector: int | None  # None for station-wide steps
    status: str  # PASS / FAIL / SKIP
    detail: str = ""


@dataclass
class _Run:
    config: Config
    ask: Callable[[str], str]
    out: Callable[[str], None]
    shared: dict[str, Any]
    card_timeout_s: float
    contactor_hold_s: float
    indicator_step_s: float
    feedback_settle_s: float
    results: list[StepResult] = field(default_factory=list)

    def confirm(self, prompt: str, default: bool = False) -> bool:
        try:
            answer = self.ask(prompt).strip().lower()
        except EOFError:
            return False
        if not answer:
            return default
        return answer in ("y", "yes")

    def create(self, role: str, dev: DeviceConfig, connector_id: int) -> Any:
        return create_driver(
            role,
            dev.driver,
            dev.settings,
            DriverContext(connector_id, shared=self.shared, key_prefix=dev.key),
        )

    def fail(self, step: str, connector: int | None, exc: BaseException, dev: DeviceConfig) -> None:
        diagnosis = explain_error(exc, step, dev.settings)
        self.out(f"  FAIL: {diagnosis.problem}")
        self.out(f"  fix:  {diagnosis.fix}")
        details = str(exc)
        if details and details not in diagnosis.problem:
            self.out(f"  (details: {type(exc).__name__}: {details})")
        self.results.append(StepResult(step, connector, FAIL, diagnosis.problem))


async def release(device: Any) -> None:
    """Close a driver however it is closed (async ``aclose`` / ``close_driver``, ``close``)."""
    for name in ("aclose", "close_driver", "close"):
        method = getattr(device, name, None)
        if callable(method):
            result = method()
            if inspect.isawaitable(result):
                await result
            return


def _fmt_phases(values: tuple[float, ...], unit: str, digits: int) -> str:
    if not values:
        return "not provided by this meter"
    return "  ".join(f"L{i} {v:.{digits}f} {unit}" for i, v in enumerate(values, 1))


def format_reading(reading: MeterReading) -> list[str]:
    """The lines the meter step prints."""
    lines = [
        f"energy import  {reading.energy_wh:.1f} Wh ({reading.energy_wh / 1000:.3f} kWh)",
        f"power          {reading.power_w:.1f} W",
        f"voltage        {_fmt_phases(reading.voltage_v, 'V', 1)}",
        f"current        {_fmt_phases(reading.current_a, 'A', 2)}",
        "frequency      "
        + (
            f"{reading.frequency_hz:.2f} Hz"
            if reading.frequency_hz is not None
            else "not provided by this meter"
        ),
    ]
    if reading.energy_export_wh is not None:
        lines.append(f"energy export  {reading.energy_export_wh:.1f} Wh")
    return lines


def _reading_notes(reading: MeterReading) -> list[str]:
    notes = []
    if reading.voltage_v and all(v < 1 for v in reading.voltage_v):
        notes.append("all voltages read 0 V: no mains on the meter, or the wrong register map")
    elif any(not 150 <= v <= 280 for v in reading.voltage_v if v >= 1):
        notes.append("a voltage is outside 150..280 V: check the register map (scale, word order)")
    if reading.frequency_hz is not None and not 45 <= reading.frequency_hz <= 65:
        notes.append("frequency is not near 50/60 Hz: check the register map")
    return notes


async def _step_meter(run: _Run, connector_id: int, dev: DeviceConfig) -> None:
    meter = None
    try:
        meter = run.create("meter", dev, connector_id)
        run.out(f"  reading the meter ({dev.driver}) ...")
        reading = await asyncio.wait_for(meter.read(), 30.0)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a diagnosis
        run.fail("meter", connector_id, exc, dev)
        return
    finally:
        if meter is not None:
            await _quiet_release(run, meter)
    for line in format_reading(reading):
        run.out(f"  {line}")
    for note in _reading_notes(reading):
        run.out(f"  note: {note}")
    run.results.append(
        StepResult(
            "meter", connector_id, PASS, f"{reading.energy_wh:.1f} Wh, {reading.power_w:.0f} W"
        )
    )


async def _step_vehicle(run: _Run, connector_id: int, dev: DeviceConfig) -> None:
    vehicle = None
    started = False
    try:
        vehicle = run.create("vehicle", dev, connector_id)
        poll_once = getattr(vehicle, "poll_once", None)
        if callable(poll_once):
            # A polled pilot board: one poll surfaces the bus errors its loop would hide.
            # The setpoint stays 0 A ("no charging"), so nothing is offered to the vehicle.
            state = await asyncio.wait_for(poll_once(), 30.0)
        else:
            vehicle.start(lambda _state: None)
            started = True
            # A polled board reports F until it answered once (VehicleInterface.wait_ready).
            await vehicle.wait_ready(1.0)
            state = vehicle.state
    except Exception as exc:  # noqa: BLE001
        run.fail("vehicle", connector_id, exc, dev)
        return
    finally:
        if vehicle is not None:
            await _stop_and_release(run, vehicle, stop=vehicle.stop if started else None)
    meaning = VEHICLE_MEANINGS.get(state, "unknown")
    run.out(f"  vehicle state {state.value}: {meaning}")
    if state in (VehicleState.E, VehicleState.F):
        hint = (
            "check the CP wire, the diode in the vehicle / test box and the pilot board"
            if state is VehicleState.E
            else "check the pilot board's power and its link (unit id, wiring)"
        )
        run.out(f"  FAIL: {hint}")
        run.results.append(StepResult("vehicle", connector_id, FAIL, f"{state.value}: {meaning}"))
        return
    run.out("  (plug a vehicle or a test box in and run again to see the state change)")
    run.results.append(StepResult("vehicle", connector_id, PASS, f"{state.value}: {meaning}"))


async def _step_reader(run: _Run, dev: DeviceConfig) -> None:
    reader = None
    started = False
    try:
        if dev.driver == "pcsc":
            pattern = dev.settings.get("reader")
            readers = await asyncio.to_thread(
                list_readers, pattern if isinstance(pattern, str) else None
            )
            run.out(f"  PC/SC reader: {readers[0]}")
        reader = run.create("reader", dev, 0)
        loop = asyncio.get_running_loop()
        got: asyncio.Future[str] = loop.create_future()

        def deliver(uid: str) -> None:
            if not got.done():
                got.set_result(uid)

        def on_token(uid: str) -> None:  # may run in the reader's thread
            loop.call_soon_threadsafe(deliver, uid)

        reader.start(on_token)
        started = True
        run.out(f"  hold a card to the reader (waiting up to {run.card_timeout_s:g} s) ...")
        try:
            uid = await asyncio.wait_for(got, run.card_timeout_s)
        except TimeoutError:
            raise CardTimeout(run.card_timeout_s) from None
    except Exception as exc:  # noqa: BLE001
        run.fail("reader", None, exc, dev)
        return
    finally:
        if reader is not None:
            await _stop_and_release(
                run, reader, stop=reader.stop if started else None, in_thread=True
            )
    run.out(f"  card UID {uid} -> idTag {uid}")
    if run.config.csms is None:
        sa = run.config.standalone
        if sa.free_vend:
            run.out("  standalone free_vend: any card may charge")
        elif uid.upper() in sa.id_tags:
            run.out("  this card is in standalone.id_tags: it may charge")
        else:
            run.out(f'  not in standalone.id_tags: add "{uid}" there to let it charge')
    else:
        run.out("  the CSMS decides whether this idTag may charge")
    run.results.append(StepResult("reader", None, PASS, f"UID {uid}"))


async def _step_lock(run: _Run, connector_id: int, dev: DeviceConfig) -> None:
    lock = None
    try:
        lock = run.create("lock", dev, connector_id)
        if not run.confirm(
            f"  lock and unlock the cable lock of connector {connector_id}? keep fingers out "
            "of the socket [y/N] "
        ):
            run.out("  skipped (not confirmed)")
            run.results.append(StepResult("lock", connector_id, SKIP, "not confirmed"))
            return
        ok_lock = await asyncio.wait_for(lock.lock(), 30.0)
        run.out(f"  lock:   {'confirmed locked' if ok_lock else 'NOT confirmed'}")
        ok_unlock = await asyncio.wait_for(lock.unlock(), 30.0)
        run.out(f"  unlock: {'confirmed unlocked' if ok_unlock else 'NOT confirmed'}")
    except Exception as exc:  # noqa: BLE001
        run.fail("lock", connector_id, exc, dev)
        return
    finally:
        if lock is not None:
            try:
                if lock.locked:
                    await asyncio.wait_for(lock.unlock(), 30.0)
            except Exception as exc:  # noqa: BLE001
                run.out(f"  warning: could not unlock again: {exc}")
            await _quiet_release(run, lock)
    if ok_lock and ok_unlock:
        run.results.append(StepResult("lock", connector_id, PASS, "locked and unlocked"))
        return
    run.out(
        "  FAIL: the lock did not confirm its position: check the motor / solenoid wiring and "
        "supply, the feedback switch and its polarity (feedback_active_high), timeout_s"
    )
    what = "lock" if not ok_lock else "unlock"
    run.results.append(StepResult("lock", connector_id, FAIL, f"{what} not confirmed"))


_COLOUR_NAMES: Final[dict[tuple[float, ...], str]] = {
    (0.0, 0.0, 0.0): "off",
    (1.0, 0.0, 0.0): "red",
    (0.0, 1.0, 0.0): "green",
    (0.0, 0.0, 1.0): "blue",
    (0.0, 1.0, 1.0): "cyan",
    (1.0, 1.0, 0.0): "yellow",
    (1.0, 0.0, 1.0): "magenta",
    (1.0, 1.0, 1.0): "white",
    (0.1, 0.1, 0.1): "dim white",
}


def _describe_indicator(indicator: Any, state: IndicatorState) -> str:
    pattern_for = getattr(indicator, "pattern_for", None)
    if not callable(pattern_for):
        return state.value
    try:
        pattern, colour = pattern_for(state, getattr(indicator, "_pwm", True))
    except Exception:  # noqa: BLE001 - description only
        return state.value
    name = _COLOUR_NAMES.get(tuple(float(c) for c in colour), f"rgb{tuple(colour)}")
    return f"{state.value}: {pattern.replace('_', ' ')} {name}"


async def _step_indicator(run: _Run, connector_id: int, dev: DeviceConfig) -> None:
    indicator = None
    try:
        indicator = run.create("indicator", dev, connector_id)
        run.out("  watch the status light:")
        for state in IndicatorState:
            if state is IndicatorState.OFF:
                continue
            run.out(f"    {_describe_indicator(indicator, state)}")
            indicator.show(state)
            await asyncio.sleep(run.indicator_step_s)
        indicator.show(IndicatorState.OFF)
    except Exception as exc:  # noqa: BLE001
        run.fail("indicator", connector_id, exc, dev)
        return
    finally:
        if indicator is not None:
            try:
                indicator.show(IndicatorState.OFF)
            except Exception:  # noqa: BLE001, S110
                pass
            await _quiet_release(run, indicator)
    if run.confirm("  did the light show each of these? [Y/n] ", default=True):
        run.results.append(StepResult("indicator", connector_id, PASS, "confirmed"))
        return
    run.out(
        "  FAIL: check the red/green/blue pin numbers (BCM, not board pins) and active_high "
        "(false for a common-anode LED); set pwm = false if colours flicker"
    )
    run.results.append(StepResult("indicator", connector_id, FAIL, "not seen"))


async def _step_contactor(run: _Run, connector_id: int, dev: DeviceConfig) -> None:
    contactor = None
    faults: list[str] = []
    closed_ok = False
    try:
        contactor = run.create("contactor", dev, connector_id)
        contactor.set_closed(False)
        hold = run.contactor_hold_s
        run.out(
            f"  DANGER: closing the contactor puts mains voltage on the cable and the "
            f"connector of connector {connector_id}."
        )
        run.out(
            "  Make sure nobody touches the cable, the plug or open terminals, the enclosure "
            "is closed and the RCD / breaker is in place."
        )
        try:
            answer = run.ask(
                f"  type YES to close the contactor of connector {connector_id} for "
                f"{hold:g} seconds: "
            )
        except EOFError:
            answer = ""
        if answer.strip() != "YES":
            run.out("  not confirmed: the contactor stays open")
            run.results.append(StepResult("contactor", connector_id, SKIP, "not confirmed"))
            return
        contactor.start_monitor(lambda code: faults.append(code) if code else None)
        try:
            run.out("  closing ...")
            contactor.set_closed(True)
            closed_ok = bool(contactor.closed)
            if closed_ok:
                run.out(f"  closed; opening again in {hold:g} s")
            await asyncio.sleep(hold)
        finally:
            contactor.set_closed(False)
        run.out("  opened")
        await asyncio.sleep(run.feedback_settle_s)
    except Exception as exc:  # noqa: BLE001
        run.fail("contactor", connector_id, exc, dev)
        return
    finally:
        if contactor is not None:
            try:
                contactor.set_closed(False)
            finally:
                await _quiet_release(run, contactor)
    welded = bool(getattr(contactor, "welded", False))
    if welded:
        problem = "the contacts are welded (feedback says closed while the coil is off)"
        fix = "switch off the supply and replace the contactor; do not charge"
    elif not closed_ok:
        problem = "the contactor refused to close (a feedback fault is latched)"
        fix = "check the auxiliary contact wiring and feedback_active_high"
    elif faults:
        problem = "the feedback contact did not follow the coil (failed to close)"
        fix = (
            "check the coil supply and driver board, the auxiliary contact wiring, "
            "feedback_active_high / feedback_pull_up and feedback_delay_s"
        )
    else:
        run.out("  no feedback fault reported")
        run.results.append(StepResult("contactor", connector_id, PASS, f"closed {hold:g} s"))
        return
    run.out(f"  FAIL: {problem}")
    run.out(f"  fix:  {fix}")
    run.results.append(StepResult("contactor", connector_id, FAIL, problem))


async def _stop_and_release(
    run: _Run, device: Any, *, stop: Callable[[], None] | None, in_thread: bool = False
) -> None:
    """Stop a started driver, then release it. ``in_thread`` for a stop that blocks on a
    driver thread (PC/SC); loop-bound drivers (a polled board) must stop on the loop."""
    if stop is not None:
        try:
            if in_thread:
                await asyncio.to_thread(stop)
            else:
                stop()
        except Exception as exc:  # noqa: BLE001 - the release below must still run
            run.out(f"  warning: stopping the driver failed: {exc}")
    await _quiet_release(run, device)


async def _quiet_release(run: _Run, device: Any) -> None:
    try:
        await release(device)
    except Exception as exc:  # noqa: BLE001 - releasing must not hide the step's result
        run.out(f"  warning: closing the driver failed: {exc}")


def _api_running(config: Config) -> bool:
    """Whether something answers on the configured API port (likely a running evsed)."""
    if not config.api_port:
        return False
    host = "127.0.0.1" if config.api_host in ("0.0.0.0", "::") else config.api_host
    try:
        with socket.create_connection((host, config.api_port), timeout=0.3):
            return True
    except OSError:
        return False


def parse_steps(text: str) -> set[str]:
    """``"meter,reader"`` -> {"meter", "reader"}; ValueError naming unknown steps."""
    steps = {s.strip().lower() for s in text.split(",") if s.strip()}
    unknown = sorted(steps - set(STEPS))
    if unknown:
        raise ValueError(f"unknown step(s) {', '.join(unknown)}; steps: {', '.join(STEPS)}")
    if not steps:
        raise ValueError(f"no step given; steps: {', '.join(STEPS)}")
    return steps


def format_summary(results: list[StepResult]) -> list[str]:
    lines = ["summary:", f"  {'step':<10} {'connector':<9} {'result':<6} detail"]
    for r in results:
        conn = "-" if r.connector is None else str(r.connector)
        lines.append(f"  {r.step:<10} {conn:<9} {r.status:<6} {r.detail}")
    return lines


async def run_hw_test(
    config: Config,
    *,
    ask: Callable[[str], str] = input,
    out: Callable[[str], None] = print,
    card_timeout_s: float = 30,
    connector: int | None = None,
    steps: Collection[str] | None = None,
    shared: dict[str, Any] | None = None,
    contactor_hold_s: float = 2.0,
    indicator_step_s: float = 1.0,
    feedback_settle_s: float = 0.5,
) -> int:
    """Run the bring-up steps; 0 when every step that ran passed, 1 otherwise.

    ``shared`` is the drivers' shared dict (tests pass one to reach the simulated devices).
    """
    wanted = set(STEPS) if steps is None else set(steps)
    unknown = wanted - set(STEPS)
    if unknown:
        raise ValueError(f"unknown step(s) {', '.join(sorted(unknown))}")
    connectors = [c for c in config.connectors if connector in (None, c.connector_id)]
    if not connectors:
        ids = ", ".join(str(c.connector_id) for c in config.connectors)
        raise ValueError(f"no connector {connector} in the config (connectors: {ids})")
    run = _Run(
        config=config,
        ask=ask,
        out=out,
        shared={} if shared is None else shared,
        card_timeout_s=card_timeout_s,
        contactor_hold_s=contactor_hold_s,
        indicator_step_s=indicator_step_s,
        feedback_settle_s=feedback_settle_s,
    )
    out(
        f"evsed hw-test: station {config.station_id}, steps: "
        + ", ".join(s for s in STEPS if s in wanted)
    )
    if config.uses_simulation:
        out("note: simulated drivers are configured; this tests the simulator, not hardware")
    if _api_running(config):
        out(
            f"warning: something answers on {config.api_host}:{config.api_port}; if evsed is "
            "running it drives the same hardware: stop it first (sudo systemctl stop evsed)"
        )
        if not run.confirm("continue anyway? [y/N] "):
            return 1

    for step in STEPS:
        if step not in wanted:
            continue
        if step in STATION_STEPS:
            out("")
            out(f"== {step} ==")
            if config.reader is None:
                out("  skipped: no [reader] in the config")
                run.results.append(StepResult(step, None, SKIP, "not configured"))
            else:
                await _step_reader(run, config.reader)
            continue
        for cc in connectors:
            out("")
            out(f"== {step}, connector {cc.connector_id} ==")
            dev = cc.devices.get(step)
            if dev is None:
                out(f"  skipped: no [connectors.{step}] for this connector")
                run.results.append(StepResult(step, cc.connector_id, SKIP, "not configured"))
                continue
            if step == "meter":
                await _step_meter(run, cc.connector_id, dev)
            elif step == "vehicle":
                await _step_vehicle(run, cc.connector_id, dev)
            elif step == "lock":
                await _step_lock(run, cc.connector_id, dev)
            elif step == "indicator":
                await _step_indicator(run, cc.connector_id, dev)
            elif step == "contactor":
                await _step_contactor(run, cc.connector_id, dev)

    out("")
    for line in format_summary(run.results):
        out(line)
    failed = any(r.status == FAIL for r in run.results)
    out("result: " + ("some steps FAILED" if failed else "all steps passed"))
    return 1 if failed else 0
