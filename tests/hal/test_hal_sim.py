"""Tests of the simulated drivers: pilot states, power flow, exact energy, fault injection."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hal.base import DeviceError, IndicatorState, VehicleState
from hal.registry import DriverConfigError, DriverContext, create_driver
from hal.sim import (
    FAULT_KIND_NAMES,
    FaultKind,
    SimContactor,
    SimFaultInput,
    SimIndicator,
    SimLock,
    SimMeter,
    SimRig,
    SimTokenReader,
    SimVehicle,
    get_rig,
)


class FakeClock:
    """A monotonic clock that only moves when the test says so."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


Rig = tuple[SimRig, SimVehicle, SimContactor, SimMeter]


def make_rig(
    clock: Callable[[], float], power_w: float = 11000.0, phases: int = 3, **meter: Any
) -> Rig:
    rig = SimRig(clock, phases=phases)
    return rig, SimVehicle(rig, power_w=power_w), SimContactor(rig), SimMeter(rig, **meter)


@pytest.fixture
def rig(clock: FakeClock) -> Rig:
    return make_rig(clock)


# --- vehicle states ----------------------------------------------------------------------


def test_vehicle_waits_in_b_until_current_is_offered(rig: Rig) -> None:
    _, vehicle, _, _ = rig
    seen: list[VehicleState] = []
    vehicle.start(seen.append)
    assert vehicle.state is VehicleState.A
    vehicle.plug()
    assert vehicle.state is VehicleState.B  # wants energy, but no PWM yet
    assert vehicle.wanted_state is VehicleState.C
    vehicle.set_max_current_a(16)
    assert vehicle.state is VehicleState.C
    vehicle.set_max_current_a(0)
    assert vehicle.state is VehicleState.B
    vehicle.set_max_current_a(10)
    vehicle.unplug()
    assert seen == [VehicleState.B, VehicleState.C, VehicleState.B, VehicleState.C, VehicleState.A]


def test_plug_with_current_offered_goes_straight_to_c(rig: Rig) -> None:
    _, vehicle, _, _ = rig
    seen: list[VehicleState] = []
    vehicle.start(seen.append)
    vehicle.set_max_current_a(16)
    assert seen == []  # nothing plugged in, offering current changes nothing
    vehicle.plug()
    assert seen == [VehicleState.C]


def test_callback_fires_once_per_change_not_per_call(rig: Rig) -> None:
    _, vehicle, _, _ = rig
    seen: list[VehicleState] = []
    vehicle.start(seen.append)
    vehicle.plug()
    vehicle.plug()  # already plugged: no-op
    vehicle.set_max_current_a(16)
    vehicle.set_max_current_a(32)  # still C
    vehicle.set_state(VehicleState.C)  # still C
    vehicle.set_state(VehicleState.D)
    assert seen == [VehicleState.B, VehicleState.C, VehicleState.D]
    vehicle.stop()
    vehicle.unplug()
    assert seen == [VehicleState.B, VehicleState.C, VehicleState.D]  # stopped: no callback
    assert vehicle.state is VehicleState.A


def test_car_that_does_not_want_energy_stays_in_b_and_plug_remembers_it(rig: Rig) -> None:
    _, vehicle, _, _ = rig
    vehicle.set_max_current_a(16)
    vehicle.set_state(VehicleState.B)
    assert vehicle.state is VehicleState.B
    vehicle.unplug()
    vehicle.plug()
    assert vehicle.state is VehicleState.B
    vehicle.set_state(VehicleState.D)
    vehicle.unplug()
    vehicle.plug()
    assert vehicle.state is VehicleState.D


def test_error_states_are_forced_until_set_again(rig: Rig) -> None:
    _, vehicle, _, _ = rig
    vehicle.set_state(VehicleState.E)
    assert vehicle.state is VehicleState.E
    vehicle.set_max_current_a(16)
    vehicle.plug()  # pilot still shorted
    assert vehicle.state is VehicleState.E
    vehicle.set_state(VehicleState.F)
    assert vehicle.state is VehicleState.F
    vehicle.set_state(VehicleState.C)
    assert vehicle.state is VehicleState.C
    vehicle.set_state(VehicleState.A)
    assert vehicle.state is VehicleState.A


