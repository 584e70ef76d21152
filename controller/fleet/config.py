"""The fleet's settings: a TOML file ([fleet], [station], [behaviour]) plus CLI overrides."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from controller.fleet.behaviour import Step, parse_steps

PROTOCOLS = ("1.6", "2.0.1")
MAX_STATIONS = 100_000
MODES = ("random", "scripted")


class FleetConfigError(ValueError):
    """A fleet configuration problem: ``key`` is the dotted TOML key or the CLI option."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass(frozen=True)
class Range:
    """A uniformly drawn value between ``lo`` and ``hi`` (both inclusive)."""

    lo: float
    hi: float


@dataclass(frozen=True)
class RandomBehaviour:
    """[behaviour] for mode = "random": what a driver does, drawn per station from its RNG.

    Each cycle: idle, then (with ``fault_probability``) a fault, (with
    ``offline_probability``) an offline period, else a session: plug, tap, charge at a
    power drawn from ``power_w`` for ``session_s``, tap, unplug.
    """

    idle_s: Range = Range(30.0, 300.0)
    session_s: Range = Range(300.0, 1800.0)
    power_w: Range = Range(3700.0, 22000.0)
    fault_probability: float = 0.02
    fault_s: Range = Range(10.0, 60.0)
    offline_probability: float = 0.05
    offline_s: Range = Range(30.0, 300.0)


@dataclass(frozen=True)
class FleetConfig:
    stations: int = 10
    csms_url: str = ""
    prefix: str = "FLEET"
    protocol: str = "1.6"
    seed: int = 0
    # None: run until interrupted (Ctrl-C / SIGTERM).
    duration_s: float | None = None
    # Waits of the behaviour are divided by this (the station's own clock is real time).
    speed: float = 1.0
    workers: int = 1
    summary_interval_s: float = 5.0
    # None: a temporary directory removed at the end.
    work_dir: str | None = None
    # New connections per second while starting (0: all at once).
    start_rate_per_s: float = 200.0
    mode: str = "random"
    random: RandomBehaviour = RandomBehaviour()
    steps: tuple[Step, ...] = ()
    repeat: bool = False
    # Per-station [ocpp] keys (the station's OCPP configuration): 1.6 keys, or for 2.0.1
    # one table per device-model component ([station.ocpp.SampledDataCtrlr]
    # TxUpdatedInterval = 60).
    ocpp: dict[str, Any] = field(default_factory=dict)
    # [station] reconnect back-off (each station's [csms] reconnect_min_s / reconnect_max_s).
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    # SQLite page cache per station (KiB): small stores need little.
    store_cache_kib: int = 64
    # WebSocket permessage-deflate per station: "small" (2 KiB windows, memLevel 4: less zlib
    # state per station when the CSMS would accept 32 KiB windows), "default" (a single
    # charger's settings) or "off".
    compression: str = "small"
    log_level: str = "WARNING"


_FLEET_KEYS = {
    "stations",
    "csms",
    "prefix",
    "protocol",
    "ocpp_version",  # the same as protocol, named as in evsed's own [csms] table
    "seed",
    "duration_s",
    "speed",
    "workers",
    "summary_interval_s",
    "work_dir",
    "start_rate_per_s",
    "store_cache_kib",
    "compression",
    "log_level",
}
_STATION_KEYS = {"ocpp", "reconnect_min_s", "reconnect_max_s"}
_BEHAVIOUR_KEYS = {"mode", "steps", "repeat", *RandomBehaviour.__dataclass_fields__}


def _unknown(table: dict[str, Any], allowed: set[str], prefix: str) -> None:
    for name in table:
        if name not in allowed:
            raise FleetConfigError(
                f"{prefix}.{name}", f"unknown key; allowed here: {', '.join(sorted(allowed))}"
            )


