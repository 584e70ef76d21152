"""A shared Modbus bus (RTU over a serial port, or TCP) used by every device on that line.

One RS-485 line carries several devices (the meter and the EVSE board, with different unit
ids), but a serial port can be opened once only and a half-duplex line carries one frame at a
time. So all drivers on one port share one ``ModbusBus``, found in ``ctx.shared`` under
``modbus.bus.<port>`` (or ``modbus.bus.<host>:<tcp_port>``); its lock keeps exactly one request
on the wire. pymodbus stays behind this module: it renames things between minor versions
(``slave=`` became ``device_id=`` in 3.9 / 3.10), so the rest of evsed never imports it.

Settings shared by every Modbus driver (see ``BUS_SETTINGS``):

- ``port`` (e.g. ``/dev/ttyUSB0``) for RTU, or ``host`` + ``tcp_port`` (502) for Modbus TCP
- ``baudrate`` (9600), ``parity`` ("N", "E" or "O"), ``stopbits`` (1 or 2), ``bytesize`` (7 or 8)
  – the line's settings: two devices on one port must agree on them
- ``timeout_s`` (0.5) and ``retries`` (2) – per device: how long to wait for one answer and
  how often to ask again (with back-off) before the request fails with ``DeviceError``
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.pdu import ModbusPDU

from hal.base import DeviceError
from hal.registry import DriverConfigError, DriverContext, setting_float, setting_int, setting_str

log = logging.getLogger(__name__)

T = TypeVar("T")

BUS_SETTINGS: Final = (
    "port",
    "host",
    "tcp_port",
    "baudrate",
    "parity",
    "stopbits",
    "bytesize",
    "timeout_s",
    "retries",
)
BAUDRATES: Final = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
SHARED_KEY_PREFIX: Final = "modbus.bus."

FC_READ_HOLDING: Final = 3
FC_READ_INPUT: Final = 4
FC_WRITE_SINGLE: Final = 6
FC_WRITE_MULTIPLE: Final = 16

MAX_READ_REGISTERS: Final = 125  # Modbus application protocol v1.1b3, 6.3 / 6.4
MAX_WRITE_REGISTERS: Final = 123  # ... 6.12

# pymodbus' own timeout only bounds connect() and is a fallback; every request is bounded by
# the device's timeout_s (see bounded()), and evsed does the retries itself.
_CLIENT_TIMEOUT_S: Final = 10.0
_RECONNECT_MIN_S: Final = 0.5
_RECONNECT_MAX_S: Final = 10.0
_BACKOFF_BASE_S: Final = 0.05
_BACKOFF_MAX_S: Final = 0.5
_UNWIND_S: Final = 1.0


class ModbusTimeout(DeviceError):
    """No (valid) answer within the timeout: device off, wrong unit id or a corrupted frame."""


class ModbusExceptionResponse(DeviceError):
    """The device answered with a Modbus exception (illegal address, busy, ...)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class ModbusNotConnected(DeviceError):
    """The port or TCP endpoint cannot be opened (unplugged adapter, host unreachable)."""


@dataclass
class BusStats:
    """Counters a caller can pass to a request to see what it cost on the wire."""

    requests: int = 0  # frames sent, retries included
    failures: int = 0  # attempts that got no valid answer or an exception response
    tx_bytes: int = 0  # frame bytes sent (estimated from the PDU: exact for RTU and TCP)
    rx_bytes: int = 0  # frame bytes received

    @property
    def wire_bytes(self) -> int:
        return self.tx_bytes + self.rx_bytes

    def add(self, other: BusStats) -> None:
        self.requests += other.requests
        self.failures += other.failures
        self.tx_bytes += other.tx_bytes
        self.rx_bytes += other.rx_bytes


@dataclass(frozen=True)
class BusConfig:
    """Where the bus is and how the line is set up; equal configs may share a bus."""

    port: str | None = None
    host: str | None = None
    tcp_port: int = 502
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8

    @property
    def is_tcp(self) -> bool:
        return self.host is not None

    @property
    def name(self) -> str:
        return f"{self.host}:{self.tcp_port}" if self.is_tcp else str(self.port)

    @property
    def shared_key(self) -> str:
        return SHARED_KEY_PREFIX + self.name

    @property
    def char_time_s(self) -> float:
        """Time of one character on the line (start + data + parity + stop bits)."""
        bits = 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits
        return bits / self.baudrate

    @property
    def frame_gap_s(self) -> float:
        """RTU inter-frame silence: 3.5 characters, at least 1.75 ms above 19200 baud."""
        if self.is_tcp:
            return 0.0
        return max(3.5 * self.char_time_s, 0.00175) if self.baudrate <= 19200 else 0.00175


