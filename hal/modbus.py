"""Modbus energy meters (driver "modbus", role "meter") driven by register maps in data files.

A register map says, per quantity, where the value lives and how it is encoded; the code
never names a meter (EVerest GenericPowermeter does the same with YAML files). Shipped maps
are ``hal/meters/<model>.toml``; a config may instead carry its own ``map`` table of the same
shape. Map format (addresses are 0-based protocol addresses, as sent on the wire)::

    model = "Eastron SDM630"
    function = "input"        # default for all quantities: "input" (FC 4) or "holding" (FC 3)
    word_order = "big"        # "big": high word first; "little": low word first
    max_block = 80            # most registers the meter answers in one request (<= 125)
    max_gap = 16              # unused registers worth reading to save a request

    [energy_import_wh]        # quantities: see QUANTITIES; energy_import_wh and power_w required
    address = 0x0048
    type = "float32"          # int16 uint16 int32 uint32 int64 uint64 float32 float64
    scale = 1000.0            # raw value * scale = base unit (Wh, W, V, A, Hz)
    # function / word_order: per-quantity overrides

Driver settings: ``model`` (a shipped map name: abb_b23 (also "abb_b24"), carlo_gavazzi_em340
(also "carlo_gavazzi_et340"), eastron_sdm120, eastron_sdm630, eastron_sdm72d_m, orno_we516)
or ``map`` (inline table), ``unit_id``
(1..247, default 1) and the bus settings of ``hal.modbus_bus`` (``port`` or ``host`` /
``tcp_port``, ``baudrate``, ``parity``, ``stopbits``, ``bytesize``, ``timeout_s``, ``retries``).
"""

from __future__ import annotations

import importlib.resources
import logging
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pymodbus.client.mixin import ModbusClientMixin

from hal.base import DeviceError, EnergyMeter, MeterReading
from hal.modbus_bus import (
    BUS_SETTINGS,
    FC_READ_HOLDING,
    FC_READ_INPUT,
    MAX_READ_REGISTERS,
    BusStats,
    DeviceLink,
    link_from_settings,
)
from hal.registry import (
    DriverConfigError,
    DriverContext,
    register_driver,
    reject_unknown,
    setting_int,
    setting_str,
)

log = logging.getLogger(__name__)

QUANTITIES: Final = (
    "energy_import_wh",
    "energy_export_wh",
    "power_w",
    "voltage_l1_v",
    "voltage_l2_v",
    "voltage_l3_v",
    "current_l1_a",
    "current_l2_a",
    "current_l3_a",
    "frequency_hz",
)
REQUIRED_QUANTITIES: Final = ("energy_import_wh", "power_w")
MAP_OPTIONS: Final = ("model", "function", "word_order", "max_block", "max_gap")
QUANTITY_KEYS: Final = ("address", "type", "function", "word_order", "scale")

_DT = ModbusClientMixin.DATATYPE
DATA_TYPES: Final[dict[str, Any]] = {
    "int16": _DT.INT16,
    "uint16": _DT.UINT16,
    "int32": _DT.INT32,
    "uint32": _DT.UINT32,
    "int64": _DT.INT64,
    "uint64": _DT.UINT64,
    "float32": _DT.FLOAT32,
    "float64": _DT.FLOAT64,
}
FUNCTIONS: Final = {"input": FC_READ_INPUT, "holding": FC_READ_HOLDING}
WordOrder = Literal["big", "little"]

# A register that drops by more than this is a reset or a replaced meter, not float noise.
RESET_THRESHOLD_WH: Final = 100.0
# No charge point meter counts 10 TWh; a value beyond that is garbage, not energy.
MAX_PLAUSIBLE_WH: Final = 1e13

METER_DIR: Final = "meters"
# On top of timeout_s per request attempt: back-off, settling, unwinding a cancelled request
# (hal.modbus_bus); and per read, connecting to a TCP gateway.
ATTEMPT_OVERHEAD_S: Final = 2.0
CONNECT_WORST_S: Final = 10.0


@dataclass(frozen=True)
class RegisterSpec:
    """Where one quantity lives and how it is encoded."""

    quantity: str
    function: int  # FC_READ_INPUT or FC_READ_HOLDING
    address: int
    type: str
    word_order: WordOrder
    scale: float

    @property
    def count(self) -> int:
        return int(DATA_TYPES[self.type].value[1])

    @property
    def end(self) -> int:
        return self.address + self.count

    def decode(self, registers: list[int]) -> float:
        value = ModbusClientMixin.convert_from_registers(
            registers, DATA_TYPES[self.type], word_order=self.word_order
        )
        assert isinstance(value, int | float)
        return float(value) * self.scale

    def encode(self, value: float) -> list[int]:
        """Registers a meter would send for ``value`` (base units); for simulators and tests."""
        raw = value / self.scale
        if self.type.startswith("float"):
            return ModbusClientMixin.convert_to_registers(
                float(raw), DATA_TYPES[self.type], word_order=self.word_order
            )
        return ModbusClientMixin.convert_to_registers(
            round(raw), DATA_TYPES[self.type], word_order=self.word_order
        )


