"""Modbus meter driver against pymodbus servers over real RTU framing (socat pty) and TCP."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.constants import ExcCodes

from hal.base import DeviceError, MeterReading
from hal.evse_board import create_evse_din
from hal.modbus import (
    QUANTITIES,
    ModbusMeter,
    RegisterMap,
    create_modbus_meter,
    load_model,
    parse_map,
    plan_blocks,
    shipped_models,
)
from hal.modbus_bus import (
    BusConfig,
    ModbusBus,
    ModbusExceptionResponse,
    ModbusTimeout,
    wire_time_s,
)
from hal.registry import DriverConfigError, DriverContext, create_driver
from tests.modbus_sim import EvseDinSim, SimLine, SimSlave, SocatPair, require_socat

SHIPPED = (
    "abb_b23",
    "carlo_gavazzi_em340",
    "eastron_sdm120",
    "eastron_sdm630",
    "eastron_sdm72d_m",
    "orno_we516",
)

# Values every shipped encoding represents exactly or to float32 precision: energies in
# 100 Wh steps (EM340), power in 0.5 W, voltages in 0.1 V, currents in 0.25 A, 49.9 Hz.
READING = MeterReading(
    energy_wh=1_234_500.0,
    power_w=7250.5,
    voltage_v=(230.1, 231.2, 229.3),
    current_a=(10.25, 11.5, 12.75),
    frequency_hz=49.9,
    energy_export_wh=5000.0,
)


def ctx() -> DriverContext:
    return DriverContext(connector_id=1, key_prefix="connectors.1.meter")


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[SocatPair]:
    require_socat()
    p = SocatPair(tmp_path).start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
async def meter_line(pair: SocatPair) -> AsyncIterator[tuple[SimLine, SimSlave]]:
    slave = SimSlave(1)
    line = await SimLine([slave]).start_rtu(pair.b)
    try:
        yield line, slave
    finally:
        await line.stop()


def assert_reading(got: MeterReading, want: MeterReading, phases: int) -> None:
    assert got.energy_wh == pytest.approx(want.energy_wh, rel=1e-6)
    assert got.energy_export_wh == pytest.approx(want.energy_export_wh, rel=1e-6)
    assert got.power_w == pytest.approx(want.power_w, rel=1e-6)
    assert got.voltage_v == pytest.approx(want.voltage_v[:phases], rel=1e-6)
    assert got.current_a == pytest.approx(want.current_a[:phases], rel=1e-6)
    assert got.frequency_hz == pytest.approx(want.frequency_hz, rel=1e-5)


# --- register maps ------------------------------------------------------------------------------


def test_every_shipped_map_loads_and_respects_its_limits() -> None:
    assert tuple(shipped_models()) == SHIPPED
    for name in SHIPPED:
        regmap = load_model(name)
        assert {"energy_import_wh", "power_w", "energy_export_wh", "frequency_hz"} <= set(
            regmap.registers
        )
        assert 1 <= len(regmap.blocks) <= 3, name
        for block in regmap.blocks:
            assert block.count <= regmap.max_block
            for spec in block.specs:
                assert block.address <= spec.address and spec.end <= block.address + block.count


def test_sdm630_reads_in_two_requests_with_the_documented_registers() -> None:
    regmap = load_model("eastron_sdm630")
    assert [(b.function, b.address, b.count) for b in regmap.blocks] == [(4, 0, 12), (4, 52, 24)]
    assert regmap.registers["energy_import_wh"].address == 0x48
    assert regmap.registers["energy_import_wh"].scale == 1000.0


def test_block_planner_splits_on_gap_and_length() -> None:
    data: dict[str, Any] = {
        "max_gap": 4,
        "max_block": 10,
        "energy_import_wh": {"address": 0, "type": "float32"},
        "power_w": {"address": 6, "type": "float32"},  # gap 4 -> same block
        "voltage_l1_v": {"address": 13, "type": "float32"},  # gap 5 -> new block
        "current_l1_a": {"address": 19, "type": "uint32"},  # gap 4 -> joins 13
        "frequency_hz": {"address": 100, "type": "uint16", "function": "holding"},
    }
    regmap = parse_map(data, "map")
    assert [(b.function, b.address, b.count) for b in plan_blocks(regmap)] == [
        (4, 0, 8),
        (4, 13, 8),
        (3, 100, 1),
    ]
    data["max_block"] = 6
    regmap = parse_map(data, "map")
    assert [(b.address, b.count) for b in regmap.blocks] == [
        (0, 2),
        (6, 2),
        (13, 2),
        (19, 2),
        (100, 1),
    ]


def test_word_order_and_types_decode_like_pymodbus_encodes() -> None:
    regmap = parse_map(
        {
            "word_order": "little",
            "energy_import_wh": {"address": 0, "type": "uint64", "scale": 10},
            "power_w": {"address": 4, "type": "int32", "scale": 0.1, "word_order": "big"},
            "frequency_hz": {"address": 6, "type": "int16", "scale": 0.1},
        },
        "map",
    )
    tables = regmap.encode(
        {"energy_import_wh": 123_456_780, "power_w": -1234.5, "frequency_hz": 50}
    )
    regs = [tables[4][a] for a in range(7)]
    assert regs[0:4] == [12_345_678 & 0xFFFF, 12_345_678 >> 16, 0, 0]  # low word first
    assert regs[4:6] == [0xFFFF, (-12345) & 0xFFFF]  # big: high word first
    assert regmap.registers["power_w"].decode(regs[4:6]) == pytest.approx(-1234.5)
    assert regmap.registers["energy_import_wh"].decode(regs[0:4]) == 123_456_780


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", SHIPPED)
async def test_shipped_map_round_trip_over_rtu(
    model: str, meter_line: tuple[SimLine, SimSlave], pair: SocatPair
) -> None:
    _, slave = meter_line
    regmap = load_model(model)
    slave.fill_meter(regmap, READING)
    meter = create_modbus_meter({"model": model, "port": pair.a}, ctx())
    try:
        reading = await meter.read()
        phases = 1 if model == "eastron_sdm120" else 3
        assert_reading(reading, READING, phases)
        assert meter.stats.last_poll.requests == len(regmap.blocks) == meter.requests_per_poll
        # RTU: request 8 bytes, response 5 + 2 per register.
        assert meter.stats.last_poll.tx_bytes == 8 * len(regmap.blocks)
        assert meter.stats.last_poll.rx_bytes == sum(5 + 2 * b.count for b in regmap.blocks)
    finally:
        await meter.close_driver()


async def test_round_trip_over_modbus_tcp() -> None:
    slave = SimSlave(7)
    regmap = load_model("abb_b23")
    slave.fill_meter(regmap, READING)
    line = SimLine([slave])
    port = await line.start_tcp()
    meter = create_modbus_meter(
        {"model": "abb_b23", "host": "127.0.0.1", "tcp_port": port, "unit_id": 7}, ctx()
    )
    try:
        assert_reading(await meter.read(), READING, 3)
        # TCP: MBAP header (7) + PDU 5 per request.
        assert meter.stats.last_poll.tx_bytes == 12 * len(regmap.blocks)
        assert meter.link.bus.config.shared_key == f"modbus.bus.127.0.0.1:{port}"
    finally:
        await meter.close_driver()
        await line.stop()


async def test_custom_map_from_config(
    meter_line: tuple[SimLine, SimSlave], pair: SocatPair
) -> None:
    _, slave = meter_line
    custom = {
        "model": "my meter",
        "function": "holding",
        "word_order": "little",
        "energy_import_wh": {"address": 300, "type": "uint32", "scale": 10},
        "power_w": {"address": 310, "type": "int16", "scale": 1},
        "voltage_l1_v": {"address": 10, "type": "uint16", "scale": 0.1, "function": "input"},
        "current_l1_a": {"address": 20, "type": "float32", "word_order": "big"},
    }
    regmap = parse_map(custom, "map")
    slave.fill_meter(regmap, MeterReading(987_650.0, -1500.0, (231.5,), (15.5,)))
    meter = create_driver("meter", "modbus", {"map": custom, "port": pair.a}, ctx())
    assert isinstance(meter, ModbusMeter)
    try:
        reading = await meter.read()
        assert reading.energy_wh == 987_650.0
        assert reading.power_w == -1500.0
        assert reading.voltage_v == pytest.approx((231.5,))
        assert reading.current_a == (15.5,)
        assert reading.frequency_hz is None and reading.energy_export_wh is None
        assert meter.requests_per_poll == 3  # input 10; holding 20; holding 300..310
    finally:
        await meter.close_driver()


async def test_meter_and_board_share_one_rtu_bus_one_request_at_a_time(pair: SocatPair) -> None:
    meter_slave, board = SimSlave(1), EvseDinSim(2)
    regmap = load_model("eastron_sdm630")
    meter_slave.fill_meter(regmap, READING)
    line = await SimLine([meter_slave, board]).start_rtu(pair.b)
    c = ctx()
    meter = create_modbus_meter({"model": "eastron_sdm630", "port": pair.a, "unit_id": 1}, c)
    vehicle = create_evse_din({"port": pair.a, "unit_id": 2, "poll_interval_s": 0.05}, c)
    bus = c.shared[f"modbus.bus.{pair.a}"]
    assert isinstance(bus, ModbusBus)
    assert meter.link.bus is bus and vehicle.link.bus is bus
    assert bus.unit_ids == [1, 2]

    inflight = 0
    peak = 0
    real_factory = bus._client_factory

    class Counting:
        def __init__(self, client: Any) -> None:
            self.client = client

        def __getattr__(self, name: str) -> Any:
            attr = getattr(self.client, name)
            if not name.startswith(("read_", "write_")):
                return attr

            async def call(*args: Any, **kwargs: Any) -> Any:
                nonlocal inflight, peak
                inflight += 1
                peak = max(peak, inflight)
                try:
                    return await attr(*args, **kwargs)
                finally:
                    inflight -= 1

            return call

    bus._client_factory = lambda config: Counting(real_factory(config))
    states: list[Any] = []
    vehicle.start(states.append)
    try:
        board.set_vehicle(3)
        vehicle.set_max_current_a(16)
        readings = await asyncio.gather(*(meter.read() for _ in range(10)))
        for reading in readings:
            assert_reading(reading, READING, 3)
        await asyncio.sleep(0.2)
        assert vehicle.state.value == "C"
        assert board.setpoint == 16
        assert vehicle.polls >= 2 and vehicle.failed_polls == 0
        assert peak == 1
        assert meter_slave.requests == 20 and board.requests >= 4
    finally:
        vehicle.stop()
        await vehicle.aclose()
        await meter.close_driver()
        await line.stop()
    assert bus.closed


# --- faults ---------------------------------------------------------------------------------


async def test_silent_device_times_out_then_recovers(
    meter_line: tuple[SimLine, SimSlave], pair: SocatPair
) -> None:
    _, slave = meter_line
    slave.fill_meter(load_model("eastron_sdm120"), READING)
    meter = create_modbus_meter(
        {"model": "eastron_sdm120", "port": pair.a, "timeout_s": 0.15, "retries": 1}, ctx()
    )
    try:
        slave.muted = True
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ModbusTimeout, match="no answer within 0.15 s"):
            await meter.read()
        assert 0.3 <= loop.time() - started < 1.5
        assert meter.stats.last_poll.requests == 2 and meter.stats.failed_polls == 1
        slave.muted = False
        assert_reading(await meter.read(), READING, 1)
    finally:
        await meter.close_driver()


async def test_exception_response_is_a_device_error_without_retries(
    meter_line: tuple[SimLine, SimSlave], pair: SocatPair
) -> None:
    _, slave = meter_line
    slave.fill_meter(load_model("eastron_sdm630"), READING)
    meter = create_modbus_meter({"model": "eastron_sdm630", "port": pair.a}, ctx())
    try:
        slave.exception = ExcCodes.ILLEGAL_ADDRESS
        with pytest.raises(ModbusExceptionResponse) as info:
            await meter.read()
        assert info.value.code == 2 and "illegal data address" in str(info.value)
        assert meter.stats.last_poll.requests == 1
        # "busy" may pass: it is asked again, with back-off, retries times.
        slave.exception = ExcCodes.DEVICE_BUSY
        with pytest.raises(DeviceError):
            await meter.read()
        assert meter.stats.last_poll.requests == 3
        slave.exception = None
        assert_reading(await meter.read(), READING, 3)
    finally:
        await meter.close_driver()


async def test_corrupted_frame_is_retried_or_reported_never_a_crash(
    meter_line: tuple[SimLine, SimSlave], pair: SocatPair
) -> None:
    _, slave = meter_line
    slave.fill_meter(load_model("eastron_sdm630"), READING)
    meter = create_modbus_meter(
        {"model": "eastron_sdm630", "port": pair.a, "timeout_s": 0.15, "retries": 2}, ctx()
    )
    try:
        slave.corrupt = 1  # one bad CRC: the retry gets a good frame
        assert_reading(await meter.read(), READING, 3)
        assert meter.stats.last_poll.failures == 1 and meter.stats.last_poll.requests == 3
        slave.corrupt = 1000  # every answer garbled
        with pytest.raises(DeviceError):
            await meter.read()
        slave.corrupt = 0
        assert_reading(await meter.read(), READING, 3)
    finally:
        await meter.close_driver()


async def test_meter_reset_or_replacement_keeps_energy_monotonic(
    meter_line: tuple[SimLine, SimSlave], pair: SocatPair, caplog: pytest.LogCaptureFixture
) -> None:
    _, slave = meter_line
    regmap = load_model("eastron_sdm630")
    meter = create_modbus_meter({"model": "eastron_sdm630", "port": pair.a}, ctx())

    async def read_with(energy_wh: float) -> float:
        slave.fill_meter(regmap, MeterReading(energy_wh, 0.0))
        return (await meter.read()).energy_wh

    try:
        # kWh values exact in float32, so the arithmetic below is exact too.
        assert await read_with(1_000_000) == 1_000_000
        assert await read_with(1_000_062.5) == 1_000_062.5
        assert await read_with(1_000_000) == 1_000_062.5  # noise below 100 Wh: held
        assert meter.energy_offset_wh == 0
        assert await read_with(500) == 1_000_062.5  # replaced meter: continues from last value
        assert "went back" in caplog.text
        assert await read_with(1500) == 1_001_062.5
        assert await read_with(0) == 1_001_062.5  # reset again
        assert await read_with(62.5) == 1_001_125
        for bad in (math.nan, -5.0, math.inf):
            with pytest.raises(DeviceError, match="implausible import energy"):
                await read_with(bad)
        assert await read_with(125) == 1_001_187.5
    finally:
        await meter.close_driver()


class _Answer:
    def __init__(self, registers: list[int]) -> None:
        self.registers = registers

    def isError(self) -> bool:  # noqa: N802 - pymodbus' name
        return False


class _ManualClient:
    """A pymodbus client stand-in whose answers the test delivers (or withholds) by hand."""

    def __init__(self) -> None:
        self.connected = True
        self.sent: list[int] = []
        self.answers: list[asyncio.Future[_Answer]] = []

    async def connect(self) -> bool:
        return True

    def close(self) -> None:
        self.connected = False

    async def read_holding_registers(self, address: int, count: int, device_id: int) -> _Answer:
        self.sent.append(address)
        answer: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
        self.answers.append(answer)
        return await answer


async def _until(condition: Any, timeout_s: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0)


async def test_cancel_is_not_lost_when_the_answer_arrives_at_the_same_time() -> None:
    # Regression: with asyncio.wait_for (Python 3.11) a caller cancelled in the loop
    # iteration in which its answer arrived got the answer instead of CancelledError, so a
    # stopped driver polled on forever.
    client = _ManualClient()
    bus = ModbusBus(BusConfig(port="/dev/manual"), client_factory=lambda config: client)
    caller = asyncio.create_task(bus.read_registers(1, 3, 0, 2, 1.0, 0))
    await _until(lambda: client.answers)
    client.answers[0].set_result(_Answer([1, 2]))
    await asyncio.sleep(0)  # the request has its answer; the caller has not resumed yet
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    # The bus is not stuck: the next request goes out and gets its own answer.
    second = asyncio.create_task(bus.read_registers(1, 3, 0, 2, 1.0, 0))
    await _until(lambda: len(client.answers) == 2)
    client.answers[1].set_result(_Answer([3, 4]))
    assert await second == [3, 4]
    bus.close()


async def test_cancelled_request_keeps_the_line_until_its_answer_or_timeout() -> None:
    # A frame on the wire gets its answer whatever the caller does; the next frame must not
    # collide with that answer (half duplex) nor take it for its own (RTU has no ids).
    client = _ManualClient()
    bus = ModbusBus(BusConfig(port="/dev/manual"), client_factory=lambda config: client)
    loop = asyncio.get_running_loop()
    first = asyncio.create_task(bus.read_registers(1, 3, 0, 2, 1.0, 0))
    await _until(lambda: client.answers)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    second = asyncio.create_task(bus.read_registers(2, 3, 10, 2, 1.0, 0))
    await asyncio.sleep(0.05)
    assert client.sent == [0]  # the first answer is still due: nothing else goes out
    client.answers[0].set_result(_Answer([1, 2]))  # ... here it is, late
    await _until(lambda: len(client.answers) == 2)
    client.answers[1].set_result(_Answer([3, 4]))
    assert await second == [3, 4]

    # No answer at all: the line is free again after the cancelled request's timeout.
    third = asyncio.create_task(bus.read_registers(1, 3, 20, 2, 0.2, 0))
    await _until(lambda: len(client.answers) == 3)
    started = loop.time()
    third.cancel()
    with pytest.raises(asyncio.CancelledError):
        await third
    fourth = asyncio.create_task(bus.read_registers(2, 3, 30, 2, 1.0, 0))
    await _until(lambda: len(client.answers) == 4)
    assert 0.15 <= loop.time() - started < 1.0
    client.answers[3].set_result(_Answer([5, 6]))
    assert await fourth == [5, 6]
    bus.close()


async def test_port_vanishes_and_comes_back(tmp_path: Path) -> None:
    require_socat()
    pair = SocatPair(tmp_path, "usb").start()
    slave = SimSlave(1)
    regmap = load_model("eastron_sdm120")
    slave.fill_meter(regmap, READING)
    line = await SimLine([slave]).start_rtu(pair.b)
    meter = create_modbus_meter(
        {"model": "eastron_sdm120", "port": pair.a, "timeout_s": 0.2, "retries": 0}, ctx()
    )
    try:
        assert_reading(await meter.read(), READING, 1)
        await line.stop()
        pair.stop()  # the adapter is unplugged: the pty and its link vanish
        for _ in range(3):
            with pytest.raises(DeviceError):
                await meter.read()
        pair.start()
        line = await SimLine([slave]).start_rtu(pair.b)
        deadline = asyncio.get_running_loop().time() + 8
        while True:
            try:
                assert_reading(await meter.read(), READING, 1)
                break
            except DeviceError:
                assert asyncio.get_running_loop().time() < deadline, "did not reconnect"
                await asyncio.sleep(0.2)
    finally:
        await meter.close_driver()
        await line.stop()
        pair.stop()


async def test_unopenable_port_is_a_device_error(tmp_path: Path) -> None:
    meter = create_modbus_meter({"model": "eastron_sdm630", "port": str(tmp_path / "nope")}, ctx())
    with pytest.raises(DeviceError, match="cannot open"):
        await meter.read()
    with pytest.raises(DeviceError, match="next attempt"):
        await meter.read()  # back-off: not reopened on every poll
    await meter.close_driver()


# --- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "key", "text"),
    [
        ({"model": "sdm630", "port": "/dev/x"}, "connectors.1.meter.model", "eastron_sdm630"),
        ({"port": "/dev/x"}, "connectors.1.meter.model", "is required"),
        (
            {"model": "eastron_sdm630", "map": {}, "port": "/dev/x"},
            "connectors.1.meter.map",
            "not both",
        ),
        ({"model": "eastron_sdm630"}, "connectors.1.meter.port", "is required"),
        (
            {"model": "eastron_sdm630", "port": "/dev/x", "unit_id": 0},
            "connectors.1.meter.unit_id",
            "at least 1",
        ),
        (
            {"model": "eastron_sdm630", "port": "/dev/x", "unit_id": 248},
            "connectors.1.meter.unit_id",
            "at most 247",
        ),
        (
            {"model": "eastron_sdm630", "port": "/dev/x", "baudrate": 9601},
            "connectors.1.meter.baudrate",
            "one of",
        ),
        (
            {"model": "eastron_sdm630", "port": "/dev/x", "parity": "X"},
            "connectors.1.meter.parity",
            "one of",
        ),
        (
            {"model": "eastron_sdm630", "port": "/dev/x", "unitid": 2},
            "connectors.1.meter.unitid",
            "did you mean",
        ),
        (
            {"model": "eastron_sdm630", "port": "/dev/x", "host": "h"},
            "connectors.1.meter.host",
            "not both",
        ),
        (
            {"model": "eastron_sdm630", "host": "h", "baudrate": 9600},
            "connectors.1.meter.baudrate",
            "Modbus TCP",
        ),
        (
            {"model": "eastron_sdm630", "port": "/dev/x", "timeout_s": 0},
            "connectors.1.meter.timeout_s",
            "at least",
        ),
        (
            {
                "port": "/dev/x",
                "map": {
                    "energy_import_wh": {"address": 0, "type": "float16"},
                    "power_w": {"address": 2, "type": "float32"},
                },
            },
            "connectors.1.meter.map.energy_import_wh.type",
            "float32",
        ),
        (
            {"port": "/dev/x", "map": {"energy_import_wh": {"address": 0, "type": "float32"}}},
            "connectors.1.meter.map.power_w",
            "required",
        ),
        (
            {
                "port": "/dev/x",
                "map": {
                    "energy_import_wh": {"address": 0, "type": "float32"},
                    "power_w": {"address": 1, "type": "float32"},
                },
            },
            "connectors.1.meter.map.power_w.address",
            "overlaps",
        ),
        (
            {
                "port": "/dev/x",
                "map": {
                    "energy_import_wh": {"adress": 0, "type": "float32"},
                    "power_w": {"address": 2, "type": "float32"},
                },
            },
            "connectors.1.meter.map.energy_import_wh.adress",
            "unknown setting",
        ),
        (
            {"port": "/dev/x", "map": {"energy": {"address": 0}}},
            "connectors.1.meter.map.energy",
            "unknown map entry",
        ),
        (
            {
                "port": "/dev/x",
                "map": {
                    "function": "coil",
                    "energy_import_wh": {"address": 0, "type": "float32"},
                    "power_w": {"address": 2, "type": "float32"},
                },
            },
            "connectors.1.meter.map.function",
            "'input'",
        ),
        (
            {
                "port": "/dev/x",
                "map": {
                    "energy_import_wh": {"address": 0, "type": "float32", "scale": 0},
                    "power_w": {"address": 2, "type": "float32"},
                },
            },
            "connectors.1.meter.map.energy_import_wh.scale",
            "non-zero",
        ),
        ({"port": "/dev/x", "map": "sdm630"}, "connectors.1.meter.map", "must be a table"),
    ],
)
def test_config_errors_name_the_key(settings: dict[str, Any], key: str, text: str) -> None:
    with pytest.raises(DriverConfigError) as info:
        create_modbus_meter(settings, ctx())
    assert info.value.key == key
    assert text in info.value.reason


def test_conflicting_line_settings_on_one_port() -> None:
    c = ctx()
    create_modbus_meter({"model": "eastron_sdm630", "port": "/dev/ttyUSB7"}, c)
    board_ctx = DriverContext(1, shared=c.shared, key_prefix="connectors.1.vehicle")
    with pytest.raises(DriverConfigError) as info:
        create_evse_din({"port": "/dev/ttyUSB7", "unit_id": 2, "baudrate": 19200}, board_ctx)
    assert info.value.key == "connectors.1.vehicle.baudrate"
    assert "9600 baud 8N1" in info.value.reason and "19200 baud 8N1" in info.value.reason
    with pytest.raises(DriverConfigError) as info:
        create_evse_din({"port": "/dev/ttyUSB7", "parity": "E", "unit_id": 2}, board_ctx)
    assert info.value.key == "connectors.1.vehicle.parity"
    with pytest.raises(DriverConfigError) as info:
        create_evse_din({"port": "/dev/ttyUSB7"}, board_ctx)  # unit id 1 is the meter's
    assert info.value.key == "connectors.1.vehicle.unit_id"
    # Another port is another line: no conflict.
    create_evse_din({"port": "/dev/ttyUSB8", "baudrate": 19200}, board_ctx)


def test_quantities_and_wire_time() -> None:
    assert QUANTITIES[0] == "energy_import_wh"
    assert wire_time_s(96, 9600) == pytest.approx(0.11)
    regmap: RegisterMap = load_model("carlo_gavazzi_em340")
    assert regmap.registers["energy_import_wh"].word_order == "little"


def test_model_aliases_use_the_shared_map() -> None:
    meter = create_modbus_meter({"model": "abb_b24", "port": "/dev/ttyUSB9"}, ctx())
    assert meter.regmap.model == "ABB B23/B24"
    assert meter.regmap.registers["energy_import_wh"].type == "uint64"


def test_meter_declares_its_worst_read_time_for_the_watchdog() -> None:
    """The runtime's stuck-tick limit comes from what the driver declares, not from its
    settings: a silent SDM630 (2 requests a poll) with timeout 0.5 s and 2 retries takes
    2 x 3 x (0.5 + 2.0) s plus one gateway connect (10 s) before the read fails."""
    from hal.base import EnergyMeter
    from hal.modbus import ModbusMeter, load_model
    from hal.modbus_bus import DeviceLink

    regmap = load_model("eastron_sdm630")
    link = DeviceLink(bus=None, unit_id=1, timeout_s=0.5, retries=2)  # type: ignore[arg-type]
    meter = ModbusMeter(link, regmap)
    assert meter.requests_per_poll == 2
    assert meter.worst_read_s == pytest.approx(2 * 3 * (0.5 + 2.0) + 10.0)

    class OnBoard(EnergyMeter):  # a meter that answers without a bus
        async def read(self) -> MeterReading:
            return MeterReading(0.0, 0.0)

    assert OnBoard().worst_read_s == 0.0
