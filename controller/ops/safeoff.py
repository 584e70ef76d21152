"""`evsed safe-off`: open every contactor and take the current offer off pilot boards.

Meant for the moments evsed itself is not running: systemd runs it after every stop or
crash of ``evsed.service`` (``ExecStopPost=``) and once early at boot
(``evsed-safe-off.service``). It therefore depends on as little as possible:

* only the ``[[connectors]]`` ``contactor`` and ``vehicle`` sections of the config are read
  (raw TOML: a broken ``[csms]``, ``[ocpp]`` or storage setting does not matter); the
  database is never opened and no CSMS is contacted; meters, readers, locks, lights and
  fault inputs are never built, so nothing is locked or unlocked;
* every contactor is tried, in order, even if an earlier one failed; each result is
  printed; the exit code is non-zero if any device failed;
* the run time is bounded: Modbus requests run under the remaining budget, and the
  command line adds a hard deadline for anything that might hang (``main_safe_off``).

Contactors: the driver is created (a ``gpio`` contactor drives its output inactive right
away), commanded open, checked (the driver reads open; with a feedback contact, the
contact must read open within ``FEEDBACK_WAIT_S``) and released again. A released GPIO is an
input: the relay driver's pull-down keeps the coil off from then on (see hardware.md).

Pilot boards: an ``evse-din`` board gets 0 A in its current register (no PWM: the car may
not draw), read back to confirm. Other vehicle drivers offer nothing once evsed is gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from hal.base import DeviceError
from hal.registry import DriverContext, create_driver

LOG = logging.getLogger(__name__)

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_CONFIG: Final = 2
EXIT_TIMEOUT: Final = 3

# How long a feedback (mirror) contact may take to follow the opened coil.
FEEDBACK_WAIT_S: Final = 1.0
_FEEDBACK_POLL_S: Final = 0.01
# Vehicle drivers that keep offering current on their own when evsed is gone.
CURRENT_OFFERING_DRIVERS: Final = frozenset({"evse-din"})


class SafeOffConfigError(Exception):
    """The config cannot tell which devices exist (unreadable file, no connectors)."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one device."""

    device: str  # e.g. "connector 1 contactor"
    driver: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{self.device} ({self.driver}): {'' if self.ok else 'FAILED: '}{self.detail}"


@dataclass(frozen=True)
class DeviceSection:
    connector_id: int
    role: str  # "contactor" or "vehicle"
    section: Any  # the raw TOML value; validated by the driver factory

    @property
    def name(self) -> str:
        return f"connector {self.connector_id} {self.role}"

    @property
    def key(self) -> str:
        return f"connectors.{self.connector_id}.{self.role}"

    @property
    def driver(self) -> str:
        driver = self.section.get("driver") if isinstance(self.section, dict) else None
        return driver if isinstance(driver, str) else "?"


