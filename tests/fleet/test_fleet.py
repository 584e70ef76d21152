"""`evsed fleet` against the dev CSMS on 127.0.0.1: boots, seeded sessions, a CSMS outage,
the same seed twice, scripted TOML behaviour and configuration errors.

OCPP 1.6 requirements named: 4.2 (BootNotification before anything else), 4.8/6.46
(StartTransaction / StopTransaction, one StopTransaction per transactionId), 4.9
(StatusNotification), OCPP-J 5.x / 1.6 section 3.5 (transaction messages queued while
offline are delivered in order once the connection is back, never lost, never twice).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import sys
import time
import tomllib
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controller.cli import main as cli_main
from controller.dev.devcsms import DevCsms, Frame
from controller.fleet.behaviour import Step, random_steps
from controller.fleet.config import FleetConfig, RandomBehaviour, Range, load, parse
from controller.fleet.fleet import Fleet
from controller.fleet.station import station_id, station_rng

QUIET_OCPP = {"MeterValueSampleInterval": 0, "HeartbeatInterval": 3600}


def fleet_config(url: str, **overrides: Any) -> FleetConfig:
    base: dict[str, Any] = {
        "stations": 200,
        "csms_url": url,
        "prefix": "FT",
        "summary_interval_s": 0,
        "start_rate_per_s": 0,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
        "ocpp": dict(QUIET_OCPP),
        "log_level": "ERROR",
    }
    base.update(overrides)
    return FleetConfig(**base)


async def run_until(fleet: Fleet, done: Callable[[], bool], timeout_s: float = 120) -> None:
    """Run the fleet until ``done()`` holds (checked as frames arrive), then stop it."""

    async def watch() -> None:
        await wait_until(done, timeout_s)
        fleet.request_stop()

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait_for(fleet.run(), timeout_s)
    finally:
        watcher.cancel()


def by_station(frames: list[Frame]) -> dict[str, list[Frame]]:
    out: dict[str, list[Frame]] = defaultdict(list)
    for f in frames:
        out[f.station_id].append(f)
    return out


def check_transactions(csms: DevCsms, stations: int, prefix: str) -> int:
    """Every StartTransaction has exactly one StopTransaction with its transactionId, and no
    transaction message arrived twice; returns how many transactions there were."""
    tx_of_start: dict[tuple[str, int], Frame] = {}
    answers = {r.unique_id: r.payload for r in csms.sent_results}
    for f in csms.frames(action="StartTransaction"):
        tx_id = answers[f.unique_id]["transactionId"]
        key = (f.station_id, tx_id)
        assert key not in tx_of_start, f"StartTransaction delivered twice: {key}"
        tx_of_start[key] = f
    stops = Counter(
        (f.station_id, f.payload["transactionId"]) for f in csms.frames(action="StopTransaction")
    )
    assert set(stops) == set(tx_of_start), "each StartTransaction has its StopTransaction (6.46)"
    assert all(n == 1 for n in stops.values()), f"StopTransaction delivered twice: {stops}"
    started = {sid for sid, _ in tx_of_start}
    assert started == {station_id(prefix, i) for i in range(stations)}
    return len(tx_of_start)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_200_stations_boot_run_a_seeded_session_and_stop_cleanly(tmp_path: Path) -> None:
    """200 stations: each boots (4.2, BootNotification first), plays a seeded random session
    (idle, plug, tap, charge at a drawn power, tap, unplug) and is stopped cleanly."""
    async with DevCsms(heartbeat_interval_s=3600) as csms:
        config = fleet_config(
            csms.url,
            seed=7,
            speed=4.0,
            random=RandomBehaviour(
                idle_s=Range(0, 2),
                session_s=Range(2, 6),
                power_w=Range(3700, 22000),
                fault_probability=0,
                offline_probability=0,
            ),
        )
        fleet = Fleet(config, work_dir=tmp_path, summary_out=None)
        await run_until(
            fleet,
            lambda: (
                all(s.sessions_done >= 1 for s in fleet.stations.values())
                and len(fleet.stations) == 200
            ),
        )
        report = fleet.report()
        # Each station closed its connection at the end.
        await wait_until(lambda: not csms.station_ids, 10)
    assert report["booted"] == 200
    assert report["errors"]["total"] == 0, report["error_samples"]
    assert report["queued"] == 0
    assert report["energy_wh"] > 0
    for sid, frames in by_station(csms.received).items():
        assert frames[0].action == "BootNotification", sid
    check_transactions(csms, 200, "FT")


async def test_fleet_outage_delivers_every_queued_message_exactly_once(tmp_path: Path) -> None:
    """The CSMS stops while every station charges; sessions go on and end offline (local
    stop with the same card); the CSMS comes back on the same port; every queued
    StopTransaction and MeterValues arrives exactly once, in order per station."""
    stations = 60
    port = free_port()
    csms = DevCsms(port=port, heartbeat_interval_s=3600)
    await csms.start()
    config = fleet_config(
        csms.url,
        stations=stations,
        mode="scripted",
        steps=load_steps("""
            [[behaviour.steps]]
            do = "session"
            s = 8
            power_w = 11000
        """),
        ocpp={"MeterValueSampleInterval": 1, "HeartbeatInterval": 3600},
    )
    fleet = Fleet(config, work_dir=tmp_path, summary_out=None)
    run = asyncio.ensure_future(fleet.run())
    try:
        # Every station charges and its StartTransaction is confirmed (nothing queued).
        await wait_until(
            lambda: (
                sum(s.sessions_running() for s in fleet.stations.values()) == stations
                and all(s.queued() == 0 for s in fleet.stations.values())
            )
        )
        outage_utc = datetime.now(UTC)
        outage_mono_s = time.monotonic()
        await csms.stop()  # the outage: every connection closed, no new ones
        await wait_until(lambda: all(s.sessions_done == 1 for s in fleet.stations.values()))
        queued = sum(s.queued() for s in fleet.stations.values())
        assert queued >= stations  # at least each station's StopTransaction waits
        await csms.start()  # back on the same port
        await wait_until(lambda: all(s.queued() == 0 for s in fleet.stations.values()))
        fleet.request_stop()
        report = await asyncio.wait_for(run, 60)
    finally:
        if not run.done():
            fleet.request_stop()
            await asyncio.gather(run, return_exceptions=True)
        await csms.stop()
    assert report["errors"]["steps"] == 0, report["error_samples"]
    assert check_transactions(csms, stations, "FT") == stations
    # MeterValues: a sample taken during the outage was queued and arrives exactly once;
    # one in flight when the CSMS went away is sent again (at least once: its answer never
    # came), never lost. Per station in time order.
    after_outage = 0
    for sid, frames in by_station(csms.frames(action="MeterValues")).items():
        samples = Counter(
            (f.payload.get("transactionId"), mv["timestamp"])
            for f in frames
            for mv in f.payload["meterValue"]
        )
        for (_, stamp), n in samples.items():
            if datetime.fromisoformat(stamp) > outage_utc:
                assert n == 1, f"{sid}: the sample at {stamp} arrived {n} times"
                after_outage += 1
        resent = [f for f in frames if f.received_at > outage_mono_s]
        stamps = [mv["timestamp"] for f in resent for mv in f.payload["meterValue"]]
        assert stamps == sorted(stamps), f"{sid}: queued samples out of order"
    assert after_outage >= stations  # each station sampled at least once while offline


def stable_fields(frame: Frame) -> tuple[Any, ...]:
    """What a frame says apart from times and ids (and meter readings, which depend on how
    long real time a session took)."""
    p = frame.payload
    if frame.action == "StatusNotification":
        return (frame.action, p["connectorId"], p["status"], p["errorCode"])
    if frame.action in ("Authorize",):
        return (frame.action, p["idTag"])
    if frame.action == "StartTransaction":
        return (frame.action, p["connectorId"], p["idTag"])
    if frame.action == "StopTransaction":
        return (frame.action, p.get("idTag"), p.get("reason"))
    if frame.action == "BootNotification":
        return (frame.action, p["chargePointVendor"], p["chargePointModel"])
    return (frame.action,)


async def one_seeded_run(tmp_path: Path, seed: int) -> dict[str, dict[str, list[Any]]]:
    async with DevCsms(heartbeat_interval_s=3600) as csms:
        config = fleet_config(
            csms.url,
            stations=30,
            seed=seed,
            speed=10.0,
            random=RandomBehaviour(
                idle_s=Range(0, 5),
                session_s=Range(3, 20),
                power_w=Range(3700, 22000),
                fault_probability=0.3,
                fault_s=Range(2, 5),
                offline_probability=0,
            ),
        )
        fleet = Fleet(config, work_dir=tmp_path, summary_out=None)
        cut: list[int] = []

        def done() -> bool:
            finished = len(fleet.stations) == 30 and all(
                s.sessions_done >= 2 for s in fleet.stations.values()
            )
            if finished and not cut:
                cut.append(len(csms.received))
            return finished

        # Each station: its first three script cycles (a fault or a session each).
        await run_until(fleet, done)
    # What the fleet's shutdown sends (a running session ended by the stop, not the script's
    # card) depends on where real time caught each station: only the frames before it count.
    received = csms.received[: cut[0]]
    # Per station and action (each action's messages go out in order; the interleaving of
    # independent pumps, statuses against the transaction queue, is no part of a sequence).
    out: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for f in received:
        out[f.station_id][f.action].append(stable_fields(f))
    return out


async def test_the_same_seed_gives_the_same_message_sequence(tmp_path: Path) -> None:
    first = await one_seeded_run(tmp_path / "a", seed=42)
    second = await one_seeded_run(tmp_path / "b", seed=42)
    # The runs stop once every station finished two sessions: compare up to the shorter.
    assert set(first) == set(second)
    compared = 0
    for sid in first:
        for action in set(first[sid]) | set(second[sid]):
            a, b = first[sid].get(action, []), second[sid].get(action, [])
            n = min(len(a), len(b))
            assert a[:n] == b[:n], f"{sid} {action}: {a[:n]} != {b[:n]}"
            compared += n
    assert compared > 30 * 10


def test_random_scripts_are_per_station_and_per_seed() -> None:
    """The script of station i depends on (seed, i) only: the same pair gives the same
    steps (offline periods and faults included), another seed or station other steps."""

    def script(seed: int, index: int) -> list[Step]:
        rng = station_rng(seed, index, "driver")
        steps = random_steps(
            rng,
            idle_s=(0, 60),
            session_s=(60, 600),
            power_w=(3700, 22000),
            fault_probability=0.2,
            fault_s=(5, 10),
            offline_probability=0.2,
            offline_s=(5, 50),
        )
        return list(itertools.islice(steps, 40))

    assert script(42, 3) == script(42, 3)
    assert script(42, 3) != script(43, 3)
    assert script(42, 3) != script(42, 4)
    kinds = {step.do for step in script(42, 3)}
    assert {"wait", "session", "fault", "offline"} <= kinds


def load_steps(text: str) -> tuple[Step, ...]:
    return parse(tomllib.loads(text)).steps


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 60) -> None:
    async def loop() -> None:
        # Polled: the predicates read several stations' state; no event covers them all.
        for _ in itertools.count():
            if predicate():
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(loop(), timeout_s)


SCRIPT = """
[fleet]
stations = 3
prefix = "SC"
speed = 5
summary_interval_s = 0
start_rate_per_s = 0

