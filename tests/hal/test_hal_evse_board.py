"""EVSE-DIN vehicle driver against a simulated board over real RTU framing (socat pty)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from hal.base import DeviceError, VehicleState
from hal.evse_board import REG_CURRENT, EvseDinBoard, create_evse_din
from hal.registry import DriverConfigError, DriverContext, create_driver
from tests.modbus_sim import EvseDinSim, SimLine, SocatPair, require_socat

UNIT = 3


def ctx() -> DriverContext:
    return DriverContext(connector_id=1, key_prefix="connectors.1.vehicle")


async def wait_until(condition: Callable[[], bool], timeout_s: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[SocatPair]:
    require_socat()
    p = SocatPair(tmp_path).start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
async def board(pair: SocatPair) -> AsyncIterator[EvseDinSim]:
    sim = EvseDinSim(UNIT)
    line = await SimLine([sim]).start_rtu(pair.b)
    try:
        yield sim
    finally:
        await line.stop()


@pytest.fixture
async def vehicle(pair: SocatPair, board: EvseDinSim) -> AsyncIterator[EvseDinBoard]:
    device = create_evse_din(
        {"port": pair.a, "unit_id": UNIT, "poll_interval_s": 0.05, "timeout_s": 0.15, "retries": 1},
        ctx(),
    )
    try:
        yield device
    finally:
        device.stop()
        await device.aclose()


async def test_states_are_reported_through_the_callback(
    vehicle: EvseDinBoard, board: EvseDinSim
) -> None:
    seen: list[VehicleState] = []
    assert vehicle.state is VehicleState.F  # not known until the board answered
    vehicle.start(seen.append)
    await wait_until(lambda: vehicle.state is VehicleState.A)
    for register, state in ((2, "B"), (3, "C"), (4, "D"), (2, "B"), (5, "E"), (1, "A")):
        board.set_vehicle(register)
        await wait_until(lambda s=state: vehicle.state.value == s)  # type: ignore[misc]
    assert [s.value for s in seen] == ["A", "B", "C", "D", "B", "E", "A"]
    assert vehicle.firmware == 18


async def test_unknown_state_value_means_not_available(
    vehicle: EvseDinBoard, board: EvseDinSim
) -> None:
    vehicle.start(lambda s: None)
    await wait_until(lambda: vehicle.state is VehicleState.A)
    board.set_vehicle(9)
    await wait_until(lambda: vehicle.state is VehicleState.F)


async def test_set_max_current_writes_the_setpoint_register(
    vehicle: EvseDinBoard, board: EvseDinSim
) -> None:
    vehicle.start(lambda s: None)
    # At start the board holds its power-on default (13 A): the driver offers nothing.
    await wait_until(lambda: board.setpoint == 0)
    assert vehicle.max_current_a == 0
    vehicle.set_max_current_a(16)
    await wait_until(lambda: board.setpoint == 16)
    assert vehicle.max_current_a == 16
    vehicle.set_max_current_a(10.9)  # rounded down: never offer more than asked
    await wait_until(lambda: board.setpoint == 10)
    vehicle.set_max_current_a(5)  # below the 6 A a pilot can advertise: nothing
    await wait_until(lambda: board.setpoint == 0)
    vehicle.set_max_current_a(100)
    await wait_until(lambda: board.setpoint == 80)
    assert all(address == REG_CURRENT for address, _ in board.writes)
    with pytest.raises(ValueError):
        vehicle.set_max_current_a(-1)


async def test_board_reboot_setpoint_is_written_again(
    vehicle: EvseDinBoard, board: EvseDinSim
) -> None:
    vehicle.start(lambda s: None)
    vehicle.set_max_current_a(0)
    await wait_until(lambda: board.setpoint == 0)
    writes = len(board.writes)
    board.holding[REG_CURRENT] = 32  # power-on default after a brown-out
    await wait_until(lambda: board.setpoint == 0 and len(board.writes) == writes + 1)


async def test_precise_current_boards_take_hundredths(pair: SocatPair) -> None:
    sim = EvseDinSim(1, firmware=17, precise=True)
    line = await SimLine([sim]).start_rtu(pair.b)
    device = create_driver("vehicle", "evse-din", {"port": pair.a, "poll_interval_s": 0.05}, ctx())
    assert isinstance(device, EvseDinBoard)
    try:
        device.start(lambda s: None)
        device.set_max_current_a(16.7)
        await wait_until(lambda: sim.setpoint == 1670)
    finally:
        device.stop()
        await device.aclose()
        await line.stop()
    assert sim.setpoint == 0  # stop() offers nothing any more


async def test_comm_loss_reports_f_and_recovers(vehicle: EvseDinBoard, board: EvseDinSim) -> None:
    seen: list[VehicleState] = []
    vehicle.start(seen.append)
    board.set_vehicle(3)
    await wait_until(lambda: vehicle.state is VehicleState.C)
    board.muted = True
    await wait_until(lambda: vehicle.state is VehicleState.F)
    assert vehicle.failed_polls >= 1
    board.muted = False
    await wait_until(lambda: vehicle.state is VehicleState.C)
    assert [s.value for s in seen] == ["C", "F", "C"]


async def test_stop_sets_zero_and_stops_polling(vehicle: EvseDinBoard, board: EvseDinSim) -> None:
    calls: list[Any] = []
    vehicle.start(calls.append)
    vehicle.set_max_current_a(16)
    await wait_until(lambda: board.setpoint == 16)
    vehicle.stop()
    await vehicle.aclose()
    assert board.setpoint == 0
    requests = board.requests
    board.set_vehicle(2)
    await asyncio.sleep(0.2)
    assert board.requests == requests and vehicle.state is not VehicleState.B


async def test_garbled_answers_report_f_and_recover(
    vehicle: EvseDinBoard, board: EvseDinSim
) -> None:
    seen: list[VehicleState] = []
    vehicle.start(seen.append)
    board.set_vehicle(2)
    await wait_until(lambda: vehicle.state is VehicleState.B)
    board.corrupt = 1_000_000  # every answer fails its CRC
    await wait_until(lambda: vehicle.state is VehicleState.F)
    board.corrupt = 0
    await wait_until(lambda: vehicle.state is VehicleState.B)
    assert [s.value for s in seen] == ["B", "F", "B"]


class FakeLink:
    """A DeviceLink stand-in answering from a register table at once (no serial line)."""

    def __init__(self) -> None:
        self.registers = {1000: 13, 1001: 13, 1002: 1, 1005: 18, 2005: 0}
        self.fail: BaseException | None = None
        self.released = False

    async def read_registers(
        self, function: int, address: int, count: int, stats: Any = None
    ) -> list[int]:
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        return [self.registers.get(address + i, 0) for i in range(count)]

    async def write_registers(self, address: int, values: list[int], stats: Any = None) -> None:
        await asyncio.sleep(0)
        for i, value in enumerate(values):
            self.registers[address + i] = value

    def release(self) -> None:
        self.released = True


async def test_stop_is_not_lost_when_a_wake_up_coincides() -> None:
    # Regression: the poll loop waited with asyncio.wait_for(event.wait(), interval), which on
    # Python 3.11 returns instead of raising CancelledError when the event fires in the same
    # loop iteration as the cancel; stop() was lost, the board polled on and aclose() hung.
    link = FakeLink()
    device = EvseDinBoard(cast(Any, link), poll_interval_s=10.0)
    device.start(lambda s: None)
    await wait_until(lambda: device.state is VehicleState.A)
    await asyncio.sleep(0.01)  # the poll loop now waits for a wake-up or the next poll
    task = device._task
    assert task is not None
    device.set_max_current_a(16)  # wakes the loop (via call_soon_threadsafe) ...
    await asyncio.sleep(0)  # ... the event is set ...
    await asyncio.sleep(0)  # ... its waiter has finished, the poll loop not yet resumed
    device.stop()
    done, _ = await asyncio.wait({task}, timeout=1.0)  # does not cancel it once more
    assert done, "stop() was lost: the poll loop runs on"
    async with asyncio.timeout(2):
        await device.aclose()
    assert link.registers[REG_CURRENT] == 0 and link.released
    polls = device.polls
    await asyncio.sleep(0.05)
    assert device.polls == polls


async def test_unexpected_errors_report_f_and_polling_goes_on() -> None:
    link = FakeLink()
    device = EvseDinBoard(cast(Any, link), poll_interval_s=0.05)
    seen: list[VehicleState] = []
    device.start(seen.append)
    try:
        await wait_until(lambda: device.state is VehicleState.A)
        link.fail = DeviceError("no answer")
        await wait_until(lambda: device.state is VehicleState.F)
        link.fail = None
        await wait_until(lambda: device.state is VehicleState.A)
        link.fail = RuntimeError("an answer the driver does not expect")
        await wait_until(lambda: device.state is VehicleState.F)
        link.fail = None
        await wait_until(lambda: device.state is VehicleState.A)
        assert [s.value for s in seen] == ["A", "F", "A", "F", "A"]
    finally:
        device.stop()
        await device.aclose()


@pytest.mark.parametrize(
    ("settings", "key", "text"),
    [
        (
            {"port": "/dev/x", "poll_interval_s": 0.001},
            "connectors.1.vehicle.poll_interval_s",
            "at least",
        ),
        ({"port": "/dev/x", "unit_id": 300}, "connectors.1.vehicle.unit_id", "at most 247"),
        ({"port": "/dev/x", "model": "x"}, "connectors.1.vehicle.model", "unknown setting"),
        ({}, "connectors.1.vehicle.port", "is required"),
    ],
)
def test_config_errors(settings: dict[str, Any], key: str, text: str) -> None:
    with pytest.raises(DriverConfigError) as info:
        create_evse_din(settings, ctx())
    assert info.value.key == key and text in info.value.reason
