"""Benchmark: `evsed fleet` with 1,000 simulated chargers against `evsed dev-csms`.

Targets (issue 16): >= 1,000 stations on this 2-core machine, <= 2 MiB RSS per station
(>= 5x denser than the simulator's 9.8 MiB), CPU per OCPP message <= the simulator's 7.9 ms;
one process per core with --workers.

Starts ``evsed dev-csms`` (``python -m controller.cli dev-csms``, a separate process on a
free 127.0.0.1 port, its per-frame output discarded), raises the open-files soft limit to
the hard limit (each station holds a socket and three SQLite files; the CSMS a socket per
station), then runs ``evsed fleet`` twice, with ``--workers 1`` and ``--workers 2``: N
stations (1,000; ``--quick``: 200), each idle for 30 s (``--quick``: 15 s) after its boot
(the idle window), then one charging session (plug, tap, charge at 11 kW with a MeterValues
sample every 10 s, tap, unplug), then stopped cleanly. From the fleet's JSON report (its
time series of CPU seconds and frame counts, one sample a second) it prints:

- time from process start until every station's BootNotification was accepted, and the
  fleet's CPU seconds until then (imports included);
- RSS per station: the fleet's total RSS (all workers) with every station up / N, and the
  peak;
- CPU per OCPP message net of idle: (CPU in the intervals with traffic - the idle CPU rate
  x their length) / messages, per frame and per CALL (a CALL and its answer);
- messages per second while busy, CSMS response times per action (median / p99), errors;
- the ratios against the simulator's figures from the issue (9.8 MiB per station, 7.9 ms
  CPU per message, 3.9 s CPU until 50 stations booted, i.e. 78 ms per station).

Nothing is asserted; exit code 0 unless the benchmark itself fails. Linux only (/proc).

Usage (from the repository root)::

    .venv/bin/python bench/fleet.py            # 1,000 stations, about 4 minutes
    .venv/bin/python bench/fleet.py --quick    # 200 stations, about 2 minutes
    .venv/bin/python bench/fleet.py --stations 2000 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import ROOT, kill, run_main, spawn

SIM_MIB_PER_STATION = 9.8
SIM_CPU_MS_PER_MESSAGE = 7.9
SIM_CPU_S_50_BOOTED = 3.9

FLEET_TOML = """\
[fleet]
prefix = "BENCH"
start_rate_per_s = {rate}
summary_interval_s = 10

[station]
ocpp = {{ MeterValueSampleInterval = 10, HeartbeatInterval = 300 }}

[behaviour]
mode = "scripted"

[[behaviour.steps]]
do = "wait"
s = {idle_s}

[[behaviour.steps]]
do = "session"
s = {session_s}
power_w = 11000
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"dev CSMS not listening on {port}")