[station]
reconnect_min_s = 0.1
reconnect_max_s = 0.3
ocpp = { MeterValueSampleInterval = 0, HeartbeatInterval = 3600 }

[behaviour]
mode = "scripted"

[[behaviour.steps]]
do = "plug"
[[behaviour.steps]]
do = "wait"
s = 1
[[behaviour.steps]]
do = "tap"
[[behaviour.steps]]
do = "charge"
s = 5
power_w = 7400
[[behaviour.steps]]
do = "tap"
[[behaviour.steps]]
do = "unplug"
[[behaviour.steps]]
do = "wait"
s = 1
[[behaviour.steps]]
do = "fault"
code = "GroundFailure"
s = 1
[[behaviour.steps]]
do = "offline"
s = 1
"""


async def test_scripted_behaviour_from_toml(tmp_path: Path) -> None:
    """Steps from a TOML file: plug, tap, charge at 7.4 kW, tap, unplug, a fault that is
    cleared, an offline period; each station reconnects afterwards."""
    toml_path = tmp_path / "fleet.toml"
    toml_path.write_text(SCRIPT)
    config = load(toml_path)
    async with DevCsms(heartbeat_interval_s=3600) as csms:
        connects: Counter[str] = Counter()
        csms.on_event = lambda e: (
            connects.update([e.station_id]) if type(e).__name__ == "StationConnected" else None
        )
        config = FleetConfig(**{**config.__dict__, "csms_url": csms.url, "work_dir": str(tmp_path)})
        fleet = Fleet(config, work_dir=tmp_path / "work", summary_out=None)
        calls: list[str] = []
        fleet.stats.listeners.append(lambda e: calls.append(e.action))

        def finished() -> bool:
            return (
                len(fleet.stations) == 3
                and all(connects[s] >= 2 for s in fleet.stations)
                and all(s.connection_state() == "accepted" for s in fleet.stations.values())
            )

        await run_until(fleet, finished)
        report = fleet.report()
    assert calls.count("StartTransaction") == 3  # the CallEvent API hears every answer
    assert report["errors"]["total"] == 0, report["error_samples"]
    check_transactions(csms, 3, "SC")
    for sid, frames in by_station(csms.frames(action="StatusNotification")).items():
        statuses = [f.payload["status"] for f in frames if f.payload["connectorId"] == 1]
        assert statuses[:7] == [
            "Available",
            "Preparing",
            "Charging",
            "Finishing",
            "Available",
            "Faulted",
            "Available",
        ], sid
        assert [f.payload["errorCode"] for f in frames if f.payload["status"] == "Faulted"] == [
            "GroundFailure"
        ]
    stops = csms.frames(action="StopTransaction")
    starts = {f.station_id: f.payload["meterStart"] for f in csms.frames(action="StartTransaction")}
    assert all(f.payload["meterStop"] > starts[f.station_id] for f in stops)
    assert report["actions"]["StartTransaction"]["count"] == 3
    assert report["actions"]["StartTransaction"]["median_ms"] is not None


@pytest.mark.parametrize(
    ("toml", "argv", "message"),
    [
        ("[fleet\nstations = 1", [], "not valid TOML"),
        ("", ["--stations", "0"], "--stations: 0"),
        ("[fleet]\nstations = 0", [], "fleet.stations: 0 is out of range"),
        ('[[behaviour.steps]]\ndo = "dance"', [], "unknown step 'dance'"),
        ('[behaviour]\nmode = "scripted"', [], "behaviour.steps"),
        ("[fleet]\nbogus = 1", [], "fleet.bogus: unknown key"),
        ("", ["--protocol", "2.1"], "'2.1' is not an OCPP version"),
        ("", ["--csms", "http://x"], "must start with ws://"),
    ],
)
def test_config_errors_exit_2_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, argv: list[str], message: str
) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(toml)
    code = cli_main(["fleet", "--config", str(path), "--csms", "ws://127.0.0.1:1/ocpp", *argv])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("evsed fleet: ")
    assert message in err


def test_no_csms_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["fleet", "--stations", "3"]) == 2
    assert "--csms: missing" in capsys.readouterr().err


async def test_workers_split_the_stations_and_merge_their_reports(tmp_path: Path) -> None:
    """`evsed fleet --workers 2` as a real command: two processes, one report."""
    async with DevCsms(heartbeat_interval_s=3600) as csms:
        report_path = tmp_path / "report.json"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "controller.cli",
            "fleet",
            "--stations",
            "10",
            "--csms",
            csms.url,
            "--workers",
            "2",
            "--duration",
            "4",
            "--summary-interval",
            "1",
            "--report",
            str(report_path),
            "--prefix",
            "WK",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()
    report = json.loads(report_path.read_text())
    assert report["workers"] == 2
    assert report["stations"] == 10 and report["booted"] == 10
    assert report["actions"]["BootNotification"]["count"] == 10
    assert report["rss_bytes"] > 0
    assert {f.station_id for f in csms.frames(action="BootNotification")} == {
        station_id("WK", i) for i in range(10)
    }
    assert "BootNotification" in out.decode()  # the text table
    assert "w1 [" in err.decode() and "w2 [" in err.decode()  # each worker's live line


async def test_stations_are_added_and_removed_while_the_fleet_runs(tmp_path: Path) -> None:
    """The run-time API a load-testing tool uses: add_station / remove_station while it
    runs; a removed station's session ends with its StopTransaction (6.46) and its
    connection closes; CallEvents name the station."""
    async with DevCsms(heartbeat_interval_s=3600) as csms:
        config = fleet_config(
            csms.url,
            stations=2,
            mode="scripted",
            steps=load_steps('[[behaviour.steps]]\ndo = "plug"\n[[behaviour.steps]]\ndo = "tap"'),
        )
        fleet = Fleet(config, work_dir=tmp_path, summary_out=None)
        heard: set[str] = set()
        fleet.stats.listeners.append(lambda e: heard.add(e.station_id))
        run = asyncio.ensure_future(fleet.run())
        try:
            await wait_until(lambda: len(fleet.stations) == 2)
            added = await fleet.add_station()
            assert added.station_id == "FT-0003"
            await wait_until(
                lambda: all(s.sessions_running() == 1 for s in fleet.stations.values())
            )
            await fleet.remove_station("FT-0001")
            await wait_until(lambda: "FT-0001" not in csms.station_ids)
            assert set(fleet.stations) == {"FT-0002", "FT-0003"}
            assert [f.station_id for f in csms.frames(action="StopTransaction")] == ["FT-0001"]
        finally:
            fleet.request_stop()
            await asyncio.wait_for(run, 60)
    assert heard == {"FT-0001", "FT-0002", "FT-0003"}
    assert len(csms.frames(action="StopTransaction")) == 3
