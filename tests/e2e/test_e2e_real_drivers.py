"""`evsed run` with the real drivers, end to end, against a test CSMS.

Nothing in the charger child is simulated: the contactor is the "gpio" driver (gpiozero on
its mock pin factory, BCM 17), the meter is the "modbus" driver (Eastron SDM630 map, unit 1)
and the vehicle interface the "evse-din" driver (unit 2), both on the same RS-485 line,
here one end of a socat pty pair; the card reader is the "pcsc" driver on a private pcscd
with a vsmartcard-vpcd virtual reader. The other end of the pty carries ONE pymodbus RTU
server with both units, emulating the meter and the EVSE-DIN board with a car behind it:

* vehicle state register 1002: A (1) unplugged; B (2) plugged while setpoint 1000 < 6 A
  (or the car wants no energy); C (3) plugged, setpoint >= 6 A and the car wants energy.
  The car reacts at once to a write of 1000 (a real car takes up to a few seconds).
* while in C the meter's import register advances by ``power_w * dt`` (power = setpoint x
  230 V x 3 phases), updated by a background task and before every answer of unit 1, so
  a read sees the energy up to that moment.

``RealRig`` is shared with bench/real_tap_to_contactor.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymodbus.constants import ExcCodes

from controller.dev.devcsms import DevCsms, Frame
from hal.base import MeterReading
from hal.modbus import load_model
from tests.modbus_sim import SOCAT, EvseDinSim, SimLine, SimSlave, SocatPair
from tests.procs import Evsed, free_port
from tests.vpcd_card import PcscdProcess, VirtualCard, missing_requirements

STATION = "CP-REAL"
CARD = "04A1B2C3"
METER_UNIT = 1
BOARD_UNIT = 2
GPIO_PIN = 17
MAX_CURRENT_A = 16
TICK_INTERVAL_S = 0.2
BOARD_POLL_INTERVAL_S = 0.2
METER_TIMEOUT_S = 0.3
SAMPLE_INTERVAL_S = 2
INITIAL_ENERGY_WH = 1_234_500.0  # 1234.5 kWh: float32 keeps ~0.1 Wh at this size
VOLTAGE_V = 230.0
PHASES = 3
CAR_STEP_S = 0.05
# pcscd asks vpcd for card presence every 400 ms: wait longer after a removal so the
# next insert is a new presentation, not the same one.
PCSCD_POLL_S = 0.4
REMOVAL_SETTLE_S = 0.6

# Vehicle state register values (hal/evse_board.py).
STATE_A, STATE_B, STATE_C = 1, 2, 3
STATE_LETTER = {STATE_A: "A", STATE_B: "B", STATE_C: "C"}


def missing() -> str | None:
    """Why the real-driver rig cannot run here, or None."""
    if SOCAT is None:
        return "socat is not installed (apt-get install socat): the RS-485 line is a pty pair"
    return missing_requirements()


# --------------------------------------------------------------------------- the emulated car


class MeterSim(SimSlave):
    """SDM630 (unit 1): brings the car's energy up to date before answering."""

    def __init__(self, unit_id: int) -> None:
        super().__init__(unit_id)
        self.car: CarBoardSim | None = None

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if self.car is not None:
            self.car.update()
        return await super().action(
            function_code, start_address, address, count, current_registers, set_values
        )