def test_callback_may_reenter_the_vehicle(rig: Rig) -> None:
    """A runtime that withdraws the offer from inside the callback sees both changes."""
    _, vehicle, _, _ = rig
    seen: list[VehicleState] = []

    def on_state(state: VehicleState) -> None:
        seen.append(state)
        if state is VehicleState.C:
            vehicle.set_max_current_a(0)

    vehicle.start(on_state)
    vehicle.set_max_current_a(16)
    vehicle.plug()
    assert seen == [VehicleState.C, VehicleState.B]
    assert vehicle.state is VehicleState.B


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_current_is_rejected(rig: Rig, bad: float) -> None:
    _, vehicle, _, _ = rig
    with pytest.raises(ValueError):
        vehicle.set_max_current_a(bad)
    assert vehicle.max_current_a == 0.0


# --- power flow --------------------------------------------------------------------------


def test_car_draws_only_with_contactor_closed_state_c_and_current_offered(rig: Rig) -> None:
    simrig, vehicle, contactor, _ = rig
    vehicle.plug()
    contactor.set_closed(True)
    assert simrig.power_w() == 0.0  # B: no current offered
    vehicle.set_max_current_a(16)
    assert simrig.power_w() == 11000.0  # 16 A * 230 V * 3 = 11040 W > car's 11 kW
    contactor.set_closed(False)
    assert simrig.power_w() == 0.0
    contactor.set_closed(True)
    vehicle.set_state(VehicleState.B)  # car finished
    assert simrig.power_w() == 0.0
    vehicle.set_state(VehicleState.D)
    assert simrig.power_w() == 11000.0
    vehicle.set_state(VehicleState.E)
    assert simrig.power_w() == 0.0


def test_power_is_limited_by_offered_current(clock: FakeClock) -> None:
    simrig, vehicle, contactor, _ = make_rig(clock, power_w=22000.0, phases=1)
    vehicle.set_max_current_a(10)
    vehicle.plug()
    contactor.set_closed(True)
    assert simrig.power_w() == pytest.approx(2300.0)
    assert vehicle.drawn_power_w(contactor_closed=False) == 0.0


async def test_reading_shows_power_current_and_voltage_per_phase(rig: Rig) -> None:
    _, vehicle, contactor, meter = rig
    reading = await meter.read()
    assert reading.power_w == 0.0
    assert reading.voltage_v == (230.0, 230.0, 230.0)
    assert reading.current_a == (0.0, 0.0, 0.0)
    assert reading.frequency_hz == 50.0
    vehicle.set_max_current_a(16)
    vehicle.plug()
    contactor.set_closed(True)
    reading = await meter.read()
    assert reading.power_w == 11000.0
    assert reading.current_a == pytest.approx((11000 / 690,) * 3)


# --- energy integration ------------------------------------------------------------------


async def test_11_kw_for_half_an_hour_is_5500_wh(rig: Rig, clock: FakeClock) -> None:
    _, vehicle, contactor, meter = rig
    vehicle.set_max_current_a(16)
    vehicle.plug()
    contactor.set_closed(True)
    clock.advance(1800)
    assert (await meter.read()).energy_wh == pytest.approx(5500.0, abs=1e-9)


async def test_energy_is_exact_across_changes_without_reads(rig: Rig, clock: FakeClock) -> None:
    """No read in between: only the integrate-before-change makes this exact."""
    _, vehicle, contactor, meter = rig
    vehicle.set_max_current_a(16)
    vehicle.plug()
    clock.advance(600)  # contactor open: nothing
    contactor.set_closed(True)
    clock.advance(1800)  # 11 kW -> 5500 Wh
    vehicle.set_max_current_a(8)  # 8 A * 690 V = 5520 W
    clock.advance(3600)  # -> 5520 Wh
    vehicle.set_state(VehicleState.B)  # car pauses
    clock.advance(1000)
    vehicle.set_state(VehicleState.C, power_w=3000.0)  # 3 kW < 5520 W offered
    clock.advance(1200)  # -> 1000 Wh
    contactor.set_closed(False)
    clock.advance(500)
    vehicle.unplug()
    clock.advance(500)
    assert (await meter.read()).energy_wh == pytest.approx(5500 + 5520 + 1000, abs=1e-6)