@dataclass(frozen=True)
class Block:
    """One read request: ``count`` registers from ``address`` covering ``specs``."""

    function: int
    address: int
    count: int
    specs: tuple[RegisterSpec, ...]


@dataclass(frozen=True)
class RegisterMap:
    model: str
    registers: Mapping[str, RegisterSpec]
    max_block: int = MAX_READ_REGISTERS
    max_gap: int = 16
    blocks: tuple[Block, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(plan_blocks(self)))

    def encode(self, values: Mapping[str, float]) -> dict[int, dict[int, int]]:
        """function code -> {address: register} for the given quantity values."""
        tables: dict[int, dict[int, int]] = {FC_READ_INPUT: {}, FC_READ_HOLDING: {}}
        for quantity, value in values.items():
            spec = self.registers.get(quantity)
            if spec is None:
                continue
            for i, register in enumerate(spec.encode(value)):
                tables[spec.function][spec.address + i] = register
        return tables


def plan_blocks(regmap: RegisterMap) -> list[Block]:
    """Group the map's registers into as few reads as the meter's limits allow.

    Per function code, sorted by address, a register joins the current block while the gap
    before it is at most ``max_gap`` and the block stays within ``max_block`` registers.
    """
    blocks: list[Block] = []
    for function in (FC_READ_INPUT, FC_READ_HOLDING):
        specs = sorted(
            (s for s in regmap.registers.values() if s.function == function),
            key=lambda s: (s.address, s.quantity),
        )
        current: list[RegisterSpec] = []
        start = end = 0
        for spec in specs:
            if current and (
                spec.address - end > regmap.max_gap or max(end, spec.end) - start > regmap.max_block
            ):
                blocks.append(Block(function, start, end - start, tuple(current)))
                current = []
            if not current:
                start, end = spec.address, spec.end
            current.append(spec)
            end = max(end, spec.end)
        if current:
            blocks.append(Block(function, start, end - start, tuple(current)))
    return blocks


# --- map parsing ------------------------------------------------------------------------------