class CarBoardSim(EvseDinSim):
    """EVSE-DIN board (unit 2) with a car behind it that charges through ``meter``."""

    def __init__(self, unit_id: int, meter: MeterSim, energy_wh: float) -> None:
        super().__init__(unit_id)
        self.meter = meter
        meter.car = self
        self.regmap = load_model("eastron_sdm630")
        self.plugged = False
        self.wants_energy = True
        self.energy_wh = energy_wh
        self.power_w = 0.0
        self._last_s = time.monotonic()
        # (monotonic time, new state register value, energy at that moment)
        self.transitions: list[tuple[float, int, float]] = []
        self.set_vehicle(STATE_A)
        self._fill_meter()

    @property
    def state(self) -> int:
        return self.holding[1002]

    def plug(self) -> None:
        self.plugged = True
        self.update()

    def unplug(self) -> None:
        self.plugged = False
        self.update()

    def update(self) -> None:
        """Integrate energy since the last update, then derive the pilot state."""
        now = time.monotonic()
        if self.state == STATE_C:
            self.energy_wh += self.power_w * (now - self._last_s) / 3600.0
        self._last_s = now
        setpoint_a = self.setpoint  # whole amperes: "precise current" is off
        if not self.plugged:
            state = STATE_A
        elif setpoint_a >= 6 and self.wants_energy:
            state = STATE_C
        else:
            state = STATE_B
        self.power_w = setpoint_a * VOLTAGE_V * PHASES if state == STATE_C else 0.0
        if state != self.state:
            self.transitions.append((now, state, self.energy_wh))
            self.set_vehicle(state)
        self._fill_meter()

    def _fill_meter(self) -> None:
        current_a = self.power_w / (VOLTAGE_V * PHASES)
        reading = MeterReading(
            energy_wh=self.energy_wh,
            power_w=self.power_w,
            voltage_v=(VOLTAGE_V,) * PHASES,
            current_a=(current_a,) * PHASES,
            frequency_hz=50.0,
            energy_export_wh=0.0,
        )
        self.meter.fill_meter(self.regmap, reading)

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        self.update()  # the state the board reports is the one of this moment
        result = await super().action(
            function_code, start_address, address, count, current_registers, set_values
        )
        if set_values is not None:
            self.update()  # a new setpoint: the car reacts at once
        return result

    async def run(self) -> None:
        while True:
            await asyncio.sleep(CAR_STEP_S)
            self.update()


# --------------------------------------------------------------------------- the rig


@dataclass
class RigOptions:
    board_poll_interval_s: float = BOARD_POLL_INTERVAL_S
    tick_interval_s: float = TICK_INTERVAL_S
    sample_interval_s: int = SAMPLE_INTERVAL_S
    log_level: str = "INFO"
    # "rtu": one RS-485 line on a socat pty pair; "tcp": the same devices behind a Modbus
    # TCP gateway on 127.0.0.1.
    transport: str = "rtu"
    meter_timeout_s: float = METER_TIMEOUT_S
    # The meter does not answer from the start (it boots slower than the Pi, wrong unit id,
    # gateway unreachable): start() then waits for the CSMS only, not for Available.
    meter_muted_at_start: bool = False
    aligned_interval_s: int = 0  # ClockAlignedDataInterval


