"""Fleet figures: per-action counts and CSMS response times, the live line, the final report."""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Response times go into logarithmic buckets 4 % wide (median and p99 within 2 %): constant
# memory however long the run, and reports of several workers merge by adding counts.
_BUCKET_BASE_MS = 0.01
_BUCKET_GROWTH = 1.04
_LOG_GROWTH = math.log(_BUCKET_GROWTH)

# The start of an OCPP-J frame (OCPP-J 4.1): type, message id, and a CALL's action. Parsed
# with a regex, not json.loads: the fleet sees every frame of every station.
_CALL = re.compile(r'\[\s*2\s*,\s*"((?:[^"\\]|\\.)*)"\s*,\s*"([A-Za-z0-9]+)"')
_RESULT = re.compile(r'\[\s*([34])\s*,\s*"((?:[^"\\]|\\.)*)"(?:\s*,\s*"([A-Za-z0-9]*)")?')


def _bucket(value_ms: float) -> int:
    return max(0, int(math.log(max(value_ms, _BUCKET_BASE_MS) / _BUCKET_BASE_MS) / _LOG_GROWTH))


def _bucket_ms(index: int) -> float:
    return _BUCKET_BASE_MS * _BUCKET_GROWTH ** (index + 0.5)


@dataclass
class ActionStats:
    """The CALLs of one action a station sent: how many, how many failed, how fast."""

    count: int = 0
    errors: int = 0
    histogram: dict[int, int] = field(default_factory=dict)

    def add(self, response_ms: float | None, error: bool) -> None:
        self.count += 1
        if error:
            self.errors += 1
        if response_ms is not None:
            b = _bucket(response_ms)
            self.histogram[b] = self.histogram.get(b, 0) + 1

    def quantile_ms(self, q: float) -> float | None:
        total = sum(self.histogram.values())
        if total == 0:
            return None
        rank = q * (total - 1)
        seen = 0
        for index in sorted(self.histogram):
            seen += self.histogram[index]
            if seen > rank:
                return _bucket_ms(index)
        return _bucket_ms(max(self.histogram))

    def merge(self, other: dict[str, Any]) -> None:
        self.count += int(other["count"])
        self.errors += int(other["errors"])
        for key, n in other["histogram"].items():
            self.histogram[int(key)] = self.histogram.get(int(key), 0) + int(n)

    def as_dict(self) -> dict[str, Any]:
        median, p99 = self.quantile_ms(0.5), self.quantile_ms(0.99)
        return {
            "count": self.count,
            "errors": self.errors,
            "median_ms": None if median is None else round(median, 2),
            "p99_ms": None if p99 is None else round(p99, 2),
            "histogram": {str(k): v for k, v in sorted(self.histogram.items())},
        }


@dataclass(frozen=True)
class CallEvent:
    """One CALL a station sent, once answered (or lost): what a load-testing tool records.
    ``error``: the CALLERROR code, "ConnectionLost", or None; ``response_s`` None when
    no answer came."""

    station_id: str
    action: str
    response_s: float | None
    error: str | None


CallListener = Callable[[CallEvent], None]


class FleetStats:
    """Counters of one process's stations, fed by each station's frame observer."""

    def __init__(self, monotonic_s: Callable[[], float] = time.monotonic) -> None:
        self.monotonic_s = monotonic_s
        self.actions: dict[str, ActionStats] = {}
        self.csms_calls: dict[str, int] = {}  # CALLs the CSMS sent, by action
        self.frames_out = 0
        self.frames_in = 0
        self.sessions_done = 0
        self.step_failures = 0
        self.station_failures = 0
        self.error_samples: list[str] = []  # the first few, for the report
        self.listeners: list[CallListener] = []
        self.booted = 0  # stations whose BootNotification was accepted
        self.boot_listeners: list[Callable[[str], None]] = []

    def error(self, text: str) -> None:
        if len(self.error_samples) < 20:
            self.error_samples.append(text)

    @property
    def call_errors(self) -> int:
        return sum(a.errors for a in self.actions.values())

    @property
    def errors(self) -> int:
        return self.call_errors + self.step_failures + self.station_failures

    def _finish(
        self, station_id: str, action: str, started_s: float | None, error: str | None
    ) -> None:
        stats = self.actions.get(action)
        if stats is None:
            stats = self.actions[action] = ActionStats()
        response_s = None if started_s is None else self.monotonic_s() - started_s
        stats.add(None if response_s is None else response_s * 1000, error is not None)
        if error is not None:
            self.error(f"{station_id}: {action} answered {error}")
        if self.listeners:
            event = CallEvent(station_id, action, response_s, error)
            for listener in list(self.listeners):
                listener(event)

    def _booted(self, station_id: str) -> None:
        self.booted += 1
        for listener in list(self.boot_listeners):
            listener(station_id)

    def observer(self, station_id: str) -> FrameObserver:
        return FrameObserver(self, station_id)


