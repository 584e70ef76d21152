"""The fleet runner: starts N stations in one event loop, plays their scripts, reports."""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from controller.fleet.config import FleetConfig
from controller.fleet.report import (
    FleetStats,
    cpu_s,
    process_age_s,
    rss_bytes,
    rss_peak_bytes,
)
from controller.fleet.station import CURRENT_STATION, FleetStation
from controller.runtime.clock import Clock
from controller.runtime.tasks import TaskGroup

LOG = logging.getLogger(__name__)

# A CALL unanswered this long counts as lost (the station's response timeout is 30 s).
NO_RESPONSE_S = 60.0
# The report's time series (t, CPU, frames): what a bench needs to tell idle from busy CPU.
SAMPLE_INTERVAL_S = 1.0
# How long the end of the run waits for the stations' queued messages to reach the CSMS.
DRAIN_TIMEOUT_S = 60.0


class Fleet:
    """N stations (indices ``first_index`` ..) of one process.

    Run-time API for tools that drive a fleet (a load-testing framework, a test):
    ``add_station()`` / ``remove_station(station_id)`` change it while it runs;
    ``stats.listeners`` hear every answered or lost CALL (``report.CallEvent``: station,
    action, CSMS response time, error) and ``stats.boot_listeners`` every accepted boot.
    """

    def __init__(
        self,
        config: FleetConfig,
        *,
        work_dir: Path,
        first_index: int = 0,
        count: int | None = None,
        clock: Clock | None = None,
        summary_out: TextIO | None = sys.stderr,
        label: str = "",
    ) -> None:
        self.config = config
        self.work_dir = work_dir
        self.first_index = first_index
        self.count = config.stations if count is None else count
        self.clock = clock or Clock()
        self.stats = FleetStats()
        self.stats.boot_listeners.append(self._on_boot)
        self.summary_out = summary_out
        self.label = label
        self.stations: dict[str, FleetStation] = {}
        self._next_index = first_index
        self._tasks = TaskGroup("fleet")
        self._scripts: dict[str, asyncio.Task[Any]] = {}
        self._stop = asyncio.Event()
        self._started_s = time.monotonic()
        self.all_booted_s: float | None = None
        self.cpu_until_all_booted_s: float | None = None
        self.process_start_to_all_booted_s: float | None = None
        self.samples: list[tuple[float, float, int]] = []  # (t since start, CPU s, frames)
        self._final: dict[str, Any] | None = None  # figures taken before the stations stop
        self._last_frames = 0
        self._last_summary_s = self._started_s

    # --- run-time API

    async def add_station(self, index: int | None = None) -> FleetStation:
        """Start one more station (the next index unless given) and its script."""
        if index is None:
            index = self._next_index
        self._next_index = max(self._next_index, index + 1)
        station = FleetStation(index, self.config, self.work_dir, self.stats, self.clock)
        self.stations[station.station_id] = station
        # The station's tasks (and the script's) copy the context: their log lines name it.
        token = CURRENT_STATION.set(station.station_id)
        try:
            await station.start()
            self._scripts[station.station_id] = self._tasks.spawn(
                self._play(station), name=f"script-{station.station_id}"
            )
        except Exception as exc:
            self.stats.station_failures += 1
            self.stats.error(f"{station.station_id}: start failed: {exc!r}")
            LOG.exception("%s: start failed", station.station_id)
            del self.stations[station.station_id]
            raise
        finally:
            CURRENT_STATION.reset(token)
        return station

    async def remove_station(self, station_id: str) -> None:
        """Stop one station cleanly: its script ends, its sessions stop, its queue drains."""
        station = self.stations.pop(station_id)
        script = self._scripts.pop(station_id, None)
        if script is not None:
            script.cancel()
            await asyncio.gather(script, return_exceptions=True)
        station.end_sessions()
        await self._drain([station], DRAIN_TIMEOUT_S)
        await station.stop()

    def request_stop(self) -> None:
        self._stop.set()

    # --- the run

    async def run(self) -> dict[str, Any]:
        """Start every station, run for ``duration_s`` (or until request_stop), stop them
        all cleanly and return this process's report."""
        self._started_s = time.monotonic()
        self._last_summary_s = self._started_s
        if self.config.summary_interval_s > 0 and self.summary_out is not None:
            self._tasks.spawn(self._summaries(), name="summary")
        self._tasks.spawn(self._expire_loop(), name="expire")
        self._tasks.spawn(self._sample_loop(), name="samples")
        try:
            await self._start_all()
            duration_s = self.config.duration_s
            if duration_s is None:
                await self._stop.wait()
            else:
                remaining_s = duration_s - (time.monotonic() - self._started_s)
                if remaining_s > 0:
                    try:
                        await asyncio.wait_for(self._stop.wait(), remaining_s)
                    except TimeoutError:
                        pass
        finally:
            await self.stop_all()
        report = self.report()
        if self.summary_out is not None and self.config.summary_interval_s > 0:
            self._print_summary()
        return report

    async def _start_all(self) -> None:
        rate = self.config.start_rate_per_s
        gap_s = 1.0 / rate if rate > 0 else 0.0
        t0 = time.monotonic()
        for n in range(self.count):
            if self._stop.is_set():
                return
            try:
                await self.add_station(self.first_index + n)
            except Exception:
                continue  # counted in the report; the others go on
            if gap_s:
                delay_s = t0 + (n + 1) * gap_s - time.monotonic()
                if delay_s > 0:
                    await asyncio.sleep(delay_s)

    async def stop_all(self) -> None:
        """Scripts cancelled, running sessions stopped (1.6 StopTransaction / 2.0.1
        TransactionEvent Ended, reason Local),
        queued messages delivered (bounded by DRAIN_TIMEOUT_S), connections closed."""
        scripts = list(self._scripts.values())
        self._scripts.clear()
        for task in scripts:
            task.cancel()
        await asyncio.gather(*scripts, return_exceptions=True)
        stations = list(self.stations.values())
        for station in stations:
            if station.started:
                station.end_sessions()
        await self._drain([s for s in stations if s.started], DRAIN_TIMEOUT_S)
        self._final = self._figures(stations)
        self._final["rss_bytes"] = rss_bytes()  # with every station still up
        await asyncio.gather(*(s.stop() for s in stations), return_exceptions=True)
        await self._tasks.cancel_all()

    async def _drain(self, stations: list[FleetStation], timeout_s: float) -> None:
        """Until every queue is empty (a station that never connects is not waited for
        longer than ``timeout_s``)."""
        deadline_s = time.monotonic() + timeout_s
        while time.monotonic() < deadline_s:
            if all(s.queued() == 0 for s in stations):
                return
            await asyncio.sleep(0.2)
        LOG.warning("fleet: queued messages left after %.0f s", timeout_s)

    async def _play(self, station: FleetStation) -> None:
        # The script starts once the CSMS accepted the station: what the CSMS sees first is
        # always the boot and the idle statuses, whatever the load (same seed, same sequence).
        await station.wait_ready()
        await station.run()

    def _on_boot(self, station_id: str) -> None:
        if self.stats.booted >= self.count and self.all_booted_s is None:
            self.all_booted_s = time.monotonic() - self._started_s
            self.cpu_until_all_booted_s = cpu_s()
            self.process_start_to_all_booted_s = process_age_s()

    # --- figures

    def _sample(self) -> None:
        self.samples.append(
            (
                round(time.monotonic() - self._started_s, 3),
                round(cpu_s(), 4),
                self.stats.frames_out + self.stats.frames_in,
            )
        )

    async def _sample_loop(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(NO_RESPONSE_S / 4)
            for station in list(self.stations.values()):
                station.observer.expire(NO_RESPONSE_S)

    def _figures(self, stations: list[FleetStation]) -> dict[str, Any]:
        states = [s.connection_state() for s in stations if s.started]
        return {
            "connected": sum(1 for st in states if st not in ("offline", "connecting")),
            "sessions_running": sum(s.sessions_running() for s in stations if s.started),
            "queued": sum(s.queued() for s in stations if s.started),
            "energy_wh": sum(s.energy_wh() for s in stations if s.started),
        }

    def summary_line(self) -> str:
        now_s = time.monotonic()
        stats = self.stats
        frames = stats.frames_out + stats.frames_in
        rate = (frames - self._last_frames) / max(1e-6, now_s - self._last_summary_s)
        self._last_frames, self._last_summary_s = frames, now_s
        f = self._figures(list(self.stations.values()))
        return (
            f"{self.label}[{now_s - self._started_s:6.0f} s] stations {len(self.stations)}"
            f" connected {f['connected']} booted {stats.booted}"
            f" sessions running {f['sessions_running']} done {stats.sessions_done}"
            f" msg/s {rate:.0f} queued {f['queued']} errors {stats.errors}"
        )

    def _print_summary(self) -> None:
        assert self.summary_out is not None
        print(self.summary_line(), file=self.summary_out, flush=True)

    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(self.config.summary_interval_s)
            self._print_summary()

    def report(self) -> dict[str, Any]:
        stats = self.stats
        duration_s = time.monotonic() - self._started_s
        final = self._final or self._figures(list(self.stations.values()))
        messages = stats.frames_out + stats.frames_in
        rss = int(final.get("rss_bytes") or rss_bytes())
        return {
            "workers": 1,
            "protocol": self.config.protocol,
            "stations": self.count,
            "booted": stats.booted,
            "duration_s": round(duration_s, 3),
            "all_booted_s": None if self.all_booted_s is None else round(self.all_booted_s, 3),
            "cpu_until_all_booted_s": None
            if self.cpu_until_all_booted_s is None
            else round(self.cpu_until_all_booted_s, 3),
            "sessions_done": stats.sessions_done,
            "sessions_running": final["sessions_running"],
            "energy_wh": round(final["energy_wh"], 1),
            "frames_out": stats.frames_out,
            "frames_in": stats.frames_in,
            "messages_per_s": round(messages / duration_s, 1) if duration_s > 0 else 0,
            "queued": final["queued"],
            "errors": {
                "calls": stats.call_errors,
                "steps": stats.step_failures,
                "stations": stats.station_failures,
                "total": stats.errors,
            },
            "error_samples": list(stats.error_samples),
            "rss_bytes": rss,
            "rss_per_station_bytes": rss // max(1, self.count),
            "rss_peak_bytes": rss_peak_bytes(),
            "process_start_to_all_booted_s": None
            if self.process_start_to_all_booted_s is None
            else round(self.process_start_to_all_booted_s, 3),
            "samples": self.samples,
            "cpu_s": round(cpu_s(), 3),
            "csms_calls": dict(sorted(stats.csms_calls.items())),
            "actions": {name: a.as_dict() for name, a in sorted(stats.actions.items())},
        }


def work_dir_for(config: FleetConfig) -> tuple[Path, Callable[[], None]]:
    """The directory of the stations' stores, and how to clean it up afterwards."""
    if config.work_dir:
        path = Path(config.work_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path, lambda: None
    tmp = tempfile.TemporaryDirectory(prefix="evsed-fleet-")
    return Path(tmp.name), tmp.cleanup