class RealRig:
    """socat pty + Modbus server (meter + board/car), pcscd + vpcd card, DevCsms, evsed."""

    def __init__(self, workdir: Path, options: RigOptions | None = None) -> None:
        self.workdir = workdir
        self.options = options or RigOptions()
        self.pair = SocatPair(workdir, "rs485")
        self.tcp_port: int | None = None
        self.meter = MeterSim(METER_UNIT)
        self.car = CarBoardSim(BOARD_UNIT, self.meter, INITIAL_ENERGY_WH)
        self.line = SimLine([self.meter, self.car])
        self.pcscd = PcscdProcess(workdir / "pcscd")
        self.card = VirtualCard(CARD, self.pcscd.port)
        self.csms = DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600)
        self.api_port = free_port()
        self.ev: Evsed | None = None
        self._car_task: asyncio.Task[None] | None = None
        self._csms_started = False

    # lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self.options.transport == "tcp":
            self.tcp_port = await self.line.start_tcp()
        else:
            self.pair.start()
            await self.line.start_rtu(self.pair.b)
        self.meter.muted = self.options.meter_muted_at_start
        self._car_task = asyncio.get_running_loop().create_task(self.car.run(), name="car")
        self.pcscd.start()
        await self.csms.start()
        self._csms_started = True
        config = self.write_config()
        self.ev = Evsed(config, self.api_port, self.workdir)
        # libpcsclite in the child finds the private pcscd through this variable; this
        # process makes no PC/SC call, so it is set only around the fork.
        old = os.environ.get("PCSCLITE_CSOCK_NAME")
        os.environ["PCSCLITE_CSOCK_NAME"] = str(self.pcscd.socket_path)
        try:
            self.ev.start()
        finally:
            if old is None:
                os.environ.pop("PCSCLITE_CSOCK_NAME", None)
            else:
                os.environ["PCSCLITE_CSOCK_NAME"] = old
        await self.ev.wait_api()
        await self.csms.wait_connected(STATION, timeout_s=15)
        if self.options.meter_muted_at_start:
            await self.ev.wait_status(lambda s: s["csms"]["state"] == "accepted", what="accepted")
            return
        await self.ev.wait_status(
            lambda s: (
                s["csms"]["state"] == "accepted" and s["connectors"][0]["status"] == "Available"
            ),
            what="accepted and Available",
        )

    async def close(self) -> None:
        """Stop everything this rig started, children by pid; never raises."""
        if self.ev is not None:
            for proc in self.ev.all_procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.to_thread(proc.wait, 5)
                    except subprocess.TimeoutExpired:
                        pass
            self.ev.cleanup()  # SIGKILL whatever did not exit
        self.card.remove()
        if self._car_task is not None:
            self._car_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._car_task
        with contextlib.suppress(Exception):
            await self.line.stop()
        self.pair.stop()
        self.pcscd.close()
        if self._csms_started:
            with contextlib.suppress(Exception):
                await self.csms.stop()

    def write_config(self) -> Path:
        o = self.options
        if o.transport == "tcp":
            line = f'host = "127.0.0.1"\ntcp_port = {self.tcp_port}'
        else:
            line = f"port = {json.dumps(self.pair.a)}"
        text = f"""
[station]
id = "{STATION}"
storage = {json.dumps(str(self.workdir / "evsed.db"))}
tick_interval_s = {o.tick_interval_s}

[api]
host = "127.0.0.1"
port = {self.api_port}

[csms]
url = "{self.csms.url}"
reconnect_min_s = 0.05
reconnect_max_s = 0.3
response_timeout_s = 5

[reader]
driver = "pcsc"
reader = {json.dumps(self.pcscd.reader_names[0])}

[[connectors]]
max_current_a = {MAX_CURRENT_A}

[connectors.contactor]
driver = "gpio"
pin_factory = "mock"
pin = {GPIO_PIN}

[connectors.meter]
driver = "modbus"
model = "eastron_sdm630"
{line}
unit_id = {METER_UNIT}
timeout_s = {o.meter_timeout_s}
retries = 0

[connectors.vehicle]
driver = "evse-din"
{line}
unit_id = {BOARD_UNIT}
poll_interval_s = {o.board_poll_interval_s}

[ocpp]
MeterValueSampleInterval = {o.sample_interval_s}
ClockAlignedDataInterval = {o.aligned_interval_s}
HeartbeatInterval = 3600

[logging]
level = "{o.log_level}"
"""
        path = self.workdir / "evsed.toml"
        path.write_text(text, encoding="utf-8")
        return path

    # actions ----------------------------------------------------------------------------

    async def present_card(self) -> None:
        """Put the card on the reader (it stays there until ``take_card``)."""
        await asyncio.to_thread(self.card.insert)

    async def take_card(self) -> None:
        """Take the card away and wait until pcscd has surely noticed."""
        await asyncio.to_thread(self.card.remove)
        await asyncio.sleep(REMOVAL_SETTLE_S)

    async def status(self) -> dict[str, Any]:
        assert self.ev is not None
        st: dict[str, Any] = (await self.ev.status())["connectors"][0]
        return st

    async def wait_connector(
        self, predicate: Any, what: str, timeout_s: float = 10.0
    ) -> dict[str, Any]:
        assert self.ev is not None
        st = await self.ev.wait_status(
            lambda s: predicate(s["connectors"][0]), timeout_s=timeout_s, what=what
        )
        c: dict[str, Any] = st["connectors"][0]
        return c

    async def wait_car(self, state: int, what: str, timeout_s: float = 10.0) -> None:
        await wait_until(lambda: self.car.state == state, what, timeout_s, self)

    def frames(self, action: str) -> list[Frame]:
        return self.csms.frames(STATION, action)

    async def wait_reported(self, status: str, timeout_s: float) -> Frame:
        """The next StatusNotification of connector 1 with ``status`` at the CSMS."""
        return await self.csms.wait_for(
            lambda f: (
                f.action == "StatusNotification"
                and f.payload["connectorId"] == 1
                and f.payload["status"] == status
            ),
            timeout_s=timeout_s,
        )

    def statuses(self) -> list[tuple[str, str]]:
        return [
            (f.payload["status"], f.payload["errorCode"])
            for f in self.frames("StatusNotification")
            if f.payload["connectorId"] == 1
        ]

    def log_tail(self) -> str:
        return self.ev.log_tail(60) if self.ev is not None else ""


