"""Benchmark: process start to BootNotification sent: wall time, CPU seconds, and under a quota.

Starts ``python -m controller.cli run -c <cfg>`` (the ``evsed run`` entry point) as a
subprocess N times, by default with the interpreter of a temporary venv where evsed is
``pip install``-ed as on a charger (``--layout installed``; this checkout's editable install
adds a ``.pth`` finder to every interpreter start, ``--layout checkout`` measures that),
against a ``DevCsms`` running in this process on 127.0.0.1 (free port). Each sample is the
time from just before ``subprocess.Popen`` to the moment the DevCsms receives the
BootNotification CALL (``on_event`` callback, ``time.perf_counter``). Simulated hardware,
API on 127.0.0.1 with a free port, store in a temporary directory (kept across runs like a
service restart; ``--fresh-store`` for a new database each run).

As a floor, the bare interpreter start (``python -c pass``, spawn to exit) and the import
of the modules needed before BootNotification (``python -c "import controller.cli,
controller.app"`` with the collector off as in ``evsed run``'s start, ending in ``os._exit``,
spawn to exit) are measured in the same run; the ratio boot/floor is printed.

CPU: the child's utime+stime from ``/proc/<pid>/stat`` read the moment the CSMS receives the
BootNotification (before the child is stopped; clock-tick resolution, 10 ms here), and the
same to the nanosecond from its threads' ``schedstat``, against the 0.12 s target of issue
16; the floors' CPU from ``getrusage(RUSAGE_CHILDREN)``.

Quota (a Raspberry Pi Zero 2 class budget): the child starts through ``sh``, which joins a
cgroup v1 ``cpu`` group (``/sys/fs/cgroup/cpu/evsed-bench-<pid>-<pct>``, ``cpu.cfs_period_us``
100000, ``cpu.cfs_quota_us`` 10000 for 10 %, 25000 for 25 %) and then execs the interpreter,
so no start-up CPU escapes the quota; start -> BootNotification wall time is printed against
the 1.5 s target. Skipped with a printed reason where the group cannot be made (not root, no
cgroup v1 cpu controller); ``--no-quota`` skips it.

Every child runs in its own session/process group and is stopped with SIGTERM, then
SIGKILL for the whole group if it does not exit within 5 s, including on errors and
Ctrl-C. Figures are printed (median, p99, max, ratio p99/target), never asserted; exit
code 0 unless the benchmark itself fails (1).

Usage (from the repository root)::

    .venv/bin/python bench/boot_time.py            # 10 starts (+1 warm-up)
    .venv/bin/python bench/boot_time.py --quick    # 3 starts
    .venv/bin/python bench/boot_time.py -n 30 --fresh-store
    .venv/bin/python bench/boot_time.py --quota-runs 10 --quota 10 --quota 25
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

from benchlib import (
    ROOT,
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
CPU_TARGET_S = 0.12
QUOTA_TARGET_S = 1.5  # start -> BootNotification under a 10 % quota
CFS_PERIOD_US = 100_000
CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
STATION_ID = "CP-BENCH-BOOT"
BOOT_TIMEOUT_S = 30.0
# What `evsed run` imports before it sends BootNotification (the API/aiohttp comes later);
# os._exit: without the interpreter's teardown, which the boot does not include either. The
# collector off, as `evsed run` has it during its start (cli.cmd_run): otherwise the import
# alone costs more than the whole boot and "boot minus imports" comes out negative.
IMPORTS = "import gc; gc.disable(); import controller.cli, controller.app, os; os._exit(0)"
# The libraries a ws:// charger cannot boot without (event loop, WebSocket client, the
# database): what is left when evsed's own start costs nothing. jsonschema is not among them
# since issue 16: a valid BootNotification passes csms/schema.py's quick check.
LIBRARIES = (
    "import asyncio, websockets.asyncio.client, sqlite3, json, logging, tomllib, "
    "argparse, os; os._exit(0)"
)


# The interpreter (and its options) the children run: this one (``--layout checkout``) or
# that of a venv with evsed installed as on a charger (``--layout installed``, the default).
PYTHON = [sys.executable]


def installed_python(workdir: Path) -> str:
    """A venv laid out like a charger's (README "Install as a service"): evsed installed with
    ``pip install`` (a wheel, not this checkout's editable install, whose ``.pth`` finder
    runs at every interpreter start), its dependencies those of this interpreter's venv
    (one ``.pth`` path line, no import). Returns its interpreter."""
    venv = workdir / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    deps = sysconfig.get_paths()["purelib"]
    (Path(purelib) / "evsed-deps.pth").write_text(deps + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", purelib, str(ROOT)],
        check=True,
    )
    return python


def fmt(values_s: list[float]) -> str:
    return format_stats(values_s, digits=1, width=8, scale=1000.0, unit="ms")


def fmt_cpu(values_s: list[float]) -> str:
    return format_stats(values_s, digits=3, width=6, unit="s")


def proc_cpu_s(pid: int) -> float | None:
    """utime+stime of a process (all its threads) from /proc/<pid>/stat, in seconds."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: the fields after it start after ")".
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def proc_cpu_ns_s(pid: int) -> float | None:
    """The same to the nanosecond: the run time of each of its live threads from
    /proc/<pid>/task/*/schedstat (threads that already ended are missing; evsed starts
    none before its boot)."""
    total_ns = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            total_ns += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total_ns / 1e9 if total_ns else None


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- children