async def test_meter_register_never_decreases(rig: Rig, clock: FakeClock) -> None:
    _, vehicle, contactor, meter = rig
    vehicle.set_max_current_a(16)
    vehicle.plug()
    contactor.set_closed(True)
    last_wh = 0.0
    for step_s in (1, 0, 10, 100, 0.5):
        clock.advance(step_s)
        energy_wh = (await meter.read()).energy_wh
        assert energy_wh >= last_wh
        last_wh = energy_wh
    clock.now_s -= 50  # a broken clock must not take energy back
    assert (await meter.read()).energy_wh == last_wh


@given(
    segments=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=7200),  # duration_s
            st.booleans(),  # contactor closed
            st.sampled_from([VehicleState.A, VehicleState.B, VehicleState.C, VehicleState.D]),
            st.sampled_from([0.0, 6.0, 16.0, 32.0]),  # offered current_a
        ),
        max_size=12,
    )
)
def test_energy_equals_sum_of_piecewise_constant_segments(
    segments: list[tuple[float, bool, VehicleState, float]],
) -> None:
    clock = FakeClock()
    simrig, vehicle, contactor, meter = make_rig(clock)
    expected_wh = 0.0
    for duration_s, closed, state, current_a in segments:
        contactor.set_closed(closed)
        vehicle.set_state(state)
        vehicle.set_max_current_a(current_a)
        expected_wh += simrig.power_w() * duration_s / 3600
        clock.advance(duration_s)
    assert meter.energy_wh == pytest.approx(expected_wh, rel=1e-9, abs=1e-6)


async def test_initial_energy_and_meter_created_after_flow_started(clock: FakeClock) -> None:
    rig = SimRig(clock)
    vehicle = SimVehicle(rig)
    contactor = SimContactor(rig)
    vehicle.set_max_current_a(16)
    vehicle.plug()
    contactor.set_closed(True)
    clock.advance(3600)  # no meter yet: not counted anywhere
    meter = SimMeter(rig, initial_energy_wh=1000.0)
    clock.advance(360)
    assert (await meter.read()).energy_wh == pytest.approx(1000.0 + 1100.0)


async def test_meter_failure_raises_device_error_but_keeps_counting(
    rig: Rig, clock: FakeClock
) -> None:
    _, vehicle, contactor, meter = rig
    vehicle.set_max_current_a(16)
    vehicle.plug()
    contactor.set_closed(True)
    meter.fail(True)
    clock.advance(1800)
    with pytest.raises(DeviceError):
        await meter.read()
    meter.fail(False)
    assert (await meter.read()).energy_wh == pytest.approx(5500.0)


# --- meter persistence -------------------------------------------------------------------


async def test_state_file_keeps_register_across_restart(tmp_path: Path, clock: FakeClock) -> None:
    state_file = tmp_path / "meter1.json"
    _, vehicle, contactor, meter = make_rig(clock, state_file=state_file, initial_energy_wh=100.0)
    vehicle.set_max_current_a(16)
    vehicle.plug()
    contactor.set_closed(True)
    clock.advance(1800)
    await meter.close_driver()
    assert json.loads(state_file.read_text())["energy_wh"] == pytest.approx(5600.0)
    assert not (tmp_path / "meter1.json.tmp").exists()

    # A new simulator process: initial_energy_wh is only for a missing file.
    restarted = SimMeter(SimRig(clock), initial_energy_wh=0.0, state_file=state_file)
    assert (await restarted.read()).energy_wh == pytest.approx(5600.0)


async def test_state_file_is_saved_at_most_once_per_interval(
    tmp_path: Path, clock: FakeClock
) -> None:
    state_file = tmp_path / "meter.json"
    _, vehicle, contactor, meter = make_rig(clock, state_file=state_file, save_interval_s=10.0)
    vehicle.set_max_current_a(16)
    vehicle.plug()
    contactor.set_closed(True)
    clock.advance(5)
    await meter.read()
    assert not state_file.exists()  # 5 s < 10 s since start
    clock.advance(5)
    await meter.read()
    saved_wh = json.loads(state_file.read_text())["energy_wh"]
    assert saved_wh == pytest.approx(11000 * 10 / 3600)
    clock.advance(3)
    await meter.read()
    assert json.loads(state_file.read_text())["energy_wh"] == saved_wh  # too soon
    # Without a clean close the restart loses at most one interval of energy.
    restarted = SimMeter(SimRig(clock), state_file=state_file)
    assert restarted.energy_wh == pytest.approx(saved_wh)