async def wait_until(
    predicate: Any, what: str, timeout_s: float = 10.0, rig: RealRig | None = None
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            tail = rig.log_tail() if rig is not None else ""
            raise AssertionError(f"{what} not reached in {timeout_s} s\n{tail}")
        await asyncio.sleep(0.02)


def energy_of(f: Frame) -> float:
    """Energy.Active.Import.Register of a MeterValues (the measurand when none is named)."""
    for mv in f.payload["meterValue"]:
        for sv in mv["sampledValue"]:
            if sv.get("measurand", "Energy.Active.Import.Register") == (
                "Energy.Active.Import.Register"
            ):
                value = float(sv["value"])
                return value * 1000 if sv.get("unit") == "kWh" else value
    raise AssertionError(f"no energy register in {f.payload}")


def energy_tolerance_wh(power_w: float) -> float:
    """One poll of the board plus one station tick of energy, plus rounding to whole Wh."""
    return power_w * (BOARD_POLL_INTERVAL_S + TICK_INTERVAL_S + CAR_STEP_S) / 3600.0 + 1.0


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
async def rig() -> AsyncIterator[RealRig]:
    reason = missing()
    if reason is not None:
        pytest.skip(f"real-driver e2e needs socat, pcscd, vsmartcard-vpcd and pyscard: {reason}")
    # A short path: pcscd's socket lives in it (AF_UNIX paths are limited to 107 bytes).
    workdir = Path(tempfile.mkdtemp(prefix="evsed-real-"))
    r = RealRig(workdir)
    try:
        await r.start()
        yield r
    finally:
        await r.close()
        shutil.rmtree(workdir, ignore_errors=True)


async def start_session(rig: RealRig) -> tuple[Frame, dict[str, Any]]:
    """Plug, present the card; returns the StartTransaction and the status once charging."""
    rig.car.plug()
    await rig.wait_connector(
        lambda c: c["vehicle_state"] == "B" and c["status"] == "Preparing", "plugged: B"
    )
    assert rig.car.setpoint == 0, "no current may be offered before authorization"

    await rig.present_card()
    auth = await rig.csms.wait_for(lambda f: f.action == "Authorize", timeout_s=5)
    assert auth.payload["idTag"] == CARD
    start = await rig.csms.wait_for(lambda f: f.action == "StartTransaction", timeout_s=5)
    assert start.payload["idTag"] == CARD
    assert start.payload["connectorId"] == 1
    # The board is told the connector's maximum, the car goes to C, the contactor closes.
    await wait_until(lambda: rig.car.setpoint == MAX_CURRENT_A, "setpoint 16 A", 5, rig)
    await rig.wait_car(STATE_C, "car in C")
    st = await rig.wait_connector(
        lambda c: (
            c["contactor_closed"] and c["status"] == "Charging" and c["transaction_id"] is not None
        ),
        "charging",
    )
    assert st["vehicle_state"] == "C"
    assert st["offered_current_a"] == MAX_CURRENT_A
    assert abs(start.payload["meterStart"] - INITIAL_ENERGY_WH) <= 1
    await rig.take_card()
    return start, st


async def stop_session(rig: RealRig) -> Frame:
    """Present the card again: StopTransaction Local, setpoint 0, car back in B."""
    n_stops = len(rig.frames("StopTransaction"))
    await rig.present_card()
    await wait_until(lambda: len(rig.frames("StopTransaction")) > n_stops, "StopTx", 5, rig)
    stop = rig.frames("StopTransaction")[n_stops]
    await wait_until(lambda: rig.car.setpoint == 0, "setpoint back to 0", 5, rig)
    await rig.wait_car(STATE_B, "car back in B")
    st = await rig.wait_connector(
        lambda c: not c["contactor_closed"] and c["transaction_key"] is None, "stopped"
    )
    assert st["status"] == "Finishing"
    await rig.take_card()
    return stop


def check_stop(rig: RealRig, start: Frame, stop: Frame, tx_id: int) -> None:
    assert stop.payload["transactionId"] == tx_id
    assert stop.payload["reason"] == "Local"
    assert stop.payload["idTag"] == CARD
    session_wh = stop.payload["meterStop"] - start.payload["meterStart"]
    emulated_wh = rig.car.energy_wh - INITIAL_ENERGY_WH
    tolerance = energy_tolerance_wh(MAX_CURRENT_A * VOLTAGE_V * PHASES)
    assert emulated_wh > 0
    assert abs(session_wh - emulated_wh) <= tolerance, (session_wh, emulated_wh, tolerance)


async def unplug_to_available(rig: RealRig) -> None:
    rig.car.unplug()
    st = await rig.wait_connector(
        lambda c: c["status"] == "Available" and c["vehicle_state"] == "A", "Available"
    )
    assert not st["contactor_closed"]
    await wait_until(lambda: rig.statuses()[-1] == ("Available", "NoError"), "Available", 5, rig)


# --------------------------------------------------------------------------- tests


async def test_charging_session_with_real_drivers(rig: RealRig) -> None:
    """Plug (B) -> card on the virtual reader -> Authorize + StartTransaction -> setpoint 16 A
    -> car in C -> contactor closed -> MeterValues with the emulated, rising energy -> card
    again -> StopTransaction Local with the emulated session energy -> 0 A -> unplug ->
    Available."""
    start, st = await start_session(rig)
    tx_id = st["transaction_id"]

    # Two periodic samples while charging; the register rises between them.
    def mvs() -> list[Frame]:
        return [f for f in rig.frames("MeterValues") if f.payload.get("transactionId") == tx_id]

    await wait_until(lambda: len(mvs()) >= 2, "2 MeterValues", 3 * SAMPLE_INTERVAL_S + 2, rig)
    energies = [energy_of(f) for f in mvs()]
    assert energies == sorted(energies)
    assert energies[-1] > energies[0] >= start.payload["meterStart"]
    st = await rig.status()
    assert st["power_w"] == pytest.approx(MAX_CURRENT_A * VOLTAGE_V * PHASES, rel=1e-3)
    assert st["contactor_closed"] is True

    stop = await stop_session(rig)
    check_stop(rig, start, stop, tx_id)
    assert stop.payload["meterStop"] >= max(energies)
    await unplug_to_available(rig)

    # In order (SuspendedEV may show while the board has not yet reported C).
    statuses = [s for s, _ in rig.statuses()]
    seen = iter(statuses)
    want = ["Available", "Preparing", "Charging", "Finishing", "Available"]
    assert all(s in seen for s in want), statuses
    assert statuses[-1] == "Available" and "Faulted" not in statuses, statuses
    assert len(rig.frames("StartTransaction")) == 1
    assert len(rig.frames("StopTransaction")) == 1
    # The board saw 16 A while charging and 0 A at the end; nothing else was written.
    written = {values[0] for address, values in rig.car.writes if address == 1000}
    assert written == {0, MAX_CURRENT_A}, rig.car.writes


async def test_meter_stops_answering_mid_session(rig: RealRig) -> None:
    """Unit 1 goes silent while charging: after three failed reads the connector is Faulted
    with PowerMeterFailure, the contactor opens and the board is set to 0 A; once the meter
    answers again the fault clears and charging resumes in the same transaction."""
    start, st = await start_session(rig)
    tx_id = st["transaction_id"]

    rig.meter.muted = True
    await rig.wait_reported("Faulted", timeout_s=8)
    assert rig.statuses()[-1] == ("Faulted", "PowerMeterFailure")
    st = await rig.wait_connector(lambda c: not c["contactor_closed"], "contactor open")
    assert st["status"] == "Faulted"
    assert st["error_code"] == "PowerMeterFailure"
    assert st["transaction_id"] == tx_id  # the transaction goes on, suspended
    await wait_until(lambda: rig.car.setpoint == 0, "setpoint 0 while faulted", 5, rig)
    await rig.wait_car(STATE_B, "car stops drawing (B)")
    assert rig.meter.requests > 0

    n_status = len(rig.statuses())
    rig.meter.muted = False
    await wait_until(
        lambda: ("Charging", "NoError") in rig.statuses()[n_status:],
        "Charging again at the CSMS",
        8,
        rig,
    )
    st = await rig.wait_connector(
        lambda c: c["contactor_closed"] and c["status"] == "Charging", "charging again"
    )
    assert st["transaction_id"] == tx_id
    assert rig.car.setpoint == MAX_CURRENT_A
    await rig.wait_car(STATE_C, "car in C again")
    await asyncio.sleep(0.5)  # some energy after the recovery

    stop = await stop_session(rig)
    check_stop(rig, start, stop, tx_id)
    await unplug_to_available(rig)
    assert len(rig.frames("StopTransaction")) == 1