def interpreter_start(argv: list[str]) -> tuple[float, float]:
    """Spawn to exit of a short-lived interpreter: (wall seconds, CPU seconds). The CPU is
    the growth of this process's reaped children's rusage: nothing else is reaped meanwhile
    (the boots run one after the other, never beside a floor)."""
    cpu0 = children_cpu_s()
    t0 = time.perf_counter()
    proc = spawn(argv)
    # A blocking wait, the 30 s limit by a timer: Popen.wait(timeout) polls with sleeps of up
    # to 50 ms, which made the floors' wall time longer than the boot they are compared with.
    limit = threading.Timer(30.0, proc.kill)
    limit.start()
    try:
        code = proc.wait()
        elapsed = time.perf_counter() - t0
    finally:
        limit.cancel()
        kill(proc)
    if code != 0:
        raise RuntimeError(f"{argv} exited with {code}")
    return elapsed, children_cpu_s() - cpu0


# --------------------------------------------------------------------------- cgroup quota


class CpuQuota:
    """A cgroup v1 ``cpu`` group limited to ``percent`` of one core; removed on close."""

    def __init__(self, percent: int) -> None:
        self.percent = percent
        self.path = CGROUP_CPU / f"evsed-bench-{os.getpid()}-{percent}"

    def make(self) -> str | None:
        """Create the group; the reason it cannot be made, or None."""
        if not (CGROUP_CPU / "cpu.cfs_quota_us").exists():
            return f"no cgroup v1 cpu controller at {CGROUP_CPU}"
        try:
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(CFS_PERIOD_US * self.percent // 100))
        except OSError as exc:
            self.close()
            return f"cannot make {self.path}: {exc}"
        return None

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` started by a shell that joins the group first, then execs (same pid)."""
        script = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
        return ["/bin/sh", "-c", script, str(self.path), *argv]

    def close(self) -> None:
        try:
            self.path.rmdir()  # only empty groups: every child was stopped before
        except OSError:
            pass


# --------------------------------------------------------------------------- boot runs


def write_config(path: Path, csms_url: str, storage: Path, ocpp_version: str) -> None:
    write_sim_charger_toml(
        path,
        station_id=STATION_ID,
        csms_url=csms_url,
        storage=storage,
        reconnect_s=(0.05, 0.5),
        ocpp_version=ocpp_version,
    )


async def boot_once(
    csms: DevCsms,
    boot_seen: dict[str, float],
    cfg: Path,
    log: Path,
    quota: CpuQuota | None = None,
) -> tuple[float, float, float]:
    """One start: (wall seconds, CPU seconds from /proc stat, CPU seconds from schedstat)
    from spawn to the BootNotification."""
    boot_seen.clear()
    argv = [*PYTHON, "-m", "controller.cli", "run", "--no-restart", "-c", str(cfg)]
    if quota is not None:
        argv = quota.wrap(argv)
    t0 = time.perf_counter()
    proc = spawn(argv, log)
    boot_seen["pid"] = proc.pid
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
        nan = float("nan")
        return boot_seen["t"] - t0, boot_seen.get("cpu_s", nan), boot_seen.get("cpu_ns_s", nan)
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
            and "t" not in boot_seen
        ):
            boot_seen["t"] = time.perf_counter()
            # Read right here, while the child still runs (it is stopped after this).
            pid = int(boot_seen["pid"])
            cpu_s, cpu_ns_s = proc_cpu_s(pid), proc_cpu_ns_s(pid)
            if cpu_s is not None:
                boot_seen["cpu_s"] = cpu_s
            if cpu_ns_s is not None:
                boot_seen["cpu_ns_s"] = cpu_ns_s

    boots: list[float] = []
    boot_cpus: list[float] = []
    boot_cpus_ns: list[float] = []
    floors: list[float] = []
    floor_cpus: list[float] = []
    imports: list[float] = []
    import_cpus: list[float] = []
    library_cpus: list[float] = []
    quota_boots: dict[int, list[float]] = {}
    quota_cpus: dict[int, list[float]] = {}
    quota_skipped: dict[int, str] = {}
    async with DevCsms(host="127.0.0.1", port=0, on_event=on_event) as csms:
        cfg = workdir / "evsed.toml"
        log = workdir / "evsed.log"
        for i in range(args.warmup + runs):
            storage_dir = workdir / (f"store-{i}" if args.fresh_store else "store")
            write_config(cfg, csms.url, storage_dir / "evsed.db", args.ocpp)
            # Interleave the floors with the boots so both see the same machine load.
            floor, floor_cpu = await asyncio.to_thread(interpreter_start, [*PYTHON, "-c", "pass"])
            imp, imp_cpu = await asyncio.to_thread(interpreter_start, [*PYTHON, "-c", IMPORTS])
            _, lib_cpu = await asyncio.to_thread(interpreter_start, [*PYTHON, "-c", LIBRARIES])
            boot, boot_cpu, boot_cpu_ns = await boot_once(csms, boot_seen, cfg, log)
            measured = i >= args.warmup
            if measured:
                boots.append(boot)
                boot_cpus.append(boot_cpu)
                boot_cpus_ns.append(boot_cpu_ns)
                floors.append(floor)
                floor_cpus.append(floor_cpu)
                imports.append(imp)
                import_cpus.append(imp_cpu)
                library_cpus.append(lib_cpu)
            print(
                f"  run {i + 1:>3}{'' if measured else ' (warm-up)'}: boot {boot * 1000:7.1f} ms"
                f" cpu {boot_cpu:.3f} s ({boot_cpu_ns:.4f})   python -c pass {floor * 1000:6.1f} ms"
                f" cpu {floor_cpu:.3f} s   imports {imp * 1000:6.1f} ms cpu {imp_cpu:.3f} s",
                flush=True,
            )
        for percent in args.quota:
            quota = CpuQuota(percent)
            reason = quota.make()
            if reason is not None:
                quota_skipped[percent] = reason
                print(f"  quota {percent} %: skipped: {reason}", flush=True)
                continue
            try:
                for i in range(args.quota_runs):
                    storage_dir = workdir / (
                        f"store-q{percent}-{i}" if args.fresh_store else "store"
                    )
                    write_config(cfg, csms.url, storage_dir / "evsed.db", args.ocpp)
                    boot, boot_cpu, _ = await boot_once(csms, boot_seen, cfg, log, quota)
                    quota_boots.setdefault(percent, []).append(boot)
                    quota_cpus.setdefault(percent, []).append(boot_cpu)
                    print(
                        f"  quota {percent:>3} % run {i + 1:>3}: boot {boot * 1000:7.1f} ms"
                        f" cpu {boot_cpu:.3f} s",
                        flush=True,
                    )
            finally:
                quota.close()

    p99 = percentile(sorted(boots), 99)
    print(f"\nprocess start -> BootNotification received by the CSMS (n={len(boots)}):")
    print(
        f"  evsed run          {fmt(boots)}   p99/target = {p99 / TARGET_S:.2f} "
        f"(target p99 <= {TARGET_S:g} s)"
    )
    print(f"  python -c pass     {fmt(floors)}   (floor)")
    print(
        f"  import controller  {fmt(imports)}   (controller.cli, controller.app; gc off, "
        "no teardown)"
    )
    print(
        f"  ratio boot/floor (medians): {median(boots) / median(floors):.1f}x;  "
        f"boot minus imports (medians): "
        f"{(median(boots) - median(imports)) * 1000:.1f} ms "
        f"(config, store, drivers, WebSocket connect)"
    )
    cpu_p99 = percentile(sorted(boot_cpus), 99)
    tick_ms = 1000 / CLOCK_TICKS_PER_S
    print(f"\nCPU seconds, process start -> BootNotification (n={len(boot_cpus)}):")
    print(
        f"  evsed run          {fmt_cpu(boot_cpus)}   median/target = "
        f"{median(boot_cpus) / CPU_TARGET_S:.2f}, p99/target = {cpu_p99 / CPU_TARGET_S:.2f} "
        f"(target <= {CPU_TARGET_S:g} s; /proc stat, {tick_ms:g} ms ticks)"
    )
    print(
        f"  evsed run          {format_stats(boot_cpus_ns, digits=4, width=6, unit='s')}   "
        f"median/target = {median(boot_cpus_ns) / CPU_TARGET_S:.2f} (schedstat, ns)"
    )
    print(f"  python -c pass     {fmt_cpu(floor_cpus)}   (floor, to exit)")
    print(f"  import controller  {fmt_cpu(import_cpus)}   (no teardown)")
    print(
        f"  libraries          {fmt_cpu(library_cpus)}   (asyncio, websockets, sqlite3, ...: "
        "the floor of a ws:// boot)"
    )
    print(
        f"  ratio cpu boot/floor (medians, schedstat): "
        f"{median(boot_cpus_ns) / median(floor_cpus):.1f}x; "
        f"boot minus floor: {median(boot_cpus_ns) - median(floor_cpus):.3f} s"
    )
    if args.quota:
        print(
            f"\nunder a CPU quota (cgroup v1 cpu, period {CFS_PERIOD_US // 1000} ms), "
            f"start -> BootNotification (target <= {QUOTA_TARGET_S:g} s at 10 %):"
        )
    for percent in args.quota:
        if percent in quota_skipped:
            print(f"  {percent:>3} % of a core: skipped: {quota_skipped[percent]}")
            continue
        walls = quota_boots.get(percent, [])
        print(
            f"  {percent:>3} % of a core  {fmt(walls)}   "
            f"median/target = {median(walls) / QUOTA_TARGET_S:.2f}   "
            f"cpu {fmt_cpu(quota_cpus.get(percent, []))}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Process start to BootNotification: wall, CPU, and under a CPU quota."
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
        "--quota",
        type=int,
        action="append",
        default=None,
        metavar="PERCENT",
        help="a run under this CPU quota, in %% of one core (repeatable; default 10 and 25)",
    )
    parser.add_argument(
        "--ocpp",
        choices=("1.6", "2.0.1"),
        default="1.6",
        help="the version the charger speaks (2.0.1 also loads its adapter before the boot)",
    )
    parser.add_argument(
        "--layout",
        choices=("installed", "checkout"),
        default="installed",
        help="installed: a venv with evsed pip-installed as on a charger (default); "
        "checkout: this venv's editable install",
    )
    parser.add_argument("--no-quota", action="store_true", help="skip the CPU quota runs")
    parser.add_argument(
        "--quota-runs", type=int, default=None, help="starts per quota (default 5, --quick 2)"
    )
    parser.add_argument(
        "--fresh-store",
        action="store_true",
        help="a new database for every start (first-boot cost)",
    )
    args = parser.parse_args(argv)
    runs = args.runs if args.runs is not None else (3 if args.quick else 10)
    if runs < 1:
        parser.error("--runs must be >= 1")
    args.quota = [] if args.no_quota else (args.quota or [10, 25])
    if any(not 1 <= pct <= 100 for pct in args.quota):
        parser.error("--quota must be 1..100")
    if args.quota_runs is None:
        args.quota_runs = 2 if args.quick else 5
    quiet_logging()

    print(
        f"evsed boot time (OCPP {args.ocpp}): {runs} measured start(s) (+{args.warmup} warm-up), "
        f"{sys.executable}, Python {sys.version.split()[0]}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="evsed-bench-boot-"))
    try:
        if args.layout == "installed":
            # -P: the children start in the checkout (spawn's cwd), which must not shadow
            # the installed package.
            PYTHON[:] = [installed_python(workdir), "-P"]
            # A PYTHONPATH naming this checkout (as the tests are run) would load evsed from
            # its sources instead, compiled at every start under PYTHONDONTWRITEBYTECODE.
            os.environ.pop("PYTHONPATH", None)
        print(f"layout {args.layout}: children run {' '.join(PYTHON)}", flush=True)
        return asyncio.run(run(args, runs, workdir))
    finally:
        kill_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    # SIGTERM -> KeyboardInterrupt path so the finally blocks kill the children.
    run_main(main, "boot_time", sigterm_as_interrupt=True)
