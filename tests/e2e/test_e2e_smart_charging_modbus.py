"""Smart charging end to end down to the Modbus bus (issue 12): a TxDefaultProfile's period
boundaries, on the injected clock, reach the EVSE-DIN board's setpoint register over RTU.

The charger runs in-process (``App`` on a ``ManualClock``, so the schedule never costs real
time) with the real drivers on the line: the "evse-din" board (unit 2) and the "modbus"
SDM630 meter (unit 1) on one end of a socat pty pair, the "gpio" contactor on gpiozero's
mock pins; only the card reader is the "sim" driver (no pcscd needed). The other end of the
pty carries the pymodbus RTU server of tests/e2e/test_e2e_real_drivers.py emulating the
meter and the board with a car behind it (B below 6 A, C at once from 6 A). The dev CSMS
sends the profile over a real WebSocket; ``/api/status`` is read over HTTP.

What is checked after each boundary is what the board really received (register 1000 in
the server's table and every write to it, in order and with its time) and what the API
says (``offered_current_a``, ``limit_a``, ``limit_source``, contactor, status), for boards
counting in whole amperes and in 0.01 A ("precise current", register 2005 bit 7).

``ModbusCharger`` is shared with bench/profile_to_setpoint.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pymodbus", reason="pymodbus is not installed: the board is a Modbus server")

import aiohttp  # noqa: E402
from pymodbus.constants import ExcCodes  # noqa: E402

from controller.app import App  # noqa: E402
from controller.config import parse  # noqa: E402
from controller.core import connector as sm  # noqa: E402
from controller.dev.devcsms import DevCsms  # noqa: E402
from controller.runtime.clock import Clock, ManualClock  # noqa: E402
from hal.evse_board import PRECISE_CURRENT_BIT, REG_CONFIG, REG_CURRENT  # noqa: E402
from tests.e2e.test_e2e_real_drivers import (  # noqa: E402
    BOARD_UNIT,
    INITIAL_ENERGY_WH,
    MAX_CURRENT_A,
    METER_UNIT,
    STATE_B,
    STATE_C,
    CarBoardSim,
    MeterSim,
    wait_until,
)
from tests.modbus_sim import SOCAT, SimLine, SocatPair  # noqa: E402

STATION_ID = "CP-SC-MODBUS"
CARD = "04A1B2C3"
GPIO_PIN = 17
BOARD_POLL_INTERVAL_S = 0.2
METER_TIMEOUT_S = 0.3
STEP_TIMEOUT_S = 10.0


def missing() -> str | None:
    """Why this rig cannot run here, or None (pymodbus is checked on import)."""
    if SOCAT is None:
        return "socat is not installed (apt-get install socat): the RS-485 line is a pty pair"
    return None


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------- the board


class SetpointCar(CarBoardSim):
    """The emulated EVSE-DIN board and car, noting when each setpoint write lands.

    ``precise``: the board counts register 1000 in 0.01 A (firmware >= 17, 2005 bit 7).
    """

    def __init__(self, meter: MeterSim, *, precise: bool = False) -> None:
        self.precise = precise
        # (time.monotonic() when the server handled the write, value written to 1000)
        self.setpoint_log: list[tuple[float, int]] = []
        self.on_setpoint: Callable[[float, int], None] | None = None
        super().__init__(BOARD_UNIT, meter, INITIAL_ENERGY_WH)
        if precise:
            self.holding[REG_CONFIG] = PRECISE_CURRENT_BIT

    @property
    def register(self) -> int:
        """Register 1000 as the board holds it (the driver's units)."""
        return self.holding[REG_CURRENT]

    @property
    def setpoint(self) -> int:
        """Whole amperes the car may draw (what CarBoardSim reacts to)."""
        raw = self.holding[REG_CURRENT]
        return raw // 100 if self.precise else raw

    def register_for(self, amps: float) -> int:
        """What the driver should write for ``amps`` (rounded down, 0 below 6 A)."""
        if amps < 6:
            return 0
        return int(amps * 100 + 1e-6) if self.precise else int(amps + 1e-9)

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        result = await super().action(
            function_code, start_address, address, count, current_registers, set_values
        )
        if set_values is not None and address <= REG_CURRENT < address + len(set_values):
            now = time.monotonic()
            value = int(set_values[REG_CURRENT - address])
            self.setpoint_log.append((now, value))
            if self.on_setpoint is not None:
                self.on_setpoint(now, value)
        return result


# --------------------------------------------------------------------------- the charger


@dataclass
class CommandSeen:
    at: float  # time.monotonic()
    command: sm.Command
    car_state: int  # the board's vehicle state register at that moment


class ModbusCharger:
    """socat pty + pymodbus RTU server (meter + board/car), DevCsms, evsed in-process."""

    def __init__(
        self,
        workdir: Path,
        clock: Clock | None,
        *,
        precise: bool = False,
        tick_interval_s: float = 1.0,
        board_poll_interval_s: float = BOARD_POLL_INTERVAL_S,
        log_frames: bool = False,
    ) -> None:
        self.workdir = workdir
        self.clock = clock
        self.tick_interval_s = tick_interval_s
        self.board_poll_interval_s = board_poll_interval_s
        self.pair = SocatPair(workdir, "rs485")
        self.meter = MeterSim(METER_UNIT)
        self.car = SetpointCar(self.meter, precise=precise)
        self.line = SimLine([self.meter, self.car])
        self.csms = DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600)
        self.app: App | None = None
        self.http: aiohttp.ClientSession | None = None
        self.commands: list[CommandSeen] = []
        self._car_task: asyncio.Task[None] | None = None
        self._csms_started = False
        self._line_started = False

    # lifecycle --------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        bus = {"port": self.pair.a, "baudrate": 9600, "parity": "N"}
        return {
            "station": {
                "id": STATION_ID,
                "storage": str(self.workdir / "evsed.db"),
                "tick_interval_s": self.tick_interval_s,
            },
            "api": {"host": "127.0.0.1", "port": 0},
            "reader": {"driver": "sim"},
            "connectors": [
                {
                    "max_current_a": MAX_CURRENT_A,
                    "contactor": {"driver": "gpio", "pin_factory": "mock", "pin": GPIO_PIN},
                    "meter": {
                        "driver": "modbus",
                        "model": "eastron_sdm630",
                        "unit_id": METER_UNIT,
                        "timeout_s": METER_TIMEOUT_S,
                        "retries": 0,
                        **bus,
                    },
                    "vehicle": {
                        "driver": "evse-din",
                        "unit_id": BOARD_UNIT,
                        "poll_interval_s": self.board_poll_interval_s,
                        **bus,
                    },
                }
            ],
            "ocpp": {"MeterValueSampleInterval": 60, "HeartbeatInterval": 3600},
            "csms": {
                "url": self.csms.url,
                "reconnect_min_s": 0.05,
                "reconnect_max_s": 0.3,
                "response_timeout_s": 5.0,
            },
        }

    async def start_line(self) -> None:
        """The pty pair and the Modbus server (the board and meter), no charger yet."""
        self.pair.start()
        await self.line.start_rtu(self.pair.b)
        self._line_started = True
        self._car_task = asyncio.get_running_loop().create_task(self.car.run(), name="car")

    async def start(self) -> None:
        if not self._line_started:
            await self.start_line()
        await self.csms.start()
        self._csms_started = True
        self.app = App(parse(self.config()), clock=self.clock, boot_id="boot-1")
        await self.app.start()
        self.station.add_listener(self._seen)
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        await self.csms.wait_connected(STATION_ID, timeout_s=15)
        await self.wait_connector(
            lambda c: c["status"] == "Available" and c["meter_ok"], "Available", STEP_TIMEOUT_S
        )
        await wait_until(
            lambda: (
                self.app is not None
                and self.app.port is not None
                and self.app.port.connection_state() == "accepted"
            ),
            "accepted by the CSMS",
            STEP_TIMEOUT_S,
        )

    async def close(self) -> None:
        """Stop everything this rig started; never raises."""
        if self.http is not None:
            with contextlib.suppress(Exception):
                await self.http.close()
        if self.app is not None and self.app.store is not None:
            with contextlib.suppress(Exception):
                await self.app.stop(reason=None)
        if self._car_task is not None:
            self._car_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._car_task
        with contextlib.suppress(Exception):
            await self.line.stop()
        self.pair.stop()
        if self._csms_started:
            with contextlib.suppress(Exception):
                await self.csms.stop()

    # views ------------------------------------------------------------------------------

    @property
    def station(self) -> Any:
        assert self.app is not None and self.app.station is not None
        return self.app.station

    @property
    def contactor_closed(self) -> bool:
        return bool(self.station.connectors[1].hw.contactor.closed)

    def _seen(self, _connector_id: int, command: sm.Command) -> None:
        if isinstance(command, sm.SwitchContactor | sm.SetCurrentLimit):
            self.commands.append(CommandSeen(time.monotonic(), command, self.car.state))

    async def status(self) -> dict[str, Any]:
        assert self.http is not None and self.app is not None and self.app.api is not None
        url = f"http://127.0.0.1:{self.app.api.port}/api/status"
        async with self.http.get(url) as resp:
            assert resp.status == 200, await resp.text()
            body: dict[str, Any] = await resp.json()
        return body

    async def connector(self) -> dict[str, Any]:
        c: dict[str, Any] = (await self.status())["connectors"][0]
        return c

    async def wait_connector(
        self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout_s: float = 5.0
    ) -> dict[str, Any]:
        """Poll /api/status (real time; the injected clock stays put) until it holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            c = await self.connector()
            if predicate(c):
                return c
            if loop.time() > deadline:
                raise AssertionError(f"{what} not reached in {timeout_s} s; last status {c}")
            await asyncio.sleep(0.02)

    # actions ----------------------------------------------------------------------------

    async def start_session(self) -> dict[str, Any]:
        """Plug in, tap the card: charging at the connector's maximum; the status."""
        self.car.plug()
        await self.wait_connector(
            lambda c: c["vehicle_state"] == "B" and c["status"] == "Preparing", "plugged (B)"
        )
        assert self.car.register == 0, "no current offered before authorization"
        assert self.app is not None
        assert self.app.shared["sim.reader"].present(CARD)
        await self.csms.wait_for(lambda f: f.action == "StartTransaction", timeout_s=5)
        await wait_until(lambda: self.car.state == STATE_C, "car in C", STEP_TIMEOUT_S)
        st = await self.wait_connector(
            lambda c: c["status"] == "Charging" and c["contactor_closed"], "Charging"
        )
        assert self.car.register == self.car.register_for(MAX_CURRENT_A)
        return st

    async def set_profile(self, body: dict[str, Any], connector_id: int = 1) -> str:
        frame = await self.csms.call_raw(
            STATION_ID,
            "SetChargingProfile",
            {"connectorId": connector_id, "csChargingProfiles": body},
            timeout_s=5,
        )
        assert frame[0] == 3, frame
        return str(frame[2]["status"])


