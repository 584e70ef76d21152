"""The security log: bounded on disk, bursts folded, cleared with an event (whitepaper A04, N01)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controller.core.security import SecurityEvent, SecurityEventKind
from controller.runtime.clock import ManualClock
from controller.security.log import BURST_S, SecurityLog

K = SecurityEventKind


def make(tmp_path: Path, max_bytes: int = 64 * 1024) -> tuple[SecurityLog, ManualClock]:
    clock = ManualClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    return SecurityLog(tmp_path / "sec" / "security.log", clock=clock, max_bytes=max_bytes), clock


def test_every_event_is_logged_and_told_a04_fr_04(tmp_path: Path) -> None:
    log, _ = make(tmp_path)
    seen: list[SecurityEvent] = []
    log.add_listener(seen.append)
    event = log.record(K.STARTUP_OF_THE_DEVICE)
    assert event is not None and event.critical and seen == [event]
    log.record(K.INVALID_MESSAGES, "frame is not valid JSON")  # non-critical: logged too
    entries = list(log.entries())
    assert [e["kind"] for e in entries] == ["StartupOfTheDevice", "InvalidMessages"]
    assert entries[0]["at"] == "2026-03-01T12:00:00.000+00:00"
    assert entries[1]["critical"] is False and entries[1]["tech_info"] == "frame is not valid JSON"


async def test_a_burst_of_non_critical_events_is_one_record(tmp_path: Path) -> None:
    """A CSMS flooding invalid frames: one record (and one notification) per burst window,
    the folded count carried by the next record; critical events are never folded."""
    log, clock = make(tmp_path)
    seen: list[SecurityEvent] = []
    log.add_listener(seen.append)
    assert log.record(K.INVALID_MESSAGES, "a") is not None
    for _ in range(50):
        assert log.record(K.INVALID_MESSAGES, "b") is None
    assert log.record(K.ATTEMPTED_REPLAY_ATTACKS) is not None  # another kind: its own burst
    assert log.record(K.RESET_OR_REBOOT) is not None
    assert log.record(K.RESET_OR_REBOOT) is not None  # critical: every one
    await clock.advance(BURST_S + 1, step_s=BURST_S + 1)
    later = log.record(K.INVALID_MESSAGES, "c")
    assert later is not None and later.repeated == 50
    assert [e.kind for e in seen].count(K.INVALID_MESSAGES) == 2
    assert len(list(log.entries())) == 5


def test_log_is_bounded_and_keeps_the_newest(tmp_path: Path) -> None:
    """Rolling format (A04.FR.04 note): never more than max_bytes on disk."""
    log, _ = make(tmp_path, max_bytes=8192)
    for i in range(500):
        log.record(K.RESET_OR_REBOOT, f"reset number {i:04d}")
    assert log.path is not None
    files = [log.path, log.path.with_name("security.log.1")]
    assert sum(f.stat().st_size for f in files if f.exists()) <= 8192
    infos = [e["tech_info"] for e in log.entries()]
    assert infos[-1] == "reset number 0499"
    line_bytes = len(log.path.read_text().splitlines()[-1]) + 1
    assert len(infos) >= 4096 // line_bytes  # at least the newest half of the bound stays
    assert infos == sorted(infos)  # oldest first across both files


def test_entries_window_and_torn_lines(tmp_path: Path) -> None:
    log, clock = make(tmp_path)
    log.record(K.RESET_OR_REBOOT, "first")
    clock.step_wall(clock.utc_now() + timedelta(hours=2))
    log.record(K.RESET_OR_REBOOT, "second")
    assert log.path is not None
    with open(log.path, "a", encoding="utf-8") as f:
        f.write('{"at": "2026-03-01T1')  # a line cut by a power loss
    since = datetime(2026, 3, 1, 13, 0, tzinfo=UTC)
    assert [e["tech_info"] for e in log.entries(since=since)] == ["second"]
    until = datetime(2026, 3, 1, 13, 0, tzinfo=UTC)
    assert [e["tech_info"] for e in log.entries(until=until)] == ["first"]


def test_clear_leaves_only_the_cleared_event(tmp_path: Path) -> None:
    log, _ = make(tmp_path)
    seen: list[SecurityEvent] = []
    log.add_listener(seen.append)
    log.record(K.RESET_OR_REBOOT)
    log.clear()
    assert [e["kind"] for e in log.entries()] == ["SecurityLogWasCleared"]
    assert seen[-1].kind is K.SECURITY_LOG_WAS_CLEARED and seen[-1].critical


def test_a_write_error_never_raises_and_listeners_still_hear(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    clock = ManualClock()
    log = SecurityLog(blocker / "security.log", clock=clock)
    seen: list[SecurityEvent] = []
    log.add_listener(seen.append)
    assert log.record(K.MEMORY_EXHAUSTION) is not None
    assert len(seen) == 1 and list(log.entries()) == []


def test_tech_info_is_cut_to_the_message_limit(tmp_path: Path) -> None:
    log, _ = make(tmp_path)
    event = log.record(K.INVALID_MESSAGES, "x" * 1000)
    assert event is not None and event.tech_info == "x" * 255
    assert log.path is not None
    assert json.loads(log.path.read_text().splitlines()[0])["tech_info"] == "x" * 255


def test_no_file_when_no_path(tmp_path: Path) -> None:
    log = SecurityLog(None, clock=ManualClock())
    assert log.record(K.RESET_OR_REBOOT) is not None
    assert list(log.entries()) == []