def _table(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise FleetConfigError(name, f"must be a table ([{name}])")
    return value


def _number(value: Any, key: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FleetConfigError(key, f"must be a number between {lo:g} and {hi:g}")
    if not lo <= value <= hi:
        raise FleetConfigError(key, f"{value} is out of range; use {lo:g} .. {hi:g}")
    return float(value)


def _int(value: Any, key: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FleetConfigError(key, f"must be a whole number between {lo} and {hi}")
    if not lo <= value <= hi:
        raise FleetConfigError(key, f"{value} is out of range; use {lo} .. {hi}")
    return value


def _range(value: Any, key: str, hi: float) -> Range:
    """A number (fixed) or [lo, hi]."""
    if isinstance(value, list):
        if len(value) != 2:
            raise FleetConfigError(key, "must be a number or [lo, hi]")
        lo_v, hi_v = (_number(v, key, 0, hi) for v in value)
        if lo_v > hi_v:
            raise FleetConfigError(key, f"[{lo_v:g}, {hi_v:g}]: lo must not exceed hi")
        return Range(lo_v, hi_v)
    fixed = _number(value, key, 0, hi)
    return Range(fixed, fixed)


def _random(table: dict[str, Any]) -> RandomBehaviour:
    day_s = 86400.0
    kwargs: dict[str, Any] = {}
    for name in ("idle_s", "session_s", "fault_s", "offline_s"):
        if name in table:
            kwargs[name] = _range(table[name], f"behaviour.{name}", day_s)
    if "power_w" in table:
        kwargs["power_w"] = _range(table["power_w"], "behaviour.power_w", 350_000)
    for name in ("fault_probability", "offline_probability"):
        if name in table:
            kwargs[name] = _number(table[name], f"behaviour.{name}", 0, 1)
    return RandomBehaviour(**kwargs)


def check_protocol(protocol: str, key: str = "fleet.protocol") -> str:
    if protocol in PROTOCOLS:
        return protocol
    raise FleetConfigError(
        key, f"{protocol!r} is not an OCPP version; use one of {', '.join(PROTOCOLS)}"
    )


def check_station_ocpp(ocpp: dict[str, Any], protocol: str | None) -> dict[str, Any]:
    """[station.ocpp]: 1.6 configuration keys, or (2.0.1) device-model variables grouped by
    component, e.g. [station.ocpp.AuthCtrlr] OfflineTxForUnknownIdEnabled = true.
    ``protocol`` None: not known yet (only the values are checked)."""
    for name, value in ocpp.items():
        if protocol == "1.6" and isinstance(value, dict):
            raise FleetConfigError(
                f"station.ocpp.{name}", "a component table is for 2.0.1 stations; 1.6 takes keys"
            )
        if protocol == "2.0.1" and not isinstance(value, dict):
            raise FleetConfigError(
                f"station.ocpp.{name}",
                "2.0.1 stations take device-model variables by component, e.g. "
                "[station.ocpp.SampledDataCtrlr] TxUpdatedInterval = 60",
            )
        if isinstance(value, dict):
            for variable, v in value.items():
                if isinstance(v, dict | list):
                    raise FleetConfigError(
                        f"station.ocpp.{name}.{variable}", "must be a number, bool or string"
                    )
    return ocpp


COMPRESSIONS = ("small", "default", "off")


def check_compression(value: Any, key: str) -> str:
    if value not in COMPRESSIONS:
        raise FleetConfigError(key, f"{value!r}: use one of {', '.join(COMPRESSIONS)}")
    return str(value)


def check_csms_url(url: str, key: str) -> str:
    if not url:
        raise FleetConfigError(key, "missing; the CSMS URL, e.g. ws://127.0.0.1:9000/ocpp")
    if not url.startswith(("ws://", "wss://")):
        raise FleetConfigError(key, f"{url!r} must start with ws:// or wss://")
    return url


def parse(data: dict[str, Any]) -> FleetConfig:
    """A FleetConfig from a parsed TOML document; raises FleetConfigError."""
    _unknown(data, {"fleet", "station", "behaviour"}, "")
    fleet = _table(data, "fleet")
    _unknown(fleet, _FLEET_KEYS, "fleet")
    station = _table(data, "station")
    _unknown(station, _STATION_KEYS, "station")
    behaviour = _table(data, "behaviour")
    _unknown(behaviour, _BEHAVIOUR_KEYS, "behaviour")
    kwargs: dict[str, Any] = {}
    if "stations" in fleet:
        kwargs["stations"] = _int(fleet["stations"], "fleet.stations", 1, MAX_STATIONS)
    if "csms" in fleet:
        if not isinstance(fleet["csms"], str):
            raise FleetConfigError("fleet.csms", "must be a string in quotes")
        kwargs["csms_url"] = check_csms_url(fleet["csms"], "fleet.csms")
    if "prefix" in fleet:
        prefix = fleet["prefix"]
        if not isinstance(prefix, str) or not prefix.replace("-", "").isalnum() or len(prefix) > 40:
            raise FleetConfigError("fleet.prefix", "letters, digits and '-', at most 40")
        kwargs["prefix"] = prefix
    if "protocol" in fleet and "ocpp_version" in fleet:
        raise FleetConfigError("fleet.ocpp_version", "give protocol or ocpp_version, not both")
    for name in ("protocol", "ocpp_version"):
        if name in fleet:
            kwargs["protocol"] = check_protocol(str(fleet[name]), f"fleet.{name}")
    if "seed" in fleet:
        kwargs["seed"] = _int(fleet["seed"], "fleet.seed", 0, 2**63 - 1)
    if "duration_s" in fleet:
        kwargs["duration_s"] = _number(fleet["duration_s"], "fleet.duration_s", 0, 365 * 86400)
    if "speed" in fleet:
        kwargs["speed"] = _number(fleet["speed"], "fleet.speed", 0.001, 100_000)
    if "workers" in fleet:
        kwargs["workers"] = _int(fleet["workers"], "fleet.workers", 1, 256)
    if "summary_interval_s" in fleet:
        kwargs["summary_interval_s"] = _number(
            fleet["summary_interval_s"], "fleet.summary_interval_s", 0, 3600
        )
    if "work_dir" in fleet:
        kwargs["work_dir"] = str(fleet["work_dir"])
    if "start_rate_per_s" in fleet:
        kwargs["start_rate_per_s"] = _number(
            fleet["start_rate_per_s"], "fleet.start_rate_per_s", 0, 100_000
        )
    if "store_cache_kib" in fleet:
        kwargs["store_cache_kib"] = _int(
            fleet["store_cache_kib"], "fleet.store_cache_kib", 8, 65536
        )
    if "compression" in fleet:
        kwargs["compression"] = check_compression(fleet["compression"], "fleet.compression")
    if "log_level" in fleet:
        level = str(fleet["log_level"]).upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise FleetConfigError("fleet.log_level", "use DEBUG, INFO, WARNING, ERROR or CRITICAL")
        kwargs["log_level"] = level
    ocpp = station.get("ocpp", {})
    if not isinstance(ocpp, dict):
        raise FleetConfigError("station.ocpp", "must be a table of OCPP configuration keys")
    # Checked against the version once it is known: the command line may still give it.
    kwargs["ocpp"] = check_station_ocpp(dict(ocpp), kwargs.get("protocol"))
    for name in ("reconnect_min_s", "reconnect_max_s"):
        if name in station:
            kwargs[name] = _number(station[name], f"station.{name}", 0.01, 3600)
    mode = behaviour.get("mode", "scripted" if "steps" in behaviour else "random")
    if mode not in MODES:
        raise FleetConfigError("behaviour.mode", f"{mode!r}: use one of {', '.join(MODES)}")
    kwargs["mode"] = mode
    kwargs["random"] = _random(behaviour)
    if "repeat" in behaviour:
        if not isinstance(behaviour["repeat"], bool):
            raise FleetConfigError("behaviour.repeat", "must be true or false")
        kwargs["repeat"] = behaviour["repeat"]
    if mode == "scripted":
        raw_steps = behaviour.get("steps")
        if not isinstance(raw_steps, list) or not raw_steps:
            raise FleetConfigError(
                "behaviour.steps", 'mode "scripted" needs steps: [[behaviour.steps]] do = "plug"'
            )
        try:
            kwargs["steps"] = parse_steps(raw_steps)
        except ValueError as exc:
            raise FleetConfigError("behaviour.steps", str(exc)) from None
    return FleetConfig(**kwargs)


def load(path: str | Path) -> FleetConfig:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise FleetConfigError(str(path), f"cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise FleetConfigError(str(path), f"not valid TOML: {exc}") from None
    return parse(data)


def with_overrides(config: FleetConfig, **options: Any) -> FleetConfig:
    """The CLI options that were given (not None) over the file's values, checked."""
    given = {k: v for k, v in options.items() if v is not None}
    if "stations" in given and not 1 <= given["stations"] <= MAX_STATIONS:
        raise FleetConfigError("--stations", f"{given['stations']}: use 1 .. {MAX_STATIONS}")
    if "workers" in given and not 1 <= given["workers"] <= 256:
        raise FleetConfigError("--workers", f"{given['workers']}: use 1 .. 256")
    if "speed" in given and not given["speed"] > 0:
        raise FleetConfigError("--speed", "must be above 0")
    if "duration_s" in given and given["duration_s"] < 0:
        raise FleetConfigError("--duration", "must not be negative")
    if "csms_url" in given:
        check_csms_url(given["csms_url"], "--csms")
    if "protocol" in given:
        check_protocol(given["protocol"], "--ocpp")
    if "compression" in given:
        check_compression(given["compression"], "--compression")
    merged = replace(config, **given)
    check_station_ocpp(merged.ocpp, merged.protocol)
    if not merged.csms_url:
        raise FleetConfigError("--csms", "missing; give --csms ws://HOST:PORT/PATH or [fleet] csms")
    return merged