def cpu_of(pid: int) -> float:
    """utime + stime of a process (its children not included), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_open_files() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        new = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def net_cpu_per_frame(
    samples: list[list[float]], after_s: float, idle_window: tuple[float, float]
) -> tuple[float, float, int, float]:
    """(idle CPU s per s, net CPU s, frames, busy seconds) of one worker's time series.

    Idle: the intervals inside ``idle_window`` (every station booted, none in a session yet;
    a quiet second elsewhere, say between two bursts of a session, is not idle: the
    stations' loops still tick then). Busy: the intervals after ``after_s`` with frames,
    their CPU net of the idle rate."""
    idle_cpu = idle_t = busy_cpu = busy_t = 0.0
    frames = 0
    lo, hi = idle_window
    for (t0, c0, f0), (t1, c1, f1) in zip(samples, samples[1:], strict=False):
        if lo <= t0 and t1 <= hi:
            idle_cpu += c1 - c0
            idle_t += t1 - t0
        if t0 >= after_s and f1 != f0:
            busy_cpu += c1 - c0
            busy_t += t1 - t0
            frames += int(f1 - f0)
    idle_rate = idle_cpu / idle_t if idle_t else 0.0
    return idle_rate, busy_cpu - idle_rate * busy_t, frames, busy_t


def run_fleet(
    url: str, stations: int, workers: int, toml: Path, duration_s: float, tmp: Path
) -> dict[str, Any]:
    report_path = tmp / f"report-w{workers}.json"
    log_path = tmp / f"fleet-w{workers}.log"
    argv = [
        sys.executable,
        "-m",
        "controller.cli",
        "fleet",
        "--stations",
        str(stations),
        "--csms",
        url,
        "--config",
        str(toml),
        "--duration",
        str(duration_s),
        "--workers",
        str(workers),
        "--report",
        str(report_path),
        "--log-level",
        "ERROR",
        "--work-dir",
        str(tmp / f"work-w{workers}"),
    ]
    proc = spawn(argv, log_path)
    try:
        proc.wait(duration_s + 300)
    except subprocess.TimeoutExpired:
        kill(proc)
        raise RuntimeError(f"fleet did not finish; see {log_path}") from None
    if not report_path.exists():
        raise RuntimeError(f"fleet failed (exit {proc.returncode}): {log_path.read_text()[-2000:]}")
    return dict(json.loads(report_path.read_text()))


def print_run(
    report: dict[str, Any], stations: int, workers: int, csms_cpu_s: float, idle_s: float
) -> None:
    mib = 2**20
    print(f"\n== {stations} stations, --workers {workers} ==")
    booted = report["booted"]
    t_boot = report.get("process_start_to_all_booted_s")
    cpu_boot = report.get("cpu_until_all_booted_s")
    print(f"booted {booted}/{stations}", end="")
    if t_boot is not None and cpu_boot is not None:
        per_station_ms = cpu_boot / stations * 1000
        sim_per_station_ms = SIM_CPU_S_50_BOOTED / 50 * 1000
        print(
            f"; process start -> all booted {t_boot:.1f} s, CPU {cpu_boot:.2f} s "
            f"({per_station_ms:.1f} ms per station; simulator {SIM_CPU_S_50_BOOTED} s for 50 = "
            f"{sim_per_station_ms:.0f} ms per station: {sim_per_station_ms / per_station_ms:.1f}x "
            f"less CPU per booted station)"
        )
    else:
        print("; not every station booted")
    rss_station = report["rss_bytes"] / stations / mib
    print(
        f"RSS with every station up {report['rss_bytes'] / mib:.0f} MiB = "
        f"{rss_station:.2f} MiB per station (peak {report['rss_peak_bytes'] / mib:.0f} MiB); "
        f"simulator {SIM_MIB_PER_STATION} MiB: {SIM_MIB_PER_STATION / rss_station:.1f}x denser "
        f"(target <= 2 MiB)"
    )
    series = report["samples"] if workers > 1 else [report["samples"]]
    after_s = (report.get("all_booted_s") or 0) + 1.0
    # Every station's script waits idle_s after its own boot before its session: from the
    # last boot (+ its statuses) until idle_s after the start, all of them are idle.
    idle_window = (after_s + 1.0, idle_s - 0.5)
    idle_rate = net_cpu = busy_t = 0.0
    frames = 0
    for samples in series:
        rate, net, n, busy = net_cpu_per_frame(samples, after_s, idle_window)
        idle_rate += rate
        net_cpu += net
        frames += n
        busy_t = max(busy_t, busy)
    if frames:
        per_frame_ms = net_cpu / frames * 1000
        per_call_ms = per_frame_ms * 2
        print(
            f"idle CPU {idle_rate * 100:.2f} % of a core for {stations} connected stations "
            f"(t = {idle_window[0]:.0f}..{idle_window[1]:.0f} s); "
            f"busy: {frames} frames, {frames / max(busy_t, 1e-9):.0f} per s while busy"
        )
        print(
            f"CPU per OCPP message net of idle: {per_frame_ms:.2f} ms per frame, "
            f"{per_call_ms:.2f} ms per CALL with its answer; simulator "
            f"{SIM_CPU_MS_PER_MESSAGE} ms: {SIM_CPU_MS_PER_MESSAGE / per_call_ms:.1f}x less "
            f"(per CALL)"
        )
    print(
        f"total: {report['frames_out'] + report['frames_in']} frames, "
        f"{report['sessions_done']} sessions, {report['energy_wh'] / 1000:.0f} kWh, "
        f"errors {report['errors']['total']}, fleet CPU {report['cpu_s']:.1f} s, "
        f"dev CSMS CPU {csms_cpu_s:.1f} s"
    )
    print(f"  {'action':<28}{'count':>8}{'median ms':>11}{'p99 ms':>10}")
    for name, a in report["actions"].items():
        median = "-" if a["median_ms"] is None else f"{a['median_ms']:.1f}"
        p99 = "-" if a["p99_ms"] is None else f"{a['p99_ms']:.1f}"
        print(f"  {name:<28}{a['count']:>8}{median:>11}{p99:>10}")
    for sample in report["error_samples"][:3]:
        print(f"  error: {sample}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 stations, shorter phases")
    parser.add_argument("--stations", type=int)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--start-rate", type=float, default=500.0, help="connections per s")
    args = parser.parse_args()
    stations = args.stations or (200 if args.quick else 1000)
    idle_s, session_s = (15, 30) if args.quick else (30, 60)
    # Starting (N / rate), booting, the idle window, the session, handling and the drain.
    duration_s = stations / args.start_rate + 10 + idle_s + session_s + 10
    soft, hard = raise_open_files()
    print(
        f"open files limit {soft} (hard {hard}); {stations} stations need about "
        f"{4 * stations} in the fleet and {stations} in the dev CSMS"
    )
    with tempfile.TemporaryDirectory(prefix="evsed-bench-fleet-") as tmp_name:
        tmp = Path(tmp_name)
        toml = tmp / "fleet.toml"
        toml.write_text(FLEET_TOML.format(rate=args.start_rate, idle_s=idle_s, session_s=session_s))
        for workers in args.workers:
            port = free_port()
            csms = spawn(
                [sys.executable, "-m", "controller.cli", "dev-csms", "--port", str(port)],
                None,
            )
            try:
                wait_listening(port)
                report = run_fleet(
                    f"ws://127.0.0.1:{port}/ocpp", stations, workers, toml, duration_s, tmp
                )
                csms_cpu_s = cpu_of(csms.pid)
            finally:
                kill(csms)
            print_run(report, stations, workers, csms_cpu_s, idle_s)
    print(f"\n(run from {ROOT}; figures printed, nothing asserted)")
    return 0


if __name__ == "__main__":
    run_main(main, "bench/fleet.py")
