"""Benchmark: process start to BootNotification sent (target p99 <= 1.5 s).

Starts ``python -m controller.cli run -c <cfg>`` (the ``evsed run`` entry point, with the
venv's interpreter) as a subprocess N times against a ``DevCsms`` running in this
process on 127.0.0.1 (free port). Each sample is the time from just before
``subprocess.Popen`` to the moment the DevCsms receives the BootNotification CALL
(``on_event`` callback, ``time.perf_counter``). Simulated hardware, API on 127.0.0.1 with
a free port, store in a temporary directory (kept across runs like a service restart;
``--fresh-store`` for a new database each run).

As a floor, the bare interpreter start (``python -c pass``, spawn to exit) and the import
of the modules needed before BootNotification (``python -c "import controller.cli,
controller.app"``, spawn to exit) are measured in the same run; the ratio boot/floor is printed.

Every child runs in its own session/process group and is stopped with SIGTERM, then
SIGKILL for the whole group if it does not exit within 5 s, including on errors and
Ctrl-C. Figures are printed (median, p99, max, ratio p99/target), never asserted; exit
code 0 unless the benchmark itself fails (1).

Usage (from the repository root)::

    .venv/bin/python bench/boot_time.py            # 10 starts (+1 warm-up)
    .venv/bin/python bench/boot_time.py --quick    # 3 starts
    .venv/bin/python bench/boot_time.py -n 30 --fresh-store
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchlib import (
    add_repo_root_to_sys_path,
    format_stats,
    kill,
    kill_all,
    log_tail,
    median,
    percentile,
    quiet_logging,
    run_main,
    spawn,
    write_sim_charger_toml,
)

add_repo_root_to_sys_path()

from controller.dev.devcsms import CsmsEvent, DevCsms, FrameReceived  # noqa: E402

TARGET_S = 1.5
STATION_ID = "CP-BENCH-BOOT"
BOOT_TIMEOUT_S = 30.0
# What `evsed run` imports before it sends BootNotification (the API/aiohttp comes later).
IMPORTS = "import controller.cli, controller.app"


def fmt(values_s: list[float]) -> str:
    return format_stats(values_s, digits=1, width=8, scale=1000.0, unit="ms")


# --------------------------------------------------------------------------- children


def interpreter_start(argv: list[str]) -> float:
    """Spawn to exit of a short-lived interpreter, in seconds."""
    t0 = time.perf_counter()
    proc = spawn(argv)
    try:
        code = proc.wait(30)
    finally:
        kill(proc)
    elapsed = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"{argv} exited with {code}")
    return elapsed


# --------------------------------------------------------------------------- boot runs


def write_config(path: Path, csms_url: str, storage: Path) -> None:
    write_sim_charger_toml(
        path, station_id=STATION_ID, csms_url=csms_url, storage=storage, reconnect_s=(0.05, 0.5)
    )


async def boot_once(csms: DevCsms, boot_seen: dict[str, float], cfg: Path, log: Path) -> float:
    boot_seen.clear()
    argv = [sys.executable, "-m", "controller.cli", "run", "--no-restart", "-c", str(cfg)]
    t0 = time.perf_counter()
    proc = spawn(argv, log)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BOOT_TIMEOUT_S
        while "t" not in boot_seen:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"evsed exited with {proc.returncode} before booting:\n" + log_tail(log)
                )
            if loop.time() > deadline:
                raise RuntimeError(
                    f"no BootNotification within {BOOT_TIMEOUT_S} s:\n" + log_tail(log)
                )
            await asyncio.sleep(0.002)
        return boot_seen["t"] - t0
    finally:
        # Off the event loop: kill() may wait up to 5 s for a clean SIGTERM exit.
        await asyncio.to_thread(kill, proc)
        await csms.wait_disconnected(STATION_ID, timeout_s=10)


async def run(args: argparse.Namespace, runs: int, workdir: Path) -> int:
    boot_seen: dict[str, float] = {}

    def on_event(event: CsmsEvent) -> None:
        if (
            isinstance(event, FrameReceived)
            and event.action == "BootNotification"
            and isinstance(event.message, list)
            and event.message[0] == 2
        ):
            boot_seen.setdefault("t", time.perf_counter())

    boots: list[float] = []
    floors: list[float] = []
    imports: list[float] = []
    async with DevCsms(host="127.0.0.1", port=0, on_event=on_event) as csms:
        cfg = workdir / "evsed.toml"
        log = workdir / "evsed.log"
        for i in range(args.warmup + runs):
            storage_dir = workdir / (f"store-{i}" if args.fresh_store else "store")
            write_config(cfg, csms.url, storage_dir / "evsed.db")
            # Interleave the floors with the boots so both see the same machine load.
            floor = await asyncio.to_thread(interpreter_start, [sys.executable, "-c", "pass"])
            imp = await asyncio.to_thread(interpreter_start, [sys.executable, "-c", IMPORTS])
            boot = await boot_once(csms, boot_seen, cfg, log)
            measured = i >= args.warmup
            if measured:
                boots.append(boot)
                floors.append(floor)
                imports.append(imp)
            print(
                f"  run {i + 1:>3}{'' if measured else ' (warm-up)'}: boot {boot * 1000:7.1f} ms"
                f"   python -c pass {floor * 1000:6.1f} ms   imports {imp * 1000:6.1f} ms",
                flush=True,
            )

    p99 = percentile(sorted(boots), 99)
    print(f"\nprocess start -> BootNotification received by the CSMS (n={len(boots)}):")
    print(
        f"  evsed run          {fmt(boots)}   p99/target = {p99 / TARGET_S:.2f} "
        f"(target p99 <= {TARGET_S:g} s)"
    )
    print(f"  python -c pass     {fmt(floors)}   (floor)")
    print(f"  import controller  {fmt(imports)}   ({IMPORTS.removeprefix('import ')})")
    print(
        f"  ratio boot/floor (medians): {median(boots) / median(floors):.1f}x;  "
        f"boot minus imports (medians): "
        f"{(median(boots) - median(imports)) * 1000:.1f} ms "
        f"(config, store, drivers, WebSocket connect)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Process start to BootNotification (target p99 <= 1.5 s)."
    )
    parser.add_argument(
        "-n", "--runs", type=int, default=None, help="measured starts (default 10, --quick 3)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="unmeasured starts first (page cache, .pyc, first DB creation)",
    )
    parser.add_argument("--quick", action="store_true", help="CI-sized run (3 starts)")
    parser.add_argument(
        "--fresh-store",
        action="store_true",
        help="a new database for every start (first-boot cost)",
    )
    args = parser.parse_args(argv)
    runs = args.runs if args.runs is not None else (3 if args.quick else 10)
    if runs < 1:
        parser.error("--runs must be >= 1")
    quiet_logging()

    print(
        f"evsed boot time: {runs} measured start(s) (+{args.warmup} warm-up), "
        f"{sys.executable}, Python {sys.version.split()[0]}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="evsed-bench-boot-"))
    try:
        return asyncio.run(run(args, runs, workdir))
    finally:
        kill_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    # SIGTERM -> KeyboardInterrupt path so the finally blocks kill the children.
    run_main(main, "boot_time", sigterm_as_interrupt=True)