def read_devices(config_path: str | Path) -> list[DeviceSection]:
    """The contactor and vehicle sections of every connector, contactors first."""
    try:
        data = tomllib.loads(Path(config_path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SafeOffConfigError(f"cannot read {config_path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SafeOffConfigError(f"{config_path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise SafeOffConfigError(f"{config_path} is not valid TOML: {exc}") from None
    connectors = data.get("connectors")
    if not isinstance(connectors, list) or not connectors:
        raise SafeOffConfigError(f"{config_path}: no [[connectors]] tables")
    devices: list[DeviceSection] = []
    for role in ("contactor", "vehicle"):
        for index, raw in enumerate(connectors, start=1):
            section = raw.get(role) if isinstance(raw, dict) else None
            if section is None and role == "vehicle":
                continue  # config validation would refuse it; nothing to switch off here
            devices.append(DeviceSection(index, role, section))
    return devices


def _describe_error(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "busy" in text.lower() or "in use" in text.lower():
        text += " (is evsed still running? stop it first)"
    return text


def _create(device: DeviceSection, shared: dict[str, Any]) -> Any:
    if not isinstance(device.section, dict):
        raise ValueError(f'{device.key}: missing; expected a table with driver = "..."')
    ctx = DriverContext(device.connector_id, shared=shared, key_prefix=device.key)
    return create_driver(device.role, device.section.get("driver"), device.section, ctx)


def open_contactor(
    device: DeviceSection,
    shared: dict[str, Any],
    *,
    feedback_wait_s: float = FEEDBACK_WAIT_S,
    monotonic_s: Callable[[], float] = time.monotonic,
) -> Outcome:
    """Create the contactor driver, command it open, check it and release it."""
    try:
        contactor = _create(device, shared)
    except Exception as exc:  # any driver failure is reported, the next device is tried
        return Outcome(device.name, device.driver, False, f"cannot set up: {_describe_error(exc)}")
    try:
        contactor.set_closed(False)
        if contactor.closed:
            return Outcome(device.name, device.driver, False, "still reads closed after opening")
        feedback = _wait_feedback_open(contactor, feedback_wait_s, monotonic_s)
        if feedback is True or contactor.welded:
            return Outcome(
                device.name,
                device.driver,
                False,
                "commanded open, but the feedback contact reads closed (welded?)",
            )
        detail = "open" + (", feedback contact reads open" if feedback is False else "")
        return Outcome(device.name, device.driver, True, detail)
    except Exception as exc:
        return Outcome(device.name, device.driver, False, _describe_error(exc))
    finally:
        try:
            contactor.close_driver()  # opens again first, then releases the pins
        except Exception:
            LOG.warning("%s: releasing the driver failed", device.name, exc_info=True)


def _wait_feedback_open(
    contactor: Any, wait_s: float, monotonic_s: Callable[[], float]
) -> bool | None:
    """The feedback contact's last reading (True = closed), None without one."""
    if contactor.feedback_closed is None:
        return None
    deadline_s = monotonic_s() + wait_s
    while contactor.feedback_closed and monotonic_s() < deadline_s:
        time.sleep(_FEEDBACK_POLL_S)
    return bool(contactor.feedback_closed)


async def zero_vehicle(device: DeviceSection, shared: dict[str, Any], budget_s: float) -> Outcome:
    """Set a pilot board's offered current to 0 A (read back), within ``budget_s``."""
    if device.driver not in CURRENT_OFFERING_DRIVERS:
        return Outcome(device.name, device.driver, True, "nothing to do (offers no current alone)")
    try:
        board = _create(device, shared)
    except Exception as exc:
        return Outcome(device.name, device.driver, False, f"cannot set up: {_describe_error(exc)}")
    try:
        async with asyncio.timeout(max(0.0, budget_s)):
            detail = await board.offer_nothing()
    except TimeoutError:
        return Outcome(device.name, device.driver, False, f"no answer within {budget_s:.1f} s")
    except (DeviceError, OSError) as exc:
        return Outcome(device.name, device.driver, False, _describe_error(exc))
    finally:
        await board.aclose()
    return Outcome(device.name, device.driver, True, detail)


async def safe_off(
    config_path: str | Path,
    *,
    timeout_s: float = 10.0,
    shared: dict[str, Any] | None = None,
    monotonic_s: Callable[[], float] = time.monotonic,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Open every contactor, then zero every pilot board; raises SafeOffConfigError only
    when the config does not say which devices there are. ``shared`` is the drivers'
    station-wide dict (tests put a gpiozero MockFactory there)."""
    started_s = monotonic_s()
    devices = read_devices(config_path)
    station: dict[str, Any] = {} if shared is None else shared
    outcomes: list[Outcome] = []

    def note(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    # Contactors first and one by one: they are what removes power, and they are fast.
    for device in devices:
        if device.role == "contactor":
            note(open_contactor(device, station, monotonic_s=monotonic_s))
    boards = [d for d in devices if d.role == "vehicle"]
    budget_s = timeout_s - (monotonic_s() - started_s)
    # Boards together: each one within what is left of the budget (one bus serialises them).
    for outcome in await asyncio.gather(*(zero_vehicle(d, station, budget_s) for d in boards)):
        note(outcome)
    return outcomes


def _hard_deadline(timeout_s: float) -> threading.Timer:
    """Exit with EXIT_TIMEOUT after ``timeout_s`` whatever hangs (a driver, an import)."""

    def expire() -> None:
        print(f"evsed safe-off: timed out after {timeout_s:g} s", file=sys.stderr, flush=True)
        os._exit(EXIT_TIMEOUT)

    timer = threading.Timer(timeout_s, expire)
    timer.daemon = True
    timer.start()
    return timer


def main_safe_off(config_path: str, timeout_s: float = 10.0) -> int:
    """The ``evsed safe-off`` command: prints one line per device; exit code per EXIT_*."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not timeout_s > 0:  # also NaN
        print(f"evsed safe-off: --timeout must be positive, got {timeout_s}", file=sys.stderr)
        return EXIT_CONFIG
    # The asyncio part stops at timeout_s; the hard deadline a little later catches the rest.
    timer = _hard_deadline(timeout_s + 2.0)

    def show(outcome: Outcome) -> None:
        print(outcome.line(), flush=True)

    try:
        outcomes = asyncio.run(safe_off(config_path, timeout_s=timeout_s, on_outcome=show))
    except SafeOffConfigError as exc:
        print(f"evsed safe-off: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        timer.cancel()
    failed = [o for o in outcomes if not o.ok]
    contactors = sum(1 for o in outcomes if o.device.endswith("contactor") and o.ok)
    if failed:
        print(
            f"evsed safe-off: {len(failed)} device(s) FAILED: "
            + ", ".join(o.device for o in failed),
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(f"evsed safe-off: {contactors} contactor(s) open")
    return EXIT_OK