class FrameObserver:
    """Matches one station's CALLs with their answers (``App(on_frame=...)``)."""

    __slots__ = ("_stats", "_station_id", "_pending", "booted", "statuses_sent")

    def __init__(self, stats: FleetStats, station_id: str) -> None:
        self._stats = stats
        self._station_id = station_id
        self._pending: dict[str, tuple[str, float]] = {}  # message id -> (action, sent at)
        self.booted = False
        self.statuses_sent = 0  # StatusNotification CALLs sent

    def __call__(self, direction: str, text: str) -> None:
        stats = self._stats
        if direction == "out":
            stats.frames_out += 1
            m = _CALL.match(text)
            if m is not None:
                self._pending[m.group(1)] = (m.group(2), stats.monotonic_s())
                if m.group(2) == "StatusNotification":
                    self.statuses_sent += 1
            return
        stats.frames_in += 1
        m = _RESULT.match(text)
        if m is not None:
            pending = self._pending.pop(m.group(2), None)
            if pending is not None:
                error = (m.group(3) or "CallError") if m.group(1) == "4" else None
                stats._finish(self._station_id, pending[0], pending[1], error)
                if (
                    pending[0] == "BootNotification"
                    and not self.booted
                    and error is None
                    and '"Accepted"' in text
                ):
                    self.booted = True
                    stats._booted(self._station_id)
            return
        m = _CALL.match(text)
        if m is not None:
            stats.csms_calls[m.group(2)] = stats.csms_calls.get(m.group(2), 0) + 1

    def expire(self, older_than_s: float) -> None:
        """CALLs unanswered for longer than ``older_than_s``: lost with their connection or
        never answered (the outbox sends transaction messages again; those count anew)."""
        if not self._pending:
            return
        limit_s = self._stats.monotonic_s() - older_than_s
        for message_id, (action, sent_s) in list(self._pending.items()):
            if sent_s < limit_s:
                del self._pending[message_id]
                self._stats._finish(self._station_id, action, None, "NoResponse")


