"""Helpers shared by the bench/ scripts: statistics, child processes, sim charger config."""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import tomllib
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

_children: list[subprocess.Popen[bytes]] = []


def add_repo_root_to_sys_path() -> None:
    """Make ``controller``, ``hal`` and ``tests`` importable when run as ``bench/<name>.py``."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def quiet_logging() -> None:
    """Only errors from the product's loggers, so they do not mix into the figures."""
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")


# --------------------------------------------------------------------------- statistics


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (NaN if empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def median(values: list[float]) -> float:
    """Median of ``values`` in any order (NaN if empty)."""
    s = sorted(values)
    if not s:
        return math.nan
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def format_stats(
    values: list[float], *, digits: int, width: int = 0, scale: float = 1.0, unit: str = ""
) -> str:
    """``median X  p99 Y  max Z [unit]`` of ``values`` times ``scale`` ("n/a" if empty)."""
    s = sorted(values)
    if not s:
        return "n/a"
    spec = f"{width}.{digits}f" if width else f".{digits}f"
    text = (
        f"median {median(s) * scale:{spec}}  p99 {percentile(s, 99) * scale:{spec}}  "
        f"max {s[-1] * scale:{spec}}"
    )
    return f"{text} {unit}" if unit else text


# --------------------------------------------------------------------------- children


def spawn(argv: list[str], log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` in the repository root, in its own session (``killpg`` reaches its
    grandchildren), output to ``log_path`` or discarded; ``kill_all`` stops it."""
    out = open(log_path, "wb") if log_path is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if log_path is not None:
            out.close()  # type: ignore[union-attr]
    _children.append(proc)
    return proc


def kill(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> int | None:
    """SIGTERM, then SIGKILL the child's process group; returns the exit code."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(grace_s)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers in the child's own group
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        pass
    if proc in _children:
        _children.remove(proc)
    return proc.returncode


def kill_all(grace_s: float = 2.0) -> None:
    """Stop every child ``spawn`` started that is still tracked."""
    for proc in list(_children):
        kill(proc, grace_s=grace_s)


def log_tail(log_path: Path, max_chars: int = 2000) -> str:
    """The end of a child's log, for error messages."""
    try:
        return log_path.read_text(errors="replace")[-max_chars:]
    except OSError as exc:
        return f"(no log: {exc})"


def run_main(main: Callable[[], int], name: str, *, sigterm_as_interrupt: bool = False) -> None:
    """Exit with ``main()``'s code, 130 on Ctrl-C, 1 (with traceback) if it raises;
    children are stopped on every path. ``sigterm_as_interrupt``: SIGTERM acts as Ctrl-C."""
    if sigterm_as_interrupt:
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        kill_all()
        sys.exit(130)
    except Exception as exc:  # the benchmark itself failed
        kill_all()
        traceback.print_exc()
        print(f"{name}: failed: {exc}", file=sys.stderr)
        sys.exit(1)


# --------------------------------------------------------------------------- sim charger

_SIM_CONNECTOR_TOML = """\
[[connectors]]
max_current_a = 16
contactor = { driver = "sim" }
meter = { driver = "sim", initial_energy_wh = 1000 }
vehicle = { driver = "sim", power_w = 11000 }
lock = { driver = "sim" }
indicator = { driver = "sim" }
fault = { driver = "sim" }
"""


def write_sim_charger_toml(
    path: Path,
    *,
    station_id: str,
    csms_url: str,
    storage: Path,
    reconnect_s: tuple[float, float] | None = None,
    ocpp_version: str = "1.6",
) -> None:
    """An ``evsed run`` config: one simulated connector, 1 s tick, API on a free 127.0.0.1
    port; ``reconnect_s`` = (reconnect_min_s, reconnect_max_s) if not the defaults;
    ``ocpp_version`` the version the charger speaks ("1.6" or "2.0.1")."""
    reconnect = (
        f"reconnect_min_s = {reconnect_s[0]}\nreconnect_max_s = {reconnect_s[1]}\n"
        if reconnect_s is not None
        else ""
    )
    reconnect += f'ocpp_version = "{ocpp_version}"\n'
    path.write_text(
        f'[station]\nid = "{station_id}"\nstorage = "{storage}"\ntick_interval_s = 1.0\n\n'
        f'[csms]\nurl = "{csms_url}"\n{reconnect}\n'
        '[api]\nhost = "127.0.0.1"\nport = 0\n\n'
        '[reader]\ndriver = "sim"\n\n'
        f"{_SIM_CONNECTOR_TOML}\n"
        '[logging]\nlevel = "INFO"\n',
        encoding="utf-8",
    )


def sim_charger_config(
    station_id: str, storage: Path, csms_url: str, *, ocpp: dict[str, Any], csms: dict[str, Any]
) -> dict[str, Any]:
    """The same charger as a dict for ``controller.config.parse`` (API port 0, no tick)."""
    return {
        "station": {"id": station_id, "storage": str(storage)},
        "api": {"host": "127.0.0.1", "port": 0},
        "reader": {"driver": "sim"},
        "connectors": tomllib.loads(_SIM_CONNECTOR_TOML)["connectors"],
        "ocpp": ocpp,
        "csms": {"url": csms_url, **csms},
    }