def parse_map(data: Mapping[str, Any], key: str, default_model: str = "custom") -> RegisterMap:
    """A RegisterMap from a TOML table; mistakes raise DriverConfigError naming ``key.<...>``."""

    def k(*parts: str) -> str:
        return ".".join((key, *parts)) if key else ".".join(parts)

    if not isinstance(data, Mapping):
        raise DriverConfigError(key, f"must be a table (register map), got {type(data).__name__}")
    for name in data:
        if name not in MAP_OPTIONS and name not in QUANTITIES:
            raise DriverConfigError(
                k(str(name)),
                "unknown map entry; map options: "
                + ", ".join(MAP_OPTIONS)
                + "; quantities: "
                + ", ".join(QUANTITIES),
            )
    model = data.get("model", default_model)
    if not isinstance(model, str) or not model:
        raise DriverConfigError(k("model"), "must be a non-empty string")
    default_function = _choice(data, "function", "input", FUNCTIONS, k)
    default_order = _choice(data, "word_order", "big", ("big", "little"), k)
    max_block = _int(data, "max_block", MAX_READ_REGISTERS, 1, MAX_READ_REGISTERS, k)
    max_gap = _int(data, "max_gap", 16, 0, MAX_READ_REGISTERS, k)
    registers: dict[str, RegisterSpec] = {}
    for quantity in QUANTITIES:
        if quantity not in data:
            continue
        entry = data[quantity]
        if not isinstance(entry, Mapping):
            raise DriverConfigError(
                k(quantity), "must be a table with address, type and optionally scale"
            )
        for name in entry:
            if name not in QUANTITY_KEYS:
                raise DriverConfigError(
                    k(quantity, str(name)),
                    f"unknown setting; a quantity takes: {', '.join(QUANTITY_KEYS)}",
                )

        def qk(*parts: str, _q: str = quantity) -> str:
            return k(_q, *parts)

        if "address" not in entry:
            raise DriverConfigError(k(quantity, "address"), "is required (0..65535)")
        address = _int(entry, "address", 0, 0, 0xFFFF, qk)
        type_name = entry.get("type")
        if type_name not in DATA_TYPES:
            raise DriverConfigError(
                k(quantity, "type"),
                f"must be one of {', '.join(DATA_TYPES)}, got {type_name!r}",
            )
        scale = entry.get("scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, int | float):
            raise DriverConfigError(k(quantity, "scale"), f"must be a number, got {scale!r}")
        if not math.isfinite(scale) or scale == 0:
            raise DriverConfigError(k(quantity, "scale"), "must be a finite non-zero number")
        spec = RegisterSpec(
            quantity=quantity,
            function=FUNCTIONS[_choice(entry, "function", default_function, FUNCTIONS, qk)],
            address=address,
            type=str(type_name),
            word_order="little"
            if _choice(entry, "word_order", default_order, ("big", "little"), qk) == "little"
            else "big",
            scale=float(scale),
        )
        if spec.end > 0x10000:
            raise DriverConfigError(k(quantity, "address"), "register runs past 65535")
        if spec.count > max_block:
            raise DriverConfigError(k("max_block"), f"is smaller than {quantity}'s type")
        registers[quantity] = spec
    for quantity in REQUIRED_QUANTITIES:
        if quantity not in registers:
            raise DriverConfigError(k(quantity), "is required in a meter register map")
    _check_overlaps(registers, k)
    return RegisterMap(model=model, registers=registers, max_block=max_block, max_gap=max_gap)


def _choice(data: Mapping[str, Any], name: str, default: str, choices: Any, k: Any) -> str:
    value = data.get(name, default)
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise DriverConfigError(k(name), f"must be one of {allowed}, got {value!r}")
    return str(value)


def _int(data: Mapping[str, Any], name: str, default: int, lo: int, hi: int, k: Any) -> int:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DriverConfigError(k(name), f"must be a whole number, got {value!r}")
    if not lo <= value <= hi:
        raise DriverConfigError(k(name), f"must be within {lo}..{hi}, got {value}")
    return value


def _check_overlaps(registers: Mapping[str, RegisterSpec], k: Any) -> None:
    specs = sorted(registers.values(), key=lambda s: (s.function, s.address))
    for a, b in zip(specs, specs[1:], strict=False):
        if a.function == b.function and b.address < a.end:
            raise DriverConfigError(
                k(b.quantity, "address"), f"overlaps {a.quantity} (registers {a.address}..)"
            )


def shipped_models() -> list[str]:
    """Names of the register maps shipped in hal/meters (the ``model`` setting's values)."""
    root = importlib.resources.files("hal") / METER_DIR
    return sorted(p.name[: -len(".toml")] for p in root.iterdir() if p.name.endswith(".toml"))


def load_model(name: str) -> RegisterMap:
    """The shipped register map ``name``; a broken file is a bug, reported with its path."""
    if name not in shipped_models():
        raise KeyError(name)
    path = importlib.resources.files("hal") / METER_DIR / f"{name}.toml"
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return parse_map(data, f"hal/meters/{name}.toml", default_model=name)


# --- the driver -------------------------------------------------------------------------------


class _MonotonicCounter:
    """Keeps an energy register from running backwards across a meter reset or swap.

    A drop larger than RESET_THRESHOLD_WH means the meter was reset or replaced: the offset
    absorbs it, so the reported total continues from the last value. Smaller drops are
    treated as noise and the last value is held until the register passes it again.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.offset_wh = 0.0
        self.last_raw_wh: float | None = None
        self.last_wh: float | None = None
        self.resets = 0

    def update(self, raw_wh: float) -> float:
        last_raw, last = self.last_raw_wh, self.last_wh
        if last_raw is not None and last is not None and raw_wh < last_raw:
            if last_raw - raw_wh <= RESET_THRESHOLD_WH:
                return last
            self.offset_wh = last - raw_wh
            self.resets += 1
            log.warning(
                "%s register went back from %.0f Wh to %.0f Wh (meter reset or replaced); "
                "continuing from %.0f Wh",
                self.what,
                last_raw,
                raw_wh,
                last,
            )
        self.last_raw_wh = raw_wh
        self.last_wh = raw_wh + self.offset_wh
        return self.last_wh


@dataclass
class MeterStats:
    """Counters for the bench and diagnostics."""

    polls: int = 0
    failed_polls: int = 0
    last_poll: BusStats = field(default_factory=BusStats)  # cost of the last read()
    total: BusStats = field(default_factory=BusStats)


class ModbusMeter(EnergyMeter):
    """A Modbus energy meter read through a register map, one request per map block."""

    def __init__(self, link: DeviceLink, regmap: RegisterMap, name: str = "meter") -> None:
        self.link = link
        self.regmap = regmap
        self.name = name
        self.stats = MeterStats()
        self._import = _MonotonicCounter(f"{name}: {regmap.model} import energy")
        self._export = _MonotonicCounter(f"{name}: {regmap.model} export energy")
        self._closed = False

    @property
    def requests_per_poll(self) -> int:
        return len(self.regmap.blocks)

    @property
    def worst_read_s(self) -> float:
        """A silent meter: every request of a poll times out (retries + 1) times, plus the
        bus's per-attempt overhead and one connect to a TCP gateway (hal.modbus_bus)."""
        attempts = self.requests_per_poll * (self.link.retries + 1)
        return attempts * (self.link.timeout_s + ATTEMPT_OVERHEAD_S) + CONNECT_WORST_S

    @property
    def energy_offset_wh(self) -> float:
        return self._import.offset_wh

    async def read(self) -> MeterReading:
        poll = BusStats()
        self.stats.polls += 1
        try:
            values: dict[str, float] = {}
            for block in self.regmap.blocks:
                registers = await self.link.read_registers(
                    block.function, block.address, block.count, poll
                )
                for spec in block.specs:
                    offset = spec.address - block.address
                    values[spec.quantity] = spec.decode(registers[offset : offset + spec.count])
            return self._reading(values)
        except DeviceError:
            self.stats.failed_polls += 1
            raise
        finally:
            self.stats.last_poll = poll
            self.stats.total.add(poll)

    def _reading(self, values: Mapping[str, float]) -> MeterReading:
        energy = values["energy_import_wh"]
        if not math.isfinite(energy) or energy < 0 or energy > MAX_PLAUSIBLE_WH:
            raise DeviceError(f"{self.name}: implausible import energy register {energy!r} Wh")
        power = values["power_w"]
        if not math.isfinite(power):
            raise DeviceError(f"{self.name}: implausible power register {power!r} W")
        export: float | None = None
        raw_export = values.get("energy_export_wh")
        if raw_export is not None and math.isfinite(raw_export) and 0 <= raw_export:
            if raw_export <= MAX_PLAUSIBLE_WH:
                export = self._export.update(raw_export)
        frequency = values.get("frequency_hz")
        if frequency is not None and not (math.isfinite(frequency) and frequency > 0):
            frequency = None
        return MeterReading(
            energy_wh=self._import.update(energy),
            power_w=power,
            voltage_v=_phases(values, "voltage_l{}_v"),
            current_a=_phases(values, "current_l{}_a"),
            frequency_hz=frequency,
            energy_export_wh=export,
        )

    async def close_driver(self) -> None:
        if not self._closed:
            self._closed = True
            self.link.release()


def _phases(values: Mapping[str, float], pattern: str) -> tuple[float, ...]:
    result = []
    for phase in (1, 2, 3):
        value = values.get(pattern.format(phase))
        if value is None:
            break
        if not math.isfinite(value):
            return ()
        result.append(value)
    return tuple(result)


METER_SETTINGS: Final = ("model", "map", "unit_id", *BUS_SETTINGS)
# Models that share a shipped map under another name.
MODEL_ALIASES: Final = {"abb_b24": "abb_b23", "carlo_gavazzi_et340": "carlo_gavazzi_em340"}


@register_driver("meter", "modbus")
def create_modbus_meter(settings: Mapping[str, Any], ctx: DriverContext) -> ModbusMeter:
    reject_unknown(settings, METER_SETTINGS, ctx)
    models = shipped_models()
    model = setting_str(settings, "model", None, ctx, choices=[*models, *MODEL_ALIASES])
    model = MODEL_ALIASES.get(model, model) if model is not None else None
    custom: Any = settings.get("map")
    if model is not None and custom is not None:
        raise DriverConfigError(ctx.key("map"), "set either model or map, not both")
    if model is None and custom is None:
        raise DriverConfigError(
            ctx.key("model"),
            f"is required: one of {', '.join(models)}, or give a register map in `map`",
        )
    if model is not None:
        regmap = load_model(model)
    else:
        regmap = parse_map(custom, ctx.key("map"))
    unit_id = setting_int(settings, "unit_id", 1, ctx, min_value=1, max_value=247)
    link = link_from_settings(settings, ctx, unit_id)
    name = f"connector {ctx.connector_id} meter" if ctx.connector_id else "meter"
    return ModbusMeter(link, regmap, name=name)
