"""Driver registry: maps (role, driver name) from the config to device factories."""

from __future__ import annotations

import difflib
import enum
import importlib
import math
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, overload

from hal.base import (
    ConnectorLock,
    Contactor,
    EnergyMeter,
    FaultInput,
    Indicator,
    PhaseSwitch,
    TokenReader,
    VehicleInterface,
)

DRIVER_ROLES: Final = (
    "contactor",
    "meter",
    "reader",
    "vehicle",
    "lock",
    "indicator",
    "fault",
    "phase_switch",
)

# Modules whose import registers drivers. They are imported on first use of the registry,
# not at import time, because they import this module themselves (a top-level import here
# would be a cycle) and real drivers may pull in hardware libraries nobody needs in tests.
_DRIVER_MODULES: tuple[str, ...] = (
    "hal.sim",
    "hal.gpio",
    "hal.modbus",
    "hal.evse_board",
    "hal.pcsc",
)

# Set in DriverContext.shared to build drivers without touching hardware (check-config):
# GPIO drivers then use mock pins. Modbus and PC/SC drivers never open anything at creation.
OFFLINE_KEY: Final = "hal.offline"

# Which module provides a driver name, so `evsed run` imports only what the config uses
# (pymodbus, gpiozero and pyscard cost memory and start-up time on a Pi).
_DRIVER_NAME_MODULES: Final[dict[str, str]] = {
    "sim": "hal.sim",
    "gpio": "hal.gpio",
    "modbus": "hal.modbus",
    "evse-din": "hal.evse_board",
    "pcsc": "hal.pcsc",
}

# What a factory must return per role; a mismatch is a driver bug, not a config error.
_ROLE_TYPES: Final[dict[str, type]] = {
    "contactor": Contactor,
    "meter": EnergyMeter,
    "reader": TokenReader,
    "vehicle": VehicleInterface,
    "lock": ConnectorLock,
    "indicator": Indicator,
    "fault": FaultInput,
    "phase_switch": PhaseSwitch,
}

# Keys every driver section may carry: "driver" selects the factory, so the config
# loader may pass the whole section through without stripping it first.
_ALWAYS_ALLOWED: Final = frozenset({"driver"})