@dataclass(frozen=True)
class DeviceLink:
    """One device's view of its bus: unit id, timeout and retries."""

    bus: ModbusBus
    unit_id: int
    timeout_s: float
    retries: int

    async def read_registers(
        self, function: int, address: int, count: int, stats: BusStats | None = None
    ) -> list[int]:
        return await self.bus.read_registers(
            self.unit_id, function, address, count, self.timeout_s, self.retries, stats
        )

    async def write_registers(
        self, address: int, values: list[int], stats: BusStats | None = None
    ) -> None:
        await self.bus.write_registers(
            self.unit_id, address, values, self.timeout_s, self.retries, stats
        )

    def release(self) -> None:
        self.bus.release(self.unit_id)


def bus_config_from_settings(settings: Mapping[str, Any], ctx: DriverContext) -> BusConfig:
    """The line settings of a driver section; raises DriverConfigError naming the key."""
    port = setting_str(settings, "port", None, ctx)
    host = setting_str(settings, "host", None, ctx)
    if port is not None and host is not None:
        raise DriverConfigError(
            ctx.key("host"), "set either port (Modbus RTU) or host (Modbus TCP), not both"
        )
    if port is None and host is None:
        raise DriverConfigError(
            ctx.key("port"),
            "is required: the serial port of the RS-485 adapter (e.g. /dev/ttyUSB0), "
            "or set host (and tcp_port) for Modbus TCP",
        )
    if host is not None:
        for serial_only in ("baudrate", "parity", "stopbits", "bytesize"):
            if settings.get(serial_only) is not None:
                raise DriverConfigError(
                    ctx.key(serial_only), "is a serial line setting; remove it for Modbus TCP"
                )
        tcp_port = setting_int(settings, "tcp_port", 502, ctx, min_value=1, max_value=65535)
        return BusConfig(host=host, tcp_port=tcp_port)
    if settings.get("tcp_port") is not None:
        raise DriverConfigError(ctx.key("tcp_port"), "only applies with host (Modbus TCP)")
    return BusConfig(
        port=port,
        baudrate=setting_int(settings, "baudrate", 9600, ctx, choices=BAUDRATES),
        parity=setting_str(settings, "parity", "N", ctx, choices=("N", "E", "O")),
        stopbits=setting_int(settings, "stopbits", 1, ctx, choices=(1, 2)),
        bytesize=setting_int(settings, "bytesize", 8, ctx, choices=(7, 8)),
    )


def link_from_settings(
    settings: Mapping[str, Any],
    ctx: DriverContext,
    unit_id: int,
    client_factory: ClientFactory | None = None,
) -> DeviceLink:
    """The shared bus for these settings (created on first use) and this device's link to it.

    Two devices naming the same port with different line settings is a config error: the
    second one would silently reconfigure (or fail to open) the first one's line.
    """
    config = bus_config_from_settings(settings, ctx)
    timeout_s = setting_float(settings, "timeout_s", 0.5, ctx, min_value=0.01, max_value=30.0)
    retries = setting_int(settings, "retries", 2, ctx, min_value=0, max_value=10)
    existing = ctx.shared.get(config.shared_key)
    if isinstance(existing, ModbusBus) and not existing.closed:
        if existing.config != config:
            key = "baudrate"
            for name in ("baudrate", "parity", "stopbits", "bytesize"):
                if getattr(existing.config, name) != getattr(config, name):
                    key = name
                    break
            raise DriverConfigError(
                ctx.key(key),
                f"conflicts with another device on {config.name}: it uses "
                f"{_line_text(existing.config)}, this one {_line_text(config)}; devices on one "
                "line must use the same settings",
            )
        for other_unit in existing.unit_ids:
            if other_unit == unit_id:
                raise DriverConfigError(
                    ctx.key("unit_id"),
                    f"{unit_id} is already used by another device on {config.name}",
                )
        bus = existing
    else:
        bus = ModbusBus(config, client_factory=client_factory)
        ctx.shared[config.shared_key] = bus
    bus.acquire(unit_id)
    return DeviceLink(bus, unit_id, timeout_s, retries)


def _line_text(config: BusConfig) -> str:
    return f"{config.baudrate} baud {config.bytesize}{config.parity}{config.stopbits}"


ClientFactory = Callable[[BusConfig], Any]


