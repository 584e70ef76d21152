"""EVSE-DIN / SimpleEVSE-WB pilot boards over Modbus RTU (driver "evse-din", role "vehicle").

The EVSE-DIN (EVSE-WB in a DIN-rail case, by EV Racing / sold by openWB) generates the
control pilot, reads the vehicle state and switches its own relay output; the host only sets
the current it may advertise. Registers used (holding registers, FC 3 to read, FC 16 to
write; numbers are the protocol addresses of the board's register table, firmware >= 10):

====  ===  ==========================================================================
1000  R/W  configured current in A (0.01 A with "precise current", see 2005 bit 7);
           **0 = no charging**: pilot stays at steady +12 V / no PWM, relay off
1001  R    current actually advertised (min of 1000 and the cable's PP limit)
1002  R    vehicle state: 1 ready (A), 2 EV present (B), 3 charging (C),
           4 charging with ventilation (D), 5 failure (diode check, RCD, ...)
1005  R    firmware revision
2005  R/W  configuration bits; bit 7 = currents in 0.01 A (firmware >= 17 only)
====  ===  ==========================================================================

Sources: the openWB driver for these boards (modules/common/evse.py: reads 1000..1002 in
one FC 3 request, vehicle states 1..5 as above, writes 1000 with FC 16 and 0 to stop, firmware
in 1005, "precise current" = 2005 bit 7 from firmware 17) and the EVSE-WB / EVSE-DIN register
table of the board documentation (evracing.cz). NOT CONFIRMED from a text read while writing
this driver: the meaning of 1001 (only logged) and that 1000 = 0 keeps the pilot at +12 V
without PWM (the driver relies only on "0 = no charging", which openWB relies on too).
Modbus must be enabled on the board (done by the reseller, or once by hand); this driver
never writes configuration registers.

State mapping: 1..4 -> A..D; 5 (failure) -> E; anything else, or no answer from the board,
-> F ("EVSE not available"), so the station stops offering energy. Until the board has
answered once the state is F as well.

Because the board switches the relay itself, the driver keeps register 1000 equal to what
the station asked for: it re-writes it whenever the read-back differs (e.g. after the board
rebooted into its power-on default current), and writes 0 on ``stop()``.

Settings: ``unit_id`` (1..247, default 1; must differ from the meter's when they share the
line), ``poll_interval_s`` (0.2) and the bus settings of ``hal.modbus_bus``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Mapping
from typing import Any, Final

from hal.base import DeviceError, VehicleCallback, VehicleInterface, VehicleState
from hal.modbus_bus import BUS_SETTINGS, FC_READ_HOLDING, DeviceLink, link_from_settings
from hal.registry import DriverContext, register_driver, reject_unknown, setting_float, setting_int

log = logging.getLogger(__name__)

REG_CURRENT: Final = 1000
REG_ACTUAL_CURRENT: Final = 1001
REG_VEHICLE_STATE: Final = 1002
REG_FIRMWARE: Final = 1005
REG_CONFIG: Final = 2005
PRECISE_CURRENT_BIT: Final = 1 << 7
PRECISE_FIRMWARE: Final = 17

STATE_BY_REGISTER: Final = {
    1: VehicleState.A,
    2: VehicleState.B,
    3: VehicleState.C,
    4: VehicleState.D,
    5: VehicleState.E,
}

FAST_POLLS_AFTER_CHANGE: Final = 6
FAST_POLL_INTERVAL_S: Final = 0.05
MIN_PILOT_CURRENT_A: Final = 6.0  # IEC 61851-1: a PWM below 6 A is not an offer
MAX_BOARD_CURRENT_A: Final = 80.0


class EvseDinBoard(VehicleInterface):
    """The vehicle interface of one connector through an EVSE-DIN board."""

    def __init__(self, link: DeviceLink, poll_interval_s: float = 0.2, name: str = "evse") -> None:
        self.link = link
        self.poll_interval_s = poll_interval_s
        self.name = name
        self._state = VehicleState.F
        self._on_state: VehicleCallback | None = None
        self._wanted_a = 0.0
        self._advertised_a: float | None = None  # register 1001, for diagnostics
        self._precise: bool | None = None  # None: not asked yet
        self._task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._polled_once: asyncio.Event | None = None
        # After a setpoint change the car answers within ~100 ms: look again sooner.
        self._fast_polls = 0
        self.polls = 0
        self.failed_polls = 0
        self._error_logged = False
        self.writes = 0
        self.firmware: int | None = None

    # VehicleInterface -------------------------------------------------------------------------

    def start(self, on_state: VehicleCallback) -> None:
        """Start polling on the running event loop; ``on_state`` gets every change."""
        self._on_state = on_state
        if self._task is not None and not self._task.done():
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._polled_once = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name=f"{self.name} poll")
        self._task.add_done_callback(self._task_done)

    def stop(self) -> None:
        """Stop polling and set the board to "no charging" (best effort, in the background)."""
        self._on_state = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        self._wanted_a = 0.0
        if self._loop is not None and not self._loop.is_closed():
            self._stop_task = self._loop.create_task(self._shutdown(task))
            self._stop_task.add_done_callback(self._task_done)

    async def aclose(self) -> None:
        """Await what ``stop()`` started (the final write of 0 A) and release the bus."""
        if self._task is not None:
            self.stop()
        stop_task, self._stop_task = self._stop_task, None
        try:
            if stop_task is not None:
                # asyncio.wait, not "await stop_task" under suppress(CancelledError): that
                # would swallow a cancellation of aclose() itself.
                await asyncio.wait({stop_task})
        finally:
            self.link.release()

    @property
    def state(self) -> VehicleState:
        return self._state

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait for the first poll, so the station does not report the initial F."""
        if self._polled_once is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):  # not wait_for: see _run
                    await self._polled_once.wait()

    def set_max_current_a(self, current_a: float) -> None:
        if isinstance(current_a, bool) or not math.isfinite(current_a) or current_a < 0:
            raise ValueError(f"current_a must be a finite number >= 0, got {current_a!r}")
        if current_a != self._wanted_a:
            self._fast_polls = FAST_POLLS_AFTER_CHANGE
        self._wanted_a = current_a
        if self._loop is not None and self._wake is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    @property
    def max_current_a(self) -> float:
        return self._wanted_a

    @property
    def advertised_current_a(self) -> float | None:
        """What the board says it advertises on the pilot (register 1001)."""
        return self._advertised_a

    # internals --------------------------------------------------------------------------------

    def _register_value(self, current_a: float) -> int:
        """Register 1000 for ``current_a``: rounded down (never offer more), 0 below 6 A."""
        if current_a < MIN_PILOT_CURRENT_A:
            return 0
        current_a = min(current_a, MAX_BOARD_CURRENT_A)
        if self._precise:
            return int(math.floor(current_a * 100 + 1e-6))
        return int(math.floor(current_a + 1e-9))

    def _amps(self, register: int) -> float:
        return register / 100 if self._precise else float(register)

    async def _detect_units(self) -> None:
        (firmware,) = await self.link.read_registers(FC_READ_HOLDING, REG_FIRMWARE, 1)
        self.firmware = firmware
        precise = False
        if firmware >= PRECISE_FIRMWARE:
            (config,) = await self.link.read_registers(FC_READ_HOLDING, REG_CONFIG, 1)
            precise = bool(config & PRECISE_CURRENT_BIT)
        self._precise = precise
        log.info(
            "%s: EVSE-DIN firmware %d, currents in %s",
            self.name,
            firmware,
            "0.01 A" if precise else "A",
        )

    async def poll_once(self) -> VehicleState:
        """One cycle: read state and setpoint, re-write the setpoint if it differs."""
        if self._precise is None:
            await self._detect_units()
        current_reg, advertised_reg, state_reg = await self.link.read_registers(
            FC_READ_HOLDING, REG_CURRENT, 3
        )
        wanted = self._register_value(self._wanted_a)
        if current_reg != wanted:
            await self.link.write_registers(REG_CURRENT, [wanted])
            self.writes += 1
            log.debug("%s: register %d := %d", self.name, REG_CURRENT, wanted)
        self._advertised_a = self._amps(advertised_reg)
        state = STATE_BY_REGISTER.get(state_reg)
        if state is None:
            log.warning("%s: unknown vehicle state register value %d", self.name, state_reg)
            state = VehicleState.F
        return state

    async def _run(self) -> None:
        assert self._wake is not None
        me = asyncio.current_task()
        # stop() cancels this task; the check also ends the loop should a library swallow
        # that cancellation (asyncio.wait_for on Python 3.11 does when the awaited answer
        # arrives in the same loop iteration), so a stopped board never polls on.
        while self._task is me:
            self._wake.clear()
            self.polls += 1
            try:
                state = await self.poll_once()
                self._error_logged = False
            except Exception as exc:  # noqa: BLE001 - whatever the board answers: F, retry
                self.failed_polls += 1
                if isinstance(exc, DeviceError):
                    if self._state is not VehicleState.F:
                        log.warning("%s: board not answering (%s); state F", self.name, exc)
                elif not self._error_logged:
                    # Not a bus error: an answer the driver did not expect. Still F and
                    # poll on, so the station recovers once the board answers sensibly.
                    log.error("%s: poll failed; state F", self.name, exc_info=True)
                    self._error_logged = True
                state = VehicleState.F
                # A board that rebooted may come back with other firmware settings.
                self._precise = None
            if self._task is not me:
                break
            self._set_state(state)
            if self._polled_once is not None:
                self._polled_once.set()
            interval_s = self.poll_interval_s
            if self._fast_polls > 0:
                self._fast_polls -= 1
                interval_s = min(interval_s, FAST_POLL_INTERVAL_S)
            # asyncio.timeout, not wait_for: see above; the event never swallows a cancel.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await self._wake.wait()

    def _set_state(self, state: VehicleState) -> None:
        if state is self._state:
            return
        log.info("%s: vehicle state %s -> %s", self.name, self._state.value, state.value)
        self._state = state
        if self._on_state is not None:
            self._on_state(state)

    async def offer_nothing(self) -> str:
        """0 A in the current register (no PWM: the car may not draw), read back."""
        await self.link.write_registers(REG_CURRENT, [0])
        (value,) = await self.link.read_registers(FC_READ_HOLDING, REG_CURRENT, 1)
        if value != 0:
            raise DeviceError(f"{self.name}: register {REG_CURRENT} reads {value}, not 0")
        return "0 A offered (read back)"

    async def _shutdown(self, task: asyncio.Task[None] | None) -> None:
        if task is not None:
            await asyncio.wait({task})
        try:
            await self.link.write_registers(REG_CURRENT, [0])
        except DeviceError as exc:
            log.warning("%s: could not set 0 A on stop: %s", self.name, exc)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("%s: %s failed", self.name, task.get_name(), exc_info=exc)
            self._set_state(VehicleState.F)


BOARD_SETTINGS: Final = ("unit_id", "poll_interval_s", *BUS_SETTINGS)


@register_driver("vehicle", "evse-din")
def create_evse_din(settings: Mapping[str, Any], ctx: DriverContext) -> EvseDinBoard:
    reject_unknown(settings, BOARD_SETTINGS, ctx)
    unit_id = setting_int(settings, "unit_id", 1, ctx, min_value=1, max_value=247)
    poll_interval_s = setting_float(
        settings, "poll_interval_s", 0.2, ctx, min_value=0.05, max_value=10.0
    )
    link = link_from_settings(settings, ctx, unit_id)
    name = f"connector {ctx.connector_id} evse-din" if ctx.connector_id else "evse-din"
    return EvseDinBoard(link, poll_interval_s=poll_interval_s, name=name)