class DriverConfigError(ValueError):
    """A driver section of the config is wrong; ``key`` is the dotted key to fix."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.reason = message


@dataclass
class DriverContext:
    """What a driver factory gets besides its own settings."""

    connector_id: int  # 0 for station-wide devices such as the token reader
    monotonic_s: Callable[[], float] = time.monotonic
    # One dict per station, shared by all its drivers, so that e.g. the simulated meter
    # of connector 1 can find the simulated vehicle of connector 1.
    shared: dict[str, Any] = field(default_factory=dict)
    key_prefix: str = ""  # e.g. "connectors.1.meter"; prefixes keys in error messages

    def key(self, name: str) -> str:
        """The full dotted config key of setting ``name``."""
        return f"{self.key_prefix}.{name}" if self.key_prefix else name


DriverFactory = Callable[[Mapping[str, Any], DriverContext], Any]
F = TypeVar("F", bound=DriverFactory)

_DRIVERS: dict[str, dict[str, DriverFactory]] = {role: {} for role in DRIVER_ROLES}
_modules_loaded = False
# Import failures of driver modules, reported when a driver that is not found is asked
# for: a missing hardware library must not break the simulator, but must not vanish either.
_IMPORT_ERRORS: dict[str, str] = {}


def register_driver(role: str, name: str) -> Callable[[F], F]:
    """Decorator registering ``factory(settings, ctx) -> device`` as driver ``name``."""
    if role not in _DRIVERS:
        raise ValueError(f"unknown driver role {role!r}; known roles: {', '.join(DRIVER_ROLES)}")
    if not name or not isinstance(name, str):
        raise ValueError(f"driver name must be a non-empty string, got {name!r}")

    def decorator(factory: F) -> F:
        existing = _DRIVERS[role].get(name)
        # Same qualified name means the module was imported twice (e.g. reloaded): harmless.
        if existing is not None and _qualname(existing) != _qualname(factory):
            raise ValueError(
                f"{role} driver {name!r} is already registered by {_qualname(existing)}"
            )
        _DRIVERS[role][name] = factory
        return factory

    return decorator


def _qualname(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _load_driver_modules() -> None:
    global _modules_loaded
    if _modules_loaded:
        return
    # Set first: a driver module importing this one and calling known_drivers() at import
    # time must not recurse into loading itself again.
    _modules_loaded = True
    for module in _DRIVER_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            _IMPORT_ERRORS[module] = f"{type(exc).__name__}: {exc}"


def known_drivers(role: str) -> list[str]:
    """Sorted names of the drivers registered for ``role`` (empty for unknown roles)."""
    _load_driver_modules()
    return sorted(_DRIVERS.get(role, {}))


def create_driver(role: str, name: object, settings: object, ctx: DriverContext) -> Any:
    """Create the ``role`` device of driver ``name``; config mistakes raise DriverConfigError.

    ``name`` and ``settings`` come straight from the config, so they are type-checked here.
    """
    module = _DRIVER_NAME_MODULES.get(name) if isinstance(name, str) else None
    if module is not None and not _modules_loaded and module not in _IMPORT_ERRORS:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            _IMPORT_ERRORS[module] = f"{type(exc).__name__}: {exc}"
    if module is None or name not in _DRIVERS.get(role, {}):
        _load_driver_modules()  # unknown name: load everything for a helpful error
    if role not in _DRIVERS:
        raise DriverConfigError(
            ctx.key_prefix,
            f"unknown device role {role!r}; known roles: {', '.join(DRIVER_ROLES)}",
        )
    driver_key = ctx.key("driver")
    known = sorted(_DRIVERS[role])
    known_text = ", ".join(repr(n) for n in known) or "(none)"
    if not isinstance(name, str):
        raise DriverConfigError(
            driver_key,
            f"must be a driver name (a string), got {_describe(name)}; known {role} drivers: "
            f"{known_text}",
        )
    factory = _DRIVERS[role].get(name)
    if factory is None:
        message = f"unknown {role} driver {name!r}; known {role} drivers: {known_text}"
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
        if _IMPORT_ERRORS:
            failed = "; ".join(f"{m} ({e})" for m, e in sorted(_IMPORT_ERRORS.items()))
            message += f"; driver modules that failed to import: {failed}"
        raise DriverConfigError(driver_key, message)
    if not isinstance(settings, Mapping):
        raise DriverConfigError(
            ctx.key_prefix,
            f"must be a table of driver settings, got {_describe(settings)}",
        )
    device = factory(settings, ctx)
    expected = _ROLE_TYPES[role]
    if not isinstance(device, expected):
        raise TypeError(
            f"{role} driver {name!r} ({_qualname(factory)}) returned "
            f"{type(device).__name__}, expected a {expected.__name__}"
        )
    return device


# --- typed settings helpers for factories ------------------------------------------------


class _Required(enum.Enum):
    REQUIRED = "required"


REQUIRED: Final = _Required.REQUIRED  # pass as ``default`` to make a setting mandatory


def _describe(value: object) -> str:
    if value is None:
        return "nothing (null)"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _lookup(settings: Mapping[str, Any], name: str) -> tuple[bool, Any]:
    """(present, value); a null value counts as absent so optional settings can be cleared."""
    if name not in settings or settings[name] is None:
        return False, None
    return True, settings[name]


def _check_range(
    value: float,
    ctx: DriverContext,
    name: str,
    min_value: float | None,
    max_value: float | None,
) -> None:
    if min_value is not None and value < min_value:
        raise DriverConfigError(ctx.key(name), f"must be at least {min_value}, got {value}")
    if max_value is not None and value > max_value:
        raise DriverConfigError(ctx.key(name), f"must be at most {max_value}, got {value}")


def setting_float(
    settings: Mapping[str, Any],
    name: str,
    default: float | _Required,
    ctx: DriverContext,
    min_value: float | None = None,
    max_value: float | None = None,
) -> float:
    """A finite number (int or float, not bool) within [min_value, max_value]."""
    present, value = _lookup(settings, name)
    if not present:
        if default is REQUIRED:
            raise DriverConfigError(ctx.key(name), "is required; set it to a number")
        return float(default)
    # bool is a subclass of int, but "true" where a number belongs is a config mistake.
    if isinstance(value, bool) or not isinstance(value, int | float):
        hint = " (write it without quotes)" if isinstance(value, str) else ""
        raise DriverConfigError(ctx.key(name), f"must be a number, got {_describe(value)}{hint}")
    result = float(value)
    if not math.isfinite(result):
        raise DriverConfigError(ctx.key(name), f"must be a finite number, got {value}")
    _check_range(result, ctx, name, min_value, max_value)
    return result


def setting_int(
    settings: Mapping[str, Any],
    name: str,
    default: int | _Required,
    ctx: DriverContext,
    min_value: int | None = None,
    max_value: int | None = None,
    choices: Collection[int] | None = None,
) -> int:
    """A whole number (int, not bool, not float) within range and, if given, in ``choices``."""
    present, value = _lookup(settings, name)
    if not present:
        if default is REQUIRED:
            raise DriverConfigError(ctx.key(name), "is required; set it to a whole number")
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        hint = " (write it without quotes)" if isinstance(value, str) else ""
        raise DriverConfigError(
            ctx.key(name), f"must be a whole number, got {_describe(value)}{hint}"
        )
    _check_range(value, ctx, name, min_value, max_value)
    if choices is not None and value not in choices:
        allowed = ", ".join(str(c) for c in sorted(choices))
        raise DriverConfigError(ctx.key(name), f"must be one of {allowed}, got {value}")
    return value


def setting_bool(
    settings: Mapping[str, Any],
    name: str,
    default: bool | _Required,
    ctx: DriverContext,
) -> bool:
    """A real boolean; strings like "yes" or numbers like 1 are rejected, not guessed."""
    present, value = _lookup(settings, name)
    if not present:
        if default is REQUIRED:
            raise DriverConfigError(ctx.key(name), "is required; set it to true or false")
        return default
    if not isinstance(value, bool):
        raise DriverConfigError(
            ctx.key(name), f"must be true or false (without quotes), got {_describe(value)}"
        )
    return value


@overload
def setting_str(
    settings: Mapping[str, Any],
    name: str,
    default: str | _Required,
    ctx: DriverContext,
    choices: Collection[str] | None = None,
) -> str: ...
@overload
def setting_str(
    settings: Mapping[str, Any],
    name: str,
    default: None,
    ctx: DriverContext,
    choices: Collection[str] | None = None,
) -> str | None: ...
def setting_str(
    settings: Mapping[str, Any],
    name: str,
    default: str | None | _Required,
    ctx: DriverContext,
    choices: Collection[str] | None = None,
) -> str | None:
    """A non-empty string, optionally one of ``choices``; ``default=None`` makes it optional."""
    present, value = _lookup(settings, name)
    if not present:
        if default is REQUIRED:
            raise DriverConfigError(ctx.key(name), "is required; set it to a string")
        return default
    if not isinstance(value, str):
        raise DriverConfigError(ctx.key(name), f"must be a string, got {_describe(value)}")
    if not value:
        raise DriverConfigError(ctx.key(name), "must not be empty; remove it to use the default")
    if choices is not None and value not in choices:
        allowed = ", ".join(repr(c) for c in sorted(choices))
        raise DriverConfigError(ctx.key(name), f"must be one of {allowed}, got {value!r}")
    return value


def reject_unknown(
    settings: Mapping[str, Any], allowed: Collection[str], ctx: DriverContext
) -> None:
    """Raise for the first setting the driver does not know, so typos do not pass silently."""
    known = set(allowed) | _ALWAYS_ALLOWED
    for raw_key in settings:
        if isinstance(raw_key, str) and raw_key in known:
            continue
        key = str(raw_key)
        message = "unknown setting"
        close = difflib.get_close_matches(key, sorted(known), n=1)
        if close:
            message += f" (did you mean {ctx.key(close[0])!r}?)"
        listed = ", ".join(sorted(allowed)) or "none"
        message += f"; this driver accepts: {listed}"
        raise DriverConfigError(ctx.key(key), message)