# --------------------------------------------------------------------------- process figures


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size from /proc (0 where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rss_peak_bytes() -> int:
    """Peak resident set size (VmHWM) of this process (0 where there is no /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def process_age_s() -> float | None:
    """Seconds since this process started (from /proc; None elsewhere)."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime_s = float(f.read().split()[0])
        return uptime_s - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def cpu_s() -> float:
    """CPU seconds (user + system) of this process."""
    return time.process_time()


# --------------------------------------------------------------------------- reports


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from the workers' reports: counts and histograms added, RSS and CPU summed,
    times the slowest worker's."""
    if len(reports) == 1:
        return reports[0]
    merged: dict[str, Any] = {
        "workers": len(reports),
        "protocol": reports[0].get("protocol", "1.6"),
        "stations": sum(r["stations"] for r in reports),
        "booted": sum(r["booted"] for r in reports),
        "duration_s": max(r["duration_s"] for r in reports),
        "all_booted_s": None
        if any(r["all_booted_s"] is None for r in reports)
        else max(r["all_booted_s"] for r in reports),
        "cpu_until_all_booted_s": None
        if any(r["cpu_until_all_booted_s"] is None for r in reports)
        else sum(r["cpu_until_all_booted_s"] for r in reports),
        "sessions_done": sum(r["sessions_done"] for r in reports),
        "sessions_running": sum(r["sessions_running"] for r in reports),
        "energy_wh": round(sum(r["energy_wh"] for r in reports), 1),
        "frames_out": sum(r["frames_out"] for r in reports),
        "frames_in": sum(r["frames_in"] for r in reports),
        "queued": sum(r["queued"] for r in reports),
        "errors": {
            key: sum(r["errors"][key] for r in reports)
            for key in ("calls", "steps", "stations", "total")
        },
        "error_samples": [s for r in reports for s in r["error_samples"]][:20],
        "rss_bytes": sum(r["rss_bytes"] for r in reports),
        "rss_peak_bytes": sum(r["rss_peak_bytes"] for r in reports),
        "process_start_to_all_booted_s": None
        if any(r["process_start_to_all_booted_s"] is None for r in reports)
        else max(r["process_start_to_all_booted_s"] for r in reports),
        "samples": [r["samples"] for r in reports],
        "cpu_s": round(sum(r["cpu_s"] for r in reports), 3),
        "csms_calls": {},
        "actions": {},
    }
    actions: dict[str, ActionStats] = {}
    for r in reports:
        for name, data in r["actions"].items():
            actions.setdefault(name, ActionStats()).merge(data)
        for name, n in r["csms_calls"].items():
            merged["csms_calls"][name] = merged["csms_calls"].get(name, 0) + n
    merged["actions"] = {name: a.as_dict() for name, a in sorted(actions.items())}
    merged["rss_per_station_bytes"] = merged["rss_bytes"] // max(1, merged["stations"])
    messages = merged["frames_out"] + merged["frames_in"]
    merged["messages_per_s"] = (
        round(messages / merged["duration_s"], 1) if merged["duration_s"] else 0
    )
    return merged


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def text_report(report: dict[str, Any]) -> str:
    """The final report as a table for the terminal."""
    lines = [
        f"evsed fleet: {report['stations']} OCPP {report.get('protocol', '1.6')} stations "
        f"({report['workers']} worker(s)), {report['duration_s']:.0f} s",
        f"  booted {report['booted']}/{report['stations']}"
        + (
            f", all booted after {report['all_booted_s']:.1f} s "
            f"(CPU {report['cpu_until_all_booted_s']:.2f} s)"
            if report["all_booted_s"] is not None
            else ""
        ),
        f"  sessions done {report['sessions_done']}, running {report['sessions_running']}, "
        f"energy {report['energy_wh'] / 1000:.1f} kWh",
        f"  messages out {report['frames_out']}, in {report['frames_in']} "
        f"({report['messages_per_s']}/s), queued at the end {report['queued']}",
        f"  errors {report['errors']['total']} (CALLERROR/lost {report['errors']['calls']}, "
        f"steps {report['errors']['steps']}, stations {report['errors']['stations']})",
        f"  RSS {_mib(report['rss_bytes'])} ({_mib(report['rss_per_station_bytes'])} per "
        f"station, peak {_mib(report['rss_peak_bytes'])}), CPU {report['cpu_s']:.2f} s",
        "",
        f"  {'action':<28}{'count':>9}{'errors':>8}{'median ms':>11}{'p99 ms':>10}",
    ]
    for name, a in report["actions"].items():
        median = "-" if a["median_ms"] is None else f"{a['median_ms']:.1f}"
        p99 = "-" if a["p99_ms"] is None else f"{a['p99_ms']:.1f}"
        lines.append(f"  {name:<28}{a['count']:>9}{a['errors']:>8}{median:>11}{p99:>10}")
    if report["csms_calls"]:
        calls = ", ".join(f"{k} {v}" for k, v in sorted(report["csms_calls"].items()))
        lines.append(f"  CALLs from the CSMS: {calls}")
    for sample in report["error_samples"][:5]:
        lines.append(f"  error: {sample}")
    return "\n".join(lines)