def test_corrupt_state_file_is_an_error_not_a_reset_to_zero(tmp_path: Path) -> None:
    state_file = tmp_path / "meter.json"
    state_file.write_text('{"energy_wh": "lots"}')
    with pytest.raises(ValueError, match="corrupt"):
        SimMeter(SimRig(FakeClock()), state_file=state_file)
    ctx = DriverContext(1, FakeClock(), {}, "connectors.1.meter")
    with pytest.raises(DriverConfigError) as info:
        create_driver("meter", "sim", {"state_file": str(state_file)}, ctx)
    assert info.value.key == "connectors.1.meter.state_file"


# --- contactor ---------------------------------------------------------------------------


def test_contactor_starts_open_and_records_history(rig: Rig, clock: FakeClock) -> None:
    _, _, contactor, _ = rig
    assert contactor.closed is False
    contactor.set_closed(True)
    clock.advance(2.5)
    contactor.close_driver()
    assert contactor.history == [(1000.0, True), (1002.5, False)]
    assert contactor.closed is False
    assert contactor.welded is False


async def test_welded_contactor_keeps_power_flowing(clock: FakeClock) -> None:
    rig = SimRig(clock)
    vehicle = SimVehicle(rig)
    contactor = SimContactor(rig, welded=True)
    meter = SimMeter(rig)
    vehicle.set_max_current_a(16)
    vehicle.plug()
    contactor.set_closed(False)
    assert contactor.welded is False  # never closed yet: nothing to weld
    contactor.set_closed(True)
    contactor.set_closed(False)
    assert contactor.closed is False
    assert contactor.welded is True
    assert contactor.physically_closed is True
    clock.advance(360)
    assert (await meter.read()).power_w == 11000.0
    assert meter.energy_wh == pytest.approx(1100.0)


# --- reader, lock, indicator, fault ------------------------------------------------------


@pytest.mark.parametrize(
    ("uid", "expected"),
    [("04a2b3c4", "04A2B3C4"), ("04A2B3C4D5E680", "04A2B3C4D5E680"), ("ab" * 20, "AB" * 20)],
)
def test_reader_delivers_upper_case_uid(uid: str, expected: str) -> None:
    reader = SimTokenReader()
    tokens: list[str] = []
    reader.start(tokens.append)
    assert reader.present(uid) is True
    assert tokens == [expected]


@pytest.mark.parametrize(
    "uid", ["", "04a2b3", "04a2b3c4d", "ab" * 21, "04:a2:b3:c4", "04a2b3zz", " 04a2b3c4", 1234]
)
def test_reader_rejects_invalid_uid(uid: Any) -> None:
    reader = SimTokenReader()
    tokens: list[str] = []
    reader.start(tokens.append)
    with pytest.raises(ValueError):
        reader.present(uid)
    assert tokens == []


def test_reader_ignores_cards_when_stopped() -> None:
    reader = SimTokenReader()
    tokens: list[str] = []
    assert reader.present("04A2B3C4") is False
    reader.start(tokens.append)
    reader.stop()
    assert reader.present("04A2B3C4") is False
    assert tokens == []


async def test_lock_moves_and_fails_on_request() -> None:
    lock = SimLock()
    assert lock.locked is False
    assert await lock.lock() is True
    assert lock.locked is True
    lock.set_failing(True)
    assert await lock.unlock() is False
    assert lock.locked is True  # did not move
    lock.set_failing(False)
    assert await lock.unlock() is True
    assert lock.locked is False
    assert await SimLock(fail=True).lock() is False


def test_indicator_remembers_state_and_history() -> None:
    indicator = SimIndicator()
    assert indicator.state is IndicatorState.OFF
    indicator.show(IndicatorState.AVAILABLE)
    indicator.show(IndicatorState.CHARGING)
    assert indicator.state is IndicatorState.CHARGING
    assert indicator.history == [IndicatorState.AVAILABLE, IndicatorState.CHARGING]


