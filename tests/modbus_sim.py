"""Test helpers: socat pty pairs and pymodbus servers emulating meters and EVSE-DIN boards.

The drivers under test talk real Modbus RTU framing (CRC, unit ids, exception responses)
over a pseudo-terminal pair made by socat; the other end is a pymodbus server whose devices
are backed by ``SimSlave`` register tables that tests change at will. Fault injection works
on the server's outgoing bytes (``trace_packet``): a muted unit sends nothing (the client
times out), a corrupting unit flips a byte so the CRC fails.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from hal.base import MeterReading
from hal.modbus import RegisterMap
from hal.modbus_bus import FC_READ_INPUT

SOCAT = shutil.which("socat")
REGISTER_SPACE = 0xFFFF  # every address valid; SimSlave decides what is defined


def require_socat() -> str:
    if SOCAT is None:
        pytest.skip("socat is not installed (apt-get install socat): RTU tests need a pty pair")
    return SOCAT


class SocatPair:
    """Two linked pseudo-terminals: ``a`` for the driver, ``b`` for the simulated devices."""

    def __init__(self, directory: Path, name: str = "tty") -> None:
        self.a = str(directory / f"{name}a")
        self.b = str(directory / f"{name}b")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 5.0) -> SocatPair:
        socat = require_socat()
        for link in (self.a, self.b):
            if os.path.lexists(link):
                os.unlink(link)
        self.proc = subprocess.Popen(
            [
                socat,
                "-d",
                "-d",
                f"pty,raw,echo=0,link={self.a}",
                f"pty,raw,echo=0,link={self.b}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while not (os.path.exists(self.a) and os.path.exists(self.b)):
            if self.proc.poll() is not None:
                raise RuntimeError(f"socat exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("socat did not create both pty links in time")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Kill this socat (by pid); the pty links vanish with it."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=2)


@dataclass
class SimSlave:
    """The registers of one simulated device; tests change them while the server runs."""

    unit_id: int
    holding: dict[int, int] = field(default_factory=dict)
    input: dict[int, int] = field(default_factory=dict)
    exception: ExcCodes | None = None  # answer every request with this exception
    strict: bool = False  # undefined addresses -> illegal data address
    muted: bool = False  # send nothing back
    corrupt: int = 0  # corrupt this many of the next responses (flip a byte)
    requests: int = 0
    writes: list[tuple[int, list[int]]] = field(default_factory=list)

    def set_table(self, function: int, registers: Mapping[int, int]) -> None:
        table = self.input if function == FC_READ_INPUT else self.holding
        table.update(registers)

    def fill_meter(self, regmap: RegisterMap, reading: MeterReading) -> None:
        """Registers as the meter would hold them for ``reading``, encoded by the same map."""
        values: dict[str, float] = {
            "energy_import_wh": reading.energy_wh,
            "power_w": reading.power_w,
        }
        if reading.energy_export_wh is not None:
            values["energy_export_wh"] = reading.energy_export_wh
        if reading.frequency_hz is not None:
            values["frequency_hz"] = reading.frequency_hz
        for i, v in enumerate(reading.voltage_v, 1):
            values[f"voltage_l{i}_v"] = v
        for i, a in enumerate(reading.current_a, 1):
            values[f"current_l{i}_a"] = a
        for function, registers in regmap.encode(values).items():
            self.set_table(function, registers)

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        self.requests += 1
        if self.exception is not None:
            return self.exception
        if set_values is None:
            table = self.input if function_code == FC_READ_INPUT else self.holding
            for i in range(count):
                a = address + i
                if self.strict and a not in table:
                    return ExcCodes.ILLEGAL_ADDRESS
                current_registers[a - start_address] = table.get(a, 0)
            return None
        values = [int(v) for v in set_values]
        self.writes.append((address, values))
        for i, v in enumerate(values):
            self.holding[address + i] = v
        return None

    def device(self) -> SimDevice:
        return SimDevice(
            id=self.unit_id,
            simdata=[SimData(0, count=REGISTER_SPACE, values=0, datatype=DataType.REGISTERS)],
            action=self.action,
        )


class EvseDinSim(SimSlave):
    """An EVSE-DIN board: vehicle state in 1002, setpoint in 1000, firmware in 1005."""

    def __init__(self, unit_id: int, firmware: int = 18, precise: bool = False) -> None:
        super().__init__(unit_id)
        self.holding.update({1000: 13, 1001: 13, 1002: 1, 1005: firmware, 2005: 0})
        if precise:
            self.holding[2005] = 1 << 7

    def set_vehicle(self, state: int) -> None:
        self.holding[1002] = state

    @property
    def setpoint(self) -> int:
        return self.holding[1000]


class SimLine:
    """The devices on one line and the fault hook on their answers."""

    def __init__(self, slaves: list[SimSlave], tcp: bool = False) -> None:
        self.slaves = {s.unit_id: s for s in slaves}
        self.tcp = tcp
        self.server: Any = None
        self.tx_bytes = 0

    def trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending or not data:
            return data
        unit = data[6] if self.tcp else data[0]
        slave = self.slaves.get(unit)
        if slave is not None and slave.muted:
            return b""
        if slave is not None and slave.corrupt > 0:
            slave.corrupt -= 1
            garbled = bytearray(data)
            garbled[-3] ^= 0x5A  # a payload byte: the CRC no longer matches
            return bytes(garbled)
        self.tx_bytes += len(data)
        return data

    async def start_rtu(self, port: str, baudrate: int = 9600, parity: str = "N") -> SimLine:
        self.server = ModbusSerialServer(
            [s.device() for s in self.slaves.values()],
            framer=FramerType.RTU,
            port=port,
            baudrate=baudrate,
            parity=parity,
            trace_packet=self.trace_packet,
        )
        await self.server.serve_forever(background=True)
        return self

    async def start_tcp(self, host: str = "127.0.0.1") -> int:
        self.tcp = True
        self.server = ModbusTcpServer(
            [s.device() for s in self.slaves.values()],
            address=(host, 0),
            trace_packet=self.trace_packet,
        )
        await self.server.serve_forever(background=True)
        return int(self.server.transport.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await server.shutdown()
            await asyncio.sleep(0)
