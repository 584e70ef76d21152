"""Benchmark: process start to "every contactor verified open" and to READY=1 (sd_notify).

Starts ``python -m controller.cli run -c <cfg>`` (the ``evsed run`` entry point, with the
venv's interpreter) N times with ``NOTIFY_SOCKET`` set to a real AF_UNIX datagram socket of
this process, as systemd does for ``Type=notify``. Each sample is the time from just before
``subprocess.Popen`` to the arrival of

* ``STATUS=starting: every contactor verified open`` (``controller.app.CONTACTORS_OPEN_STATUS``:
  drivers built, every contactor commanded open and read back open), and
* ``READY=1`` (station started, vehicle interfaces ready, local API up): what systemd
  waits for before it starts units ordered after evsed.service.

Simulated hardware, standalone (no CSMS: READY=1 does not wait for one), API on a free
127.0.0.1 port, store in a temporary directory kept across runs like a service restart.
Every child runs in its own session and is stopped with SIGTERM (then SIGKILL for the group)
after READY=1, also on errors and Ctrl-C. Figures are printed (median, p99, max), never
asserted; exit code 0 unless the benchmark itself fails (1).

Usage (from the repository root)::

    .venv/bin/python bench/ready_time.py            # 10 starts (+1 warm-up)
    .venv/bin/python bench/ready_time.py --quick    # 3 starts
    .venv/bin/python bench/ready_time.py -n 30
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchlib import (
    add_repo_root_to_sys_path,
    format_stats,
    kill,
    kill_all,
    log_tail,
    median,
    quiet_logging,
    run_main,
    spawn,
)

add_repo_root_to_sys_path()

from controller.app import CONTACTORS_OPEN_STATUS  # noqa: E402

READY_TIMEOUT_S = 30.0


def fmt(values_s: list[float]) -> str:
    return format_stats(values_s, digits=1, width=8, scale=1000.0, unit="ms")


def write_config(path: Path, storage: Path) -> None:
    path.write_text(
        f'[station]\nid = "CP-BENCH-READY"\nstorage = "{storage}"\n\n'
        '[api]\nhost = "127.0.0.1"\nport = 0\n\n'
        "[standalone]\nfree_vend = true\n\n"
        '[reader]\ndriver = "sim"\n\n'
        "[[connectors]]\nmax_current_a = 16\n"
        'contactor = { driver = "sim" }\n'
        'meter = { driver = "sim", initial_energy_wh = 1000 }\n'
        'vehicle = { driver = "sim" }\n'
        'lock = { driver = "sim" }\n'
        'indicator = { driver = "sim" }\n'
        'fault = { driver = "sim" }\n\n'
        '[logging]\nlevel = "WARNING"\n',
        encoding="utf-8",
    )


def start_once(cfg: Path, log: Path) -> tuple[float, float]:
    """(seconds to the contactors-open status, seconds to READY=1) for one start."""
    name = f"evsed-bench-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        argv = [sys.executable, "-m", "controller.cli", "run", "--no-restart", "-c", str(cfg)]
        os.environ["NOTIFY_SOCKET"] = f"@{name}"  # inherited by the child, as from systemd
        try:
            t0 = time.perf_counter()
            proc = spawn(argv, log)
        finally:
            del os.environ["NOTIFY_SOCKET"]
        try:
            contactors_s: float | None = None
            deadline = time.monotonic() + READY_TIMEOUT_S
            while True:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    data = sock.recv(4096)
                except TimeoutError:
                    raise RuntimeError(
                        f"no READY=1 within {READY_TIMEOUT_S} s (exit code "
                        f"{proc.poll()}):\n" + log_tail(log)
                    ) from None
                now = time.perf_counter() - t0
                lines = data.decode(errors="replace").split("\n")
                if f"STATUS={CONTACTORS_OPEN_STATUS}" in lines:
                    contactors_s = now
                if "READY=1" in lines:
                    if contactors_s is None:
                        raise RuntimeError("READY=1 came before the contactors were verified")
                    return contactors_s, now
        finally:
            kill(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Process start to READY=1 (sd_notify).")
    parser.add_argument(
        "-n", "--runs", type=int, default=None, help="measured starts (default 10, --quick 3)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured starts first")
    parser.add_argument("--quick", action="store_true", help="CI-sized run (3 starts)")
    args = parser.parse_args(argv)
    runs = args.runs if args.runs is not None else (3 if args.quick else 10)
    if runs < 1:
        parser.error("--runs must be >= 1")
    quiet_logging()
    print(
        f"evsed ready time: {runs} measured start(s) (+{args.warmup} warm-up), "
        f"{sys.executable}, Python {sys.version.split()[0]}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="evsed-bench-ready-"))
    contactors: list[float] = []
    ready: list[float] = []
    try:
        cfg = workdir / "evsed.toml"
        write_config(cfg, workdir / "store" / "evsed.db")
        log = workdir / "evsed.log"
        for i in range(args.warmup + runs):
            c_s, r_s = start_once(cfg, log)
            measured = i >= args.warmup
            if measured:
                contactors.append(c_s)
                ready.append(r_s)
            print(
                f"  run {i + 1:>3}{'' if measured else ' (warm-up)'}: contactors open "
                f"{c_s * 1000:7.1f} ms   READY=1 {r_s * 1000:7.1f} ms",
                flush=True,
            )
    finally:
        kill_all()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nprocess start -> sd_notify datagram received (n={len(ready)}):")
    print(f"  every contactor verified open  {fmt(contactors)}")
    print(f"  READY=1                        {fmt(ready)}")
    print(
        "  contactors open -> READY=1 (medians): "
        f"{(median(ready) - median(contactors)) * 1000:.1f} ms "
        "(station start, vehicle interfaces, local API)"
    )
    return 0


if __name__ == "__main__":
    run_main(main, "ready_time", sigterm_as_interrupt=True)
