"""Benchmark (issue 4): bytes written to disk per idle hour and per charging hour.

Starts ``python -m controller.cli run -c <cfg>`` (the ``evsed run`` entry point) as a
child process connected to a ``DevCsms`` in this process on 127.0.0.1, with simulated
hardware (meter without ``state_file``, so only the controller's own writes count), tick
1 s, the default MeterValueSampleInterval (60 s), HeartbeatInterval 300 s (also the
BootNotification interval) and the SQLite store in a temporary directory on the
working-directory disk (bench/ by default; ``--disk-dir``). Logging goes to a file in
the same directory at level WARNING (the default INFO logging to a journal is not the
controller's storage traffic; ``--log-level INFO`` to include it).

Two windows, one after the other:

* idle: connected, nothing plugged in (default 10 minutes);
* charging: the simulated car is plugged in and the card tapped through the simulator
  API (POST /api/sim/plug, /api/sim/card); the window starts once the transaction is
  confirmed and the car draws 11 kW (default 10 minutes).

For each window it reads ``/proc/<pid>/io`` ``write_bytes`` (bytes the process caused to
be sent to the block layer; buffered writes are counted when the page is dirtied),
``wchar`` and ``syscw`` (all write syscalls, sockets included), and the size of
``evsed.db`` + ``evsed.db-wal``, at the start and the end, and extrapolates per hour.
Figures only; exit code 0 unless the benchmark itself fails. Linux only (/proc).

Usage (from the repository root)::

    .venv/bin/python bench/disk_writes.py            # 10 min idle + 10 min charging
    .venv/bin/python bench/disk_writes.py --quick    # 60 s each
    .venv/bin/python bench/disk_writes.py --idle-s 1800 --charging-s 1800
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import (
    add_repo_root_to_sys_path,
    kill,
    log_tail,
    quiet_logging,
    run_main,
    spawn,
)

add_repo_root_to_sys_path()

from controller.dev.devcsms import DevCsms  # noqa: E402
from tests.procs import free_port  # noqa: E402

STATION_ID = "CP-BENCH-DISK"
CARD = "04A1B2C3"
HEARTBEAT_S = 300
BOOT_TIMEOUT_S = 30.0


def write_config(
    path: Path, *, csms_url: str, storage: Path, api_port: int, log_level: str
) -> None:
    path.write_text(
        f'[station]\nid = "{STATION_ID}"\nstorage = "{storage}"\ntick_interval_s = 1.0\n\n'
        f'[csms]\nurl = "{csms_url}"\n\n'
        f'[api]\nhost = "127.0.0.1"\nport = {api_port}\n\n'
        '[reader]\ndriver = "sim"\n\n'
        "[[connectors]]\nmax_current_a = 16\n"
        'contactor = { driver = "sim" }\n'
        'meter = { driver = "sim", initial_energy_wh = 1000 }\n'
        'vehicle = { driver = "sim", power_w = 11000 }\n'
        'lock = { driver = "sim" }\nindicator = { driver = "sim" }\nfault = { driver = "sim" }\n\n'
        f"[ocpp]\nHeartbeatInterval = {HEARTBEAT_S}\n\n"
        f'[logging]\nlevel = "{log_level}"\n',
        encoding="utf-8",
    )


@dataclass(frozen=True)
class IoSample:
    at_s: float
    write_bytes: int
    wchar: int
    syscw: int
    db_bytes: int


def io_sample(pid: int, storage: Path) -> IoSample:
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name.strip()] = int(value)
    size = 0
    for suffix in ("", "-wal"):
        try:
            size += Path(f"{storage}{suffix}").stat().st_size
        except FileNotFoundError:
            pass
    return IoSample(time.monotonic(), fields["write_bytes"], fields["wchar"], fields["syscw"], size)


def api(base: str, path: str, body: dict[str, Any] | None = None) -> Any:
    req = urllib.request.Request(
        base + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


async def wait_status(base: str, predicate: Any, what: str, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            st = await asyncio.to_thread(api, base, "/api/status")
            if predicate(st):
                return st
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached")
        await asyncio.sleep(0.2)


def report(name: str, a: IoSample, b: IoSample, csms_frames: int) -> None:
    hours = (b.at_s - a.at_s) / 3600
    per_h = 1 / hours
    print(f"  [{name}] window {b.at_s - a.at_s:.0f} s, {csms_frames} CALLs from the charger")
    print(
        f"    write_bytes      {b.write_bytes - a.write_bytes:>12,} B  -> "
        f"{(b.write_bytes - a.write_bytes) * per_h / 1024:>10,.1f} KiB/h"
    )
    print(
        f"    db+wal growth    {b.db_bytes - a.db_bytes:>12,} B  -> "
        f"{(b.db_bytes - a.db_bytes) * per_h / 1024:>10,.1f} KiB/h  "
        f"(size now {b.db_bytes:,} B)"
    )
    print(
        f"    wchar / syscw    {b.wchar - a.wchar:>12,} B in {b.syscw - a.syscw:,} write calls "
        f"-> {(b.wchar - a.wchar) * per_h / 1024:,.1f} KiB/h (sockets included)"
    )


async def run(args: argparse.Namespace, idle_s: float, charging_s: float) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="evsed-bench-disk-", dir=args.disk_dir))
    try:
        storage = tmp / "evsed.db"
        async with DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=HEARTBEAT_S) as csms:
            api_port = free_port()
            cfg = tmp / "evsed.toml"
            write_config(
                cfg,
                csms_url=csms.url,
                storage=storage,
                api_port=api_port,
                log_level=args.log_level,
            )
            log = tmp / "evsed.log"
            proc = spawn(
                [sys.executable, "-m", "controller.cli", "run", "-c", str(cfg)], log_path=log
            )
            base = f"http://127.0.0.1:{api_port}"
            try:
                try:
                    await wait_status(
                        base,
                        lambda s: s["csms"]["state"] == "accepted",
                        "BootNotification accepted",
                        BOOT_TIMEOUT_S,
                    )
                except TimeoutError:
                    raise RuntimeError(f"charger did not come up:\n{log_tail(log)}") from None
                await asyncio.sleep(2.0)  # initial StatusNotifications, settle
                print(
                    f"evsed run pid {proc.pid}, store {storage} ({args.disk_dir}), "
                    f"MeterValueSampleInterval 60 s (default), HeartbeatInterval {HEARTBEAT_S} s"
                )
                n0 = len(csms.frames(STATION_ID))
                a = io_sample(proc.pid, storage)
                await asyncio.sleep(idle_s)
                b = io_sample(proc.pid, storage)
                n1 = len(csms.frames(STATION_ID))
                report("idle", a, b, n1 - n0)

                await asyncio.to_thread(api, base, "/api/sim/plug", {"connector": 1})
                await asyncio.to_thread(api, base, "/api/sim/card", {"uid": CARD})
                await wait_status(
                    base,
                    lambda s: (
                        s["connectors"][0]["status"] == "Charging"
                        and s["connectors"][0]["transaction_id"] is not None
                    ),
                    "charging",
                )
                n2 = len(csms.frames(STATION_ID))
                c = io_sample(proc.pid, storage)
                await asyncio.sleep(charging_s)
                d = io_sample(proc.pid, storage)
                n3 = len(csms.frames(STATION_ID))
                report("charging 11 kW", c, d, n3 - n2)
                mvs = len(csms.frames(STATION_ID, "MeterValues"))
                print(f"    (MeterValues received in total: {mvs})")
            finally:
                await asyncio.to_thread(kill, proc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Disk bytes written per idle/charging hour.")
    parser.add_argument("--quick", action="store_true", help="60 s per window")
    parser.add_argument("--idle-s", type=float, default=None, help="idle window (600/60 s)")
    parser.add_argument("--charging-s", type=float, default=None, help="charging window (600/60 s)")
    parser.add_argument("--log-level", default="WARNING", help="evsed log level (to a file)")
    parser.add_argument(
        "--disk-dir",
        default=str(Path(__file__).resolve().parent),
        help="where the store's temporary directory is created (default: bench/)",
    )
    args = parser.parse_args(argv)
    idle_s = args.idle_s if args.idle_s is not None else (60.0 if args.quick else 600.0)
    charging_s = args.charging_s if args.charging_s is not None else (60.0 if args.quick else 600.0)
    quiet_logging()
    print(f"disk writes bench, Python {sys.version.split()[0]}")
    asyncio.run(run(args, idle_s, charging_s))
    print(
        "\nnote: per-hour figures are extrapolated linearly from the windows; with a 60 s "
        "sample interval a short window holds only a few MeterValues commits, so use the "
        "full 10-minute windows (or longer) for figures to quote."
    )
    return 0


if __name__ == "__main__":
    run_main(main, "disk_writes", sigterm_as_interrupt=True)