def test_fault_input_reports_changes_once() -> None:
    fault = SimFaultInput()
    seen: list[str | None] = []
    fault.start(seen.append)
    assert fault.active_fault is None
    fault.inject("GroundFailure")
    fault.inject("GroundFailure")
    fault.inject("HighTemperature")
    fault.clear()
    fault.clear()
    assert seen == ["GroundFailure", "HighTemperature", None]
    assert fault.active_fault is None


@pytest.mark.parametrize("code", ["NoError", "groundfailure", "Fire", ""])
def test_fault_input_rejects_unknown_codes(code: str) -> None:
    fault = SimFaultInput()
    with pytest.raises(ValueError):
        fault.inject(code)
    assert fault.active_fault is None


def test_every_fault_kind_is_accepted_by_name() -> None:
    """The 14 hardware fault kinds: the 13 of 1.6 that are a connector's hardware
    (LocalListConflict and ResetFailure are protocol conditions) and Tamper (a lid switch)."""
    assert len(FAULT_KIND_NAMES) == 14
    fault = SimFaultInput()
    for code in sorted(FAULT_KIND_NAMES):
        fault.inject(code)
        assert fault.active_fault is FaultKind(code)


# --- created through the registry --------------------------------------------------------


async def test_registry_links_devices_of_one_connector(clock: FakeClock) -> None:
    shared: dict[str, Any] = {}

    def ctx(connector_id: int, role: str) -> DriverContext:
        return DriverContext(connector_id, clock, shared, f"connectors.{connector_id}.{role}")

    # The meter comes first: the vehicle's rig settings must still apply to its rig.
    meter = create_driver("meter", "sim", {}, ctx(1, "meter"))
    vehicle = create_driver(
        "vehicle", "sim", {"power_w": 7400.0, "phases": 1, "voltage_v": 230}, ctx(1, "vehicle")
    )
    contactor = create_driver("contactor", "sim", {"driver": "sim"}, ctx(1, "contactor"))
    other_meter = create_driver("meter", "sim", {}, ctx(2, "meter"))
    reader = create_driver("reader", "sim", {}, DriverContext(0, clock, shared, "reader"))

    rig = get_rig(ctx(1, "meter"))
    assert (rig.meter, rig.vehicle, rig.contactor) == (meter, vehicle, contactor)
    assert rig.phases == 1
    assert shared["sim.reader"] is reader
    vehicle.set_max_current_a(32)
    vehicle.plug()
    contactor.set_closed(True)
    clock.advance(3600)
    assert (await meter.read()).energy_wh == pytest.approx(7360.0)  # 32 A * 230 V
    assert (await other_meter.read()).energy_wh == 0.0


@pytest.mark.parametrize(
    ("role", "settings", "key"),
    [
        ("vehicle", {"phases": 2}, "connectors.1.vehicle.phases"),
        ("vehicle", {"power_w": "11kW"}, "connectors.1.vehicle.power_w"),
        ("vehicle", {"voltag_v": 230}, "connectors.1.vehicle.voltag_v"),
        ("contactor", {"welded": "yes"}, "connectors.1.contactor.welded"),
        ("meter", {"initial_energy_wh": -1}, "connectors.1.meter.initial_energy_wh"),
        ("meter", {"state_file": 5}, "connectors.1.meter.state_file"),
        ("lock", {"fail": 1}, "connectors.1.lock.fail"),
        ("indicator", {"colour": "red"}, "connectors.1.indicator.colour"),
        ("fault", {"code": "GroundFailure"}, "connectors.1.fault.code"),
        ("reader", {"port": "/dev/ttyUSB0"}, "connectors.1.reader.port"),
    ],
)
def test_sim_factories_reject_bad_settings(
    clock: FakeClock, role: str, settings: dict[str, Any], key: str
) -> None:
    ctx = DriverContext(1, clock, {}, f"connectors.1.{role}")
    with pytest.raises(DriverConfigError) as info:
        create_driver(role, "sim", settings, ctx)
    assert info.value.key == key
    assert key in str(info.value)