def tx_default_profile(
    profile_id: int, periods: list[tuple[int, float]], start: datetime, duration_s: int | None
) -> dict[str, Any]:
    schedule: dict[str, Any] = {
        "chargingRateUnit": "A",
        "startSchedule": iso(start),
        "chargingSchedulePeriod": [{"startPeriod": s, "limit": lim} for s, lim in periods],
    }
    if duration_s is not None:
        schedule["duration"] = duration_s
    return {
        "chargingProfileId": profile_id,
        "stackLevel": 0,
        "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": schedule,
    }


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
async def make_charger() -> AsyncIterator[Callable[[bool], Any]]:
    reason = missing()
    if reason is not None:
        pytest.skip(f"smart charging over Modbus RTU needs socat and pymodbus: {reason}")
    made: list[tuple[ModbusCharger, Path]] = []

    async def make(precise: bool) -> ModbusCharger:
        workdir = Path(tempfile.mkdtemp(prefix="evsed-scmb-"))
        charger = ModbusCharger(workdir, ManualClock(), precise=precise)
        made.append((charger, workdir))
        await charger.start()
        return charger

    try:
        yield make
    finally:
        for charger, workdir in made:
            await charger.close()
            shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------- tests

#: (seconds into the schedule, limit in A); duration 240 s, then the hardware maximum.
PERIODS = [(0, 16.0), (60, 10.2), (120, 0.0), (180, 8.0)]
DURATION_S = 240


