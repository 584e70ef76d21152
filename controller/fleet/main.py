"""`evsed fleet`: options to a FleetConfig, one process or W worker processes, the report."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from controller.fleet.config import FleetConfig, FleetConfigError, load, with_overrides
from controller.fleet.fleet import Fleet, work_dir_for
from controller.fleet.report import merge_reports, text_report
from controller.fleet.station import StationLogFilter

LOG = logging.getLogger(__name__)
EXIT_CONFIG = 2


def build_config(args: argparse.Namespace) -> FleetConfig:
    """The TOML (if any) with the given options over it; raises FleetConfigError."""
    config = load(args.config) if args.config else FleetConfig()
    log_level = args.log_level.upper() if args.log_level else None
    return with_overrides(
        config,
        stations=args.stations,
        csms_url=args.csms,
        seed=args.seed,
        duration_s=args.duration,
        workers=args.workers,
        speed=args.speed,
        prefix=args.prefix,
        protocol=args.protocol,
        work_dir=args.work_dir,
        summary_interval_s=args.summary_interval,
        log_level=log_level,
        compression=args.compression,
    )


def cmd_fleet(args: argparse.Namespace) -> int:
    if args.locustfile:
        print(Path(__file__).with_name("locustfile.py"))
        return 0
    try:
        config = build_config(args)
    except FleetConfigError as exc:
        print(f"evsed fleet: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(StationLogFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(station)s %(name)s: %(message)s"))
    logging.basicConfig(level=config.log_level, handlers=[handler])
    if args.serve:
        from controller.fleet.serve import serve  # only this mode needs it

        return asyncio.run(serve(replace(config, duration_s=None)))
    if args.worker_slice:
        index, workers = (int(part) for part in args.worker_slice.split("/"))
        return _run_worker(config, index, workers, args.report)
    if config.workers > 1:
        report = _run_workers(config, _passed_options(args))
    else:
        report = _run_process(config, 0, config.stations, "")
    if report is None:
        return 1
    print(text_report(report), flush=True)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["booted"] == report["stations"] else 1


def _run_process(config: FleetConfig, first: int, count: int, label: str) -> dict[str, Any]:
    work_dir, cleanup = work_dir_for(config)
    try:
        return asyncio.run(_run(config, work_dir, first, count, label))
    finally:
        cleanup()


async def _run(
    config: FleetConfig, work_dir: Path, first: int, count: int, label: str
) -> dict[str, Any]:
    fleet = Fleet(config, work_dir=work_dir, first_index=first, count=count, label=label)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, fleet.request_stop)
    return await fleet.run()


def worker_range(stations: int, index: int, workers: int) -> tuple[int, int]:
    """Worker ``index``'s stations: first index and count (contiguous, sizes differ by <= 1)."""
    first = stations * index // workers
    return first, stations * (index + 1) // workers - first


def _run_worker(config: FleetConfig, index: int, workers: int, report_path: str | None) -> int:
    first, count = worker_range(config.stations, index, workers)
    report = _run_process(config, first, count, f"w{index + 1} ")
    if report_path:
        Path(report_path).write_text(json.dumps(report))
    return 0


def _passed_options(args: argparse.Namespace) -> list[str]:
    """The options given to this command, for its workers (not --report/--workers/...)."""
    argv = []
    for dest, option in (
        ("stations", "--stations"),
        ("csms", "--csms"),
        ("config", "--config"),
        ("seed", "--seed"),
        ("duration", "--duration"),
        ("speed", "--speed"),
        ("prefix", "--prefix"),
        ("protocol", "--ocpp"),
        ("summary_interval", "--summary-interval"),
        ("log_level", "--log-level"),
        ("compression", "--compression"),
    ):
        value = getattr(args, dest, None)
        if value is not None:
            argv += [option, str(value)]
    return argv


def _run_workers(config: FleetConfig, options: list[str]) -> dict[str, Any] | None:
    """W copies of this command, each with its slice; their reports merged."""
    workers = config.workers
    with tempfile.TemporaryDirectory(prefix="evsed-fleet-reports-") as tmp:
        procs = []
        paths = []
        for index in range(workers):
            path = Path(tmp) / f"w{index}.json"
            paths.append(path)
            cmd = [sys.executable, "-m", "controller.cli", "fleet", *options]
            cmd += ["--workers", "1", "--worker-slice", f"{index}/{workers}", "--report", str(path)]
            if config.work_dir:
                cmd += ["--work-dir", str(Path(config.work_dir) / f"w{index}")]
            procs.append(subprocess.Popen(cmd, start_new_session=True))

        def forward(signum: int, frame: Any) -> None:
            for proc in procs:
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGTERM)

        old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            codes = [proc.wait() for proc in procs]
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
        reports = []
        for index, (path, code) in enumerate(zip(paths, codes, strict=True)):
            if not path.exists():
                print(f"evsed fleet: worker {index + 1} failed (exit {code})", file=sys.stderr)
                return None
            reports.append(json.loads(path.read_text()))
    merged = merge_reports(reports)
    merged["workers"] = workers
    return merged