def _default_client(config: BusConfig) -> Any:
    # reconnect_delay=0: pymodbus must not reconnect behind our back; ModbusBus decides when.
    if config.is_tcp:
        assert config.host is not None
        return AsyncModbusTcpClient(
            config.host,
            port=config.tcp_port,
            timeout=_CLIENT_TIMEOUT_S,
            retries=0,
            reconnect_delay=0,
            name=config.name,
        )
    assert config.port is not None
    return AsyncModbusSerialClient(
        config.port,
        baudrate=config.baudrate,
        parity=config.parity,
        stopbits=config.stopbits,
        bytesize=config.bytesize,
        timeout=_CLIENT_TIMEOUT_S,
        retries=0,
        reconnect_delay=0,
        name=config.name,
    )


class ModbusBus:
    """One pymodbus client per port or endpoint, one request on the wire at a time.

    The client is created on first use inside the running event loop (pymodbus binds futures
    to the loop at construction). A lost port (USB adapter unplugged, TCP peer gone) is
    reopened on a later request, at most every 0.5 s doubling to 10 s while it keeps failing,
    so a dead line costs a failed ``open()`` per poll, not a busy loop.
    """

    def __init__(
        self,
        config: BusConfig,
        client_factory: ClientFactory | None = None,
        monotonic_s: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self._client_factory = client_factory or _default_client
        self._client: Any = None
        self._lock = asyncio.Lock()
        self._users: dict[int, int] = {}
        self.closed = False
        self.stats = BusStats()
        self._monotonic = monotonic_s or _loop_time
        self._next_connect_s = 0.0
        self._connect_delay_s = _RECONNECT_MIN_S
        self._was_connected = False
        # A request whose caller was cancelled while its frame was on the wire: the device
        # answers anyway, so the line stays reserved until that answer (or its timeout).
        self._in_flight: asyncio.Future[Any] | None = None
        self._in_flight_deadline = 0.0

    # --- sharing ---------------------------------------------------------------------------

    @property
    def unit_ids(self) -> list[int]:
        return sorted(self._users)

    def acquire(self, unit_id: int) -> None:
        self._users[unit_id] = self._users.get(unit_id, 0) + 1

    def release(self, unit_id: int | None = None) -> None:
        """One device is done with the bus; the last one closes the port."""
        if unit_id is None and self._users:
            unit_id = next(iter(self._users))
        if unit_id in self._users:
            self._users[unit_id] -= 1
            if not self._users[unit_id]:
                del self._users[unit_id]
        if not self._users:
            self.close()

    def close(self) -> None:
        self.closed = True
        if self._in_flight is not None:
            self._in_flight.cancel()
            self._in_flight = None
        if self._client is not None:
            self._client.close()
            self._client = None

    # --- requests --------------------------------------------------------------------------

    async def read_registers(
        self,
        unit_id: int,
        function: int,
        address: int,
        count: int,
        timeout_s: float,
        retries: int,
        stats: BusStats | None = None,
    ) -> list[int]:
        """Read ``count`` holding (FC 3) or input (FC 4) registers from ``address`` (0-based)."""
        if function not in (FC_READ_HOLDING, FC_READ_INPUT):
            raise ValueError(f"not a register read function code: {function}")
        if not 1 <= count <= MAX_READ_REGISTERS:
            raise ValueError(f"register count must be 1..{MAX_READ_REGISTERS}, got {count}")

        def call(client: Any) -> Awaitable[ModbusPDU]:
            if function == FC_READ_HOLDING:
                return client.read_holding_registers(address, count=count, device_id=unit_id)
            return client.read_input_registers(address, count=count, device_id=unit_id)

        what = f"read {count} {'holding' if function == 3 else 'input'} registers at {address}"
        response = await self._request(
            unit_id, what, call, 5, 2 + 2 * count, timeout_s, retries, stats
        )
        registers = list(getattr(response, "registers", None) or [])
        if len(registers) != count:
            raise DeviceError(
                f"{self.config.name} unit {unit_id}: {what}: got {len(registers)} registers"
            )
        return registers

    async def write_registers(
        self,
        unit_id: int,
        address: int,
        values: list[int],
        timeout_s: float,
        retries: int,
        stats: BusStats | None = None,
    ) -> None:
        """Write holding registers with FC 16 (write multiple), which every device here takes."""
        if not 1 <= len(values) <= MAX_WRITE_REGISTERS:
            raise ValueError(f"register count must be 1..{MAX_WRITE_REGISTERS}")
        if any(not 0 <= v <= 0xFFFF for v in values):
            raise ValueError(f"register values must be 0..65535, got {values}")

        def call(client: Any) -> Awaitable[ModbusPDU]:
            return client.write_registers(address, list(values), device_id=unit_id)

        what = f"write {len(values)} registers at {address}"
        await self._request(unit_id, what, call, 6 + 2 * len(values), 5, timeout_s, retries, stats)

    async def _request(
        self,
        unit_id: int,
        what: str,
        call: Callable[[Any], Awaitable[ModbusPDU]],
        request_pdu_len: int,
        response_pdu_len: int,
        timeout_s: float,
        retries: int,
        stats: BusStats | None,
    ) -> ModbusPDU:
        if self.closed:
            raise ModbusNotConnected(f"{self.config.name}: bus is closed")
        overhead = 7 if self.config.is_tcp else 3  # MBAP header, or unit id + CRC
        last_error: DeviceError | None = None
        for attempt in range(retries + 1):
            if attempt:
                # Back off before asking again: a device that just missed a frame (or the
                # line settling after a collision) gets time, and the lock is free meanwhile,
                # so the other devices on the line are not starved by one that is gone.
                await asyncio.sleep(min(_BACKOFF_BASE_S * 2 ** (attempt - 1), _BACKOFF_MAX_S))
            async with self._lock:
                await self._settle_line()
                client = await self._connected_client()
                self._count(stats, requests=1, tx_bytes=request_pdu_len + overhead)
                try:
                    response = await self._exchange(call(client), timeout_s)
                except TimeoutError:
                    last_error = ModbusTimeout(
                        f"{self.config.name} unit {unit_id}: {what}: no answer within "
                        f"{timeout_s:g} s"
                    )
                except ConnectionException as exc:
                    self._lost(exc)
                    last_error = ModbusNotConnected(f"{self.config.name}: {exc}")
                except (ModbusException, OSError) as exc:
                    # ModbusIOException: pymodbus gave up on a (garbled) answer.
                    last_error = ModbusTimeout(f"{self.config.name} unit {unit_id}: {what}: {exc}")
                    if not self._client_connected():
                        self._lost(exc)
                except Exception as exc:  # noqa: BLE001 - a driver must not crash the station
                    log.warning("modbus %s: unexpected error", self.config.name, exc_info=True)
                    last_error = DeviceError(f"{self.config.name} unit {unit_id}: {what}: {exc!r}")
                    self._lost(exc)
                else:
                    if response is None:
                        last_error = ModbusTimeout(f"{self.config.name}: {what}: no response")
                    elif response.isError():
                        code = int(getattr(response, "exception_code", 0) or 0)
                        self._count(stats, failures=1, rx_bytes=2 + overhead)
                        error = ModbusExceptionResponse(
                            f"{self.config.name} unit {unit_id}: {what}: exception response "
                            f"{code} ({_EXCEPTION_NAMES.get(code, 'unknown')})",
                            code,
                        )
                        await asyncio.sleep(self.config.frame_gap_s)
                        # Busy / acknowledge: the device may answer later. Everything else
                        # (illegal address, illegal function, ...) will not change by asking.
                        if code not in (5, 6):
                            raise error
                        last_error = error
                        continue
                    else:
                        self._count(stats, rx_bytes=response_pdu_len + overhead)
                        # RTU: keep the line silent for 3.5 characters before the next frame.
                        await asyncio.sleep(self.config.frame_gap_s)
                        return response
                self._count(stats, failures=1)
                await asyncio.sleep(self.config.frame_gap_s)
        assert last_error is not None
        raise last_error

    async def _exchange(self, request: Awaitable[ModbusPDU], timeout_s: float) -> ModbusPDU:
        """One frame out and its answer in, within ``timeout_s``; the caller holds the lock.

        Like ``bounded()``, but a cancelled caller does not cancel the request: its frame is
        on the wire and the device answers anyway. Sending the next frame at once would
        collide with that answer on the half-duplex line (the device misses the new frame)
        and, RTU having no transaction ids, the stale answer would pass for the new one's.
        So the request runs on to its answer or deadline, and the next one waits for it.
        """
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(request)
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout_s)
        except BaseException:
            if not task.done():
                timer = loop.call_later(timeout_s, task.cancel)  # never beyond its timeout
                task.add_done_callback(lambda _t: timer.cancel())
                task.add_done_callback(_discard_outcome)
                self._in_flight = task
                self._in_flight_deadline = loop.time() + timeout_s
            raise
        if not done:
            _abandon(task)
            # Let the request unwind (pymodbus frees its transaction) before the next frame,
            # but never wait on a request that ignores its cancellation.
            await asyncio.wait({task}, timeout=_UNWIND_S)
            raise TimeoutError
        return task.result()

    async def _settle_line(self) -> None:
        """Wait out the answer to a request whose caller was cancelled (see _exchange)."""
        task = self._in_flight
        if task is None:
            return
        if not task.done():
            loop = asyncio.get_running_loop()
            wait_s = max(self._in_flight_deadline - loop.time(), 0.0) + _UNWIND_S
            await asyncio.wait({task}, timeout=wait_s)
            if not task.done():
                log.warning("modbus %s: an abandoned request does not end", self.config.name)
                task.cancel()
        self._in_flight = None
        await asyncio.sleep(self.config.frame_gap_s)

    def _count(self, stats: BusStats | None, **fields: int) -> None:
        for target in (self.stats, stats):
            if target is None:
                continue
            for name, value in fields.items():
                setattr(target, name, getattr(target, name) + value)

    def _client_connected(self) -> bool:
        return bool(self._client is not None and self._client.connected)

    def _lost(self, exc: BaseException) -> None:
        if self._was_connected:
            log.warning("modbus %s: connection lost (%s)", self.config.name, exc)
        self._was_connected = False
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _connected_client(self) -> Any:
        if self._client_connected():
            return self._client
        now = self._monotonic()
        if now < self._next_connect_s:
            raise ModbusNotConnected(
                f"{self.config.name}: not connected; next attempt in "
                f"{self._next_connect_s - now:.1f} s"
            )
        if self._client is not None:
            self._client.close()
        self._client = self._client_factory(self.config)
        try:
            ok = await bounded(self._client.connect(), _CLIENT_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - pyserial also raises termios.error etc.
            ok = False
            log.debug("modbus %s: connect failed: %r", self.config.name, exc)
        if not ok or not self._client_connected():
            self._client.close()
            self._client = None
            self._next_connect_s = now + self._connect_delay_s
            if self._was_connected or self._connect_delay_s == _RECONNECT_MIN_S:
                log.warning(
                    "modbus %s: cannot open; retrying in %.1f s",
                    self.config.name,
                    self._connect_delay_s,
                )
            self._connect_delay_s = min(self._connect_delay_s * 2, _RECONNECT_MAX_S)
            self._was_connected = False
            raise ModbusNotConnected(f"{self.config.name}: cannot open the port")
        if self._connect_delay_s > _RECONNECT_MIN_S:
            log.info("modbus %s: connected again", self.config.name)
        self._connect_delay_s = _RECONNECT_MIN_S
        self._next_connect_s = 0.0
        self._was_connected = True
        return self._client


_EXCEPTION_NAMES: Final = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


async def bounded(awaitable: Awaitable[T], timeout_s: float) -> T:
    """``await awaitable``, raising TimeoutError after ``timeout_s``; a cancel is never lost.

    Not ``asyncio.wait_for``: up to Python 3.11 it *returns the result* instead of raising
    CancelledError when the awaited operation completes in the same event-loop iteration as
    the cancellation (CPython gh-86296, fixed in 3.12). A Modbus answer arriving just as a
    driver is stopped then swallows the stop, and the poll loop runs on forever. pymodbus
    has the same race inside every request (its own wait_for on the response), so awaiting
    the request directly under ``asyncio.timeout`` is not enough either: the request runs as
    its own task, and this task only waits on ``asyncio.wait``, which always delivers a cancel.
    """
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
    except BaseException:
        _abandon(task)
        raise
    if not done:
        _abandon(task)
        await asyncio.wait({task}, timeout=_UNWIND_S)  # let it unwind, but never hang on it
        raise TimeoutError
    return task.result()


def _abandon(task: asyncio.Future[Any]) -> None:
    """Cancel a request nobody waits for any more; its late outcome is not an error."""
    task.cancel()
    task.add_done_callback(_discard_outcome)


def _discard_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # mark retrieved: no "exception was never retrieved" at exit


def _loop_time() -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        import time

        return time.monotonic()


def wire_time_s(wire_bytes: int, baudrate: int, bits_per_char: int = 11) -> float:
    """Time ``wire_bytes`` take on a serial line (11 bits: start, 8 data, parity/stop, stop)."""
    if baudrate <= 0 or wire_bytes < 0 or not math.isfinite(baudrate):
        raise ValueError("baudrate must be positive and wire_bytes non-negative")
    return wire_bytes * bits_per_char / baudrate