@pytest.mark.parametrize("precise", [False, True], ids=["whole-A", "centi-A"])
async def test_period_boundaries_reach_the_board_register(
    make_charger: Callable[[bool], Any], precise: bool
) -> None:
    """A TxDefaultProfile 16 A / 10.2 A after 60 s / 0 A after 120 s / 8 A after 180 s
    (duration 240 s) during a session: before each boundary the board still holds the old
    setpoint; right after it (no further clock movement) register 1000 holds the new one,
    written exactly once, and /api/status shows it. 0 A suspends: register 0, contactor
    open, car back in B, SuspendedEVSE; 8 A resumes: the setpoint reaches the board before
    the contactor closes. After the duration: the hardware maximum, limit_source Hardware."""
    rig: ModbusCharger = await make_charger(precise)
    clock = rig.clock
    assert isinstance(clock, ManualClock)
    st = await rig.start_session()
    assert st["offered_current_a"] == MAX_CURRENT_A
    assert st["limit_a"] == MAX_CURRENT_A and st["limit_source"] == "Hardware"

    # Only what the board receives from here on counts.
    n_writes = len(rig.car.setpoint_log)
    n_commands = len(rig.commands)
    start = clock.utc_now()
    body = tx_default_profile(7, PERIODS, start, DURATION_S)
    assert await rig.set_profile(body) == "Accepted"
    st = await rig.wait_connector(lambda c: c["limit_source"] == "TxDefault", "TxDefault limit")
    assert st["limit_a"] == 16.0 and st["offered_current_a"] == 16.0
    await asyncio.sleep(3 * BOARD_POLL_INTERVAL_S)  # a few board polls: nothing to write
    assert rig.car.setpoint_log[n_writes:] == []

    async def cross(at_s: int, limit_before_a: float) -> float:
        """Advance to 1 s before the boundary (nothing changes yet), then across it;
        returns time.monotonic() just before the clock passed it."""
        elapsed = (clock.utc_now() - start).total_seconds()
        before = len(rig.car.setpoint_log)
        await clock.advance(at_s - 1 - elapsed)
        await asyncio.sleep(2 * BOARD_POLL_INTERVAL_S)  # the board was polled meanwhile
        assert len(rig.car.setpoint_log) == before, f"written before the {at_s} s boundary"
        assert (await rig.connector())["limit_a"] == limit_before_a, f"before {at_s} s"
        t_before = time.monotonic()
        await clock.advance(1)
        return t_before

    # 60 s: 16 A -> 10.2 A, lowered while charging (the contactor stays closed).
    t_boundary = await cross(60, 16.0)
    want = rig.car.register_for(10.2)
    assert want == (1020 if precise else 10)
    await wait_until(lambda: rig.car.register == want, "register 1000 = 10.2 A", 5)
    st = await rig.wait_connector(lambda c: c["offered_current_a"] == 10.2, "offered 10.2 A")
    assert st["limit_a"] == 10.2 and st["limit_source"] == "TxDefault"
    assert st["contactor_closed"] and st["status"] == "Charging" and rig.car.state == STATE_C
    assert [v for _, v in rig.car.setpoint_log[n_writes:]] == [want]
    lowered_at, _ = rig.car.setpoint_log[-1]
    # Real time from the boundary to the board: one board read + one write, far below the
    # 1 s tick (generous: the machine may be loaded).
    assert lowered_at - t_boundary < 2.0

    # 120 s: 0 A -> suspended: register 0, contactor open, car in B, SuspendedEVSE.
    n_status = len(rig.csms.frames(STATION_ID, "StatusNotification"))
    await cross(120, 10.2)
    await wait_until(lambda: rig.car.register == 0, "register 1000 = 0", 5)
    await wait_until(lambda: rig.car.state == STATE_B, "car back in B", 5)
    st = await rig.wait_connector(
        lambda c: (
            c["status"] == "SuspendedEVSE"
            and not c["contactor_closed"]
            and c["vehicle_state"] == "B"  # once the board poll saw the car react
        ),
        "SuspendedEVSE, car in B",
    )
    assert st["offered_current_a"] == 0.0
    assert st["limit_a"] == 0.0 and st["limit_source"] == "TxDefault"
    assert st["transaction_id"] is not None
    await rig.csms.wait_for(
        lambda f: f.action == "StatusNotification" and f.payload["status"] == "SuspendedEVSE",
        timeout_s=5,
    )
    assert len(rig.csms.frames(STATION_ID, "StatusNotification")) > n_status
    zero_at = next(t for t, v in rig.car.setpoint_log[n_writes:] if v == 0)
    opened = [
        s
        for s in rig.commands[n_commands:]
        if isinstance(s.command, sm.SwitchContactor) and not s.command.on
    ]
    assert len(opened) == 1, rig.commands[n_commands:]
    # The contactor and the pilot go off together: the contactor command and the setpoint
    # reaching the board lie within one board poll of each other. (Order, for the record:
    # the state machine opens the contactor first, then the setpoint follows on the bus.)
    assert abs(zero_at - opened[0].at) < 2.0

    # 180 s: 8 A -> resumed; the setpoint reaches the board before the contactor closes.
    await cross(180, 0.0)
    want = rig.car.register_for(8.0)
    await wait_until(lambda: rig.car.register == want, "register 1000 = 8 A", 5)
    await wait_until(lambda: rig.car.state == STATE_C, "car in C again", 5)
    st = await rig.wait_connector(
        lambda c: c["status"] == "Charging" and c["contactor_closed"], "Charging again"
    )
    assert st["offered_current_a"] == 8.0
    assert st["limit_a"] == 8.0 and st["limit_source"] == "TxDefault"
    eight_at = next(t for t, v in rig.car.setpoint_log[n_writes:] if v == want)
    closed = [
        s
        for s in rig.commands[n_commands:]
        if isinstance(s.command, sm.SwitchContactor) and s.command.on
    ]
    assert len(closed) == 1 and closed[0].at > eight_at, rig.commands[n_commands:]
    assert closed[0].car_state == STATE_C  # closed for a car that asked, after the setpoint

    # 240 s: the schedule's duration is over; the hardware maximum applies again.
    await cross(DURATION_S, 8.0)
    want = rig.car.register_for(MAX_CURRENT_A)
    await wait_until(lambda: rig.car.register == want, "register 1000 = 16 A", 5)
    st = await rig.wait_connector(
        lambda c: c["limit_source"] == "Hardware", "hardware maximum again"
    )
    assert st["offered_current_a"] == 16.0 and st["limit_a"] == 16.0
    assert st["contactor_closed"] and st["status"] == "Charging"

    # Every change reached the board exactly once, in order, and nothing else was written.
    written = [v for _, v in rig.car.setpoint_log[n_writes:]]
    expected = [rig.car.register_for(a) for a in (10.2, 0.0, 8.0, 16.0)]
    assert written == expected, rig.car.setpoint_log[n_writes:]
    limits = [
        s.command.current_a
        for s in rig.commands[n_commands:]
        if isinstance(s.command, sm.SetCurrentLimit)
    ]
    assert limits == [10.2, 0.0, 8.0, 16.0]
    # Meter still read over the same line throughout (the board did not starve it).
    assert (await rig.connector())["meter_ok"] is True
