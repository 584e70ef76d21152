"""`evsed fleet --ocpp 2.0.1` against the dev CSMS on 127.0.0.1: full 2.0.1 Apps boot, play
seeded sessions told by TransactionEvents, ride out a CSMS outage, and report per action.

OCPP 2.0.1 requirements named: B01.FR.01 (BootNotification first), B01.FR.05 (one
StatusNotification per connector), E01.FR.07 / Part 2 E 1.3.2 (seqNo 0, 1, 2, ... per
transaction, gap-free), E01.FR.08 (the station's own transactionId), E04.FR.01-03 and
OCPP-J 4.1.1 (offline TransactionEvents queued, delivered in order once the connection is
back, with offline true, never lost; only the one in flight at the outage may come twice),
E06.FR.04 (Ended with stoppedReason Local at the card).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import tomllib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from controller.cli import main as cli_main
from controller.dev.devcsms import DevCsms, Frame
from controller.fleet.config import FleetConfigError, RandomBehaviour, Range, parse
from controller.fleet.fleet import Fleet
from controller.fleet.station import station_id
from controller.ocpp201 import rpc as rpc201
from tests.fleet.test_fleet import fleet_config, free_port, load_steps, run_until, wait_until

# No periodic Updated (TxUpdatedInterval 0): the seeded runs compare messages, not samples.
QUIET_DM = {"SampledDataCtrlr": {"TxUpdatedInterval": 0}}


def fleet_201(url: str, **overrides: Any) -> Any:
    overrides.setdefault("ocpp", QUIET_DM)
    return fleet_config(url, protocol="2.0.1", **overrides)


def transactions(frames: list[Frame]) -> dict[tuple[str, str], list[Frame]]:
    """TransactionEvents by (station, transactionId), in the order received."""
    out: dict[tuple[str, str], list[Frame]] = defaultdict(list)
    for f in frames:
        if f.action == "TransactionEvent":
            out[(f.station_id, f.payload["transactionInfo"]["transactionId"])].append(f)
    return out


def check_transactions_201(
    csms: DevCsms, stations: int, prefix: str, *, in_flight_after_s: float | None = None
) -> int:
    """Each transaction: Started with seqNo 0, Updated, then Ended; every seqNo from 0 to
    the Ended's received, none missing; none twice, except (when ``in_flight_after_s`` is
    given) at most one per station: the message the CSMS received before that time whose
    answer the outage lost. Every payload schema-valid. Returns how many transactions."""
    twice_per_station: Counter[str] = Counter()
    txs = transactions(csms.received)
    for (sid, tx_id), frames in txs.items():
        for f in frames:
            rpc201.validate(2, "TransactionEvent", f.payload)
        seqs = Counter(f.payload["seqNo"] for f in frames)
        first_of: dict[int, Frame] = {}
        for f in frames:
            first_of.setdefault(f.payload["seqNo"], f)
        assert sorted(seqs) == list(range(len(seqs))), f"{sid} {tx_id}: seqNo gap {sorted(seqs)}"
        for seq, n in seqs.items():
            if n == 1:
                continue
            assert in_flight_after_s is not None, f"{sid} {tx_id}: seqNo {seq} came {n} times"
            assert n == 2 and first_of[seq].received_at < in_flight_after_s, (sid, tx_id, seq)
            twice_per_station[sid] += 1
        by_seq = [first_of[s].payload for s in sorted(first_of)]
        assert by_seq[0]["eventType"] == "Started", (sid, tx_id)
        assert by_seq[-1]["eventType"] == "Ended", (sid, tx_id)
        assert {p["eventType"] for p in by_seq[1:-1]} <= {"Updated"}, (sid, tx_id)
        assert by_seq[-1]["transactionInfo"].get("stoppedReason", "Local") == "Local"
        assert 0 < len(tx_id) <= 36
    assert all(n <= 1 for n in twice_per_station.values()), twice_per_station
    started = {sid for sid, _ in txs}
    assert started == {station_id(prefix, i) for i in range(stations)}
    return len(txs)


async def test_50_stations_201_boot_run_a_seeded_session_and_stop_cleanly(
    tmp_path: Path,
) -> None:
    """50 2.0.1 stations: each boots (B01.FR.01: BootNotification first, then its one
    connector's StatusNotification, B01.FR.05), plays a seeded random session told by
    TransactionEvent Started / Ended with gap-free seqNo, and is stopped cleanly; the
    report counts TransactionEvent per action, no 1.6 transaction messages."""
    async with DevCsms(heartbeat_interval_s=3600, ocpp_versions=("2.0.1",)) as csms:
        config = fleet_201(
            csms.url,
            stations=50,
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
                len(fleet.stations) == 50
                and all(s.sessions_done >= 1 for s in fleet.stations.values())
            ),
        )
        report = fleet.report()
        await wait_until(lambda: not csms.station_ids, 10)
    assert report["protocol"] == "2.0.1"
    assert report["booted"] == 50
    assert report["errors"]["total"] == 0, report["error_samples"]
    assert report["queued"] == 0
    assert report["energy_wh"] > 0
    actions = report["actions"]
    assert actions["TransactionEvent"]["count"] >= 100  # Started and Ended of 50 sessions
    assert actions["TransactionEvent"]["errors"] == 0
    assert actions["TransactionEvent"]["median_ms"] is not None
    assert "StartTransaction" not in actions and "StopTransaction" not in actions
    for sid in {f.station_id for f in csms.received}:
        frames = csms.frames(station_id=sid)
        assert frames[0].action == "BootNotification", sid
        # The boot status of the one connector (a SecurityEventNotification of the startup
        # may come first: its own queue), before any transaction.
        first_status = next(f for f in frames if f.action == "StatusNotification")
        p = first_status.payload
        assert (p["evseId"], p["connectorId"], p["connectorStatus"]) == (1, 1, "Available")
        first_tx = next(f for f in frames if f.action == "TransactionEvent")
        assert first_status.received_at < first_tx.received_at, sid
    assert check_transactions_201(csms, 50, "FT") >= 50


async def test_fleet_201_outage_delivers_every_queued_event_exactly_once(tmp_path: Path) -> None:
    """The CSMS stops while every station charges (TxUpdatedInterval 1 s: Updated events
    queue up); sessions go on and end offline at the card; the CSMS comes back on the same
    port; every queued TransactionEvent arrives exactly once with offline true (E04.FR.01,
    E04.FR.02), seqNo gap-free per transaction (E01.FR.07), in order per station; only the
    event in flight at the outage may arrive twice (OCPP-J: its answer was lost)."""
    stations = 50
    port = free_port()
    csms = DevCsms(port=port, heartbeat_interval_s=3600, ocpp_versions=("2.0.1",))
    await csms.start()
    config = fleet_201(
        csms.url,
        stations=stations,
        mode="scripted",
        steps=load_steps("""
            [[behaviour.steps]]
            do = "session"
            s = 8
            power_w = 11000
        """),
        ocpp={"SampledDataCtrlr": {"TxUpdatedInterval": 1}},
    )
    fleet = Fleet(config, work_dir=tmp_path, summary_out=None)
    run = asyncio.ensure_future(fleet.run())
    try:
        await wait_until(
            lambda: (
                len(fleet.stations) == stations
                and sum(s.sessions_running() for s in fleet.stations.values()) == stations
                and all(s.queued() == 0 for s in fleet.stations.values())
            )
        )
        outage_mono_s = time.monotonic()
        await csms.stop()  # the outage: every connection closed, no new ones
        await wait_until(lambda: all(s.sessions_done == 1 for s in fleet.stations.values()))
        queued = sum(s.queued() for s in fleet.stations.values())
        assert queued >= stations  # at least each station's Ended waits
        back_mono_s = time.monotonic()
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
    assert check_transactions_201(csms, stations, "FT", in_flight_after_s=outage_mono_s) == (
        stations
    )
    after = [f for f in csms.frames(action="TransactionEvent") if f.received_at > back_mono_s]
    ended_after = [f for f in after if f.payload["eventType"] == "Ended"]
    assert {f.station_id for f in ended_after} == {station_id("FT", i) for i in range(stations)}
    # Everything that happened while the CSMS was away says so (E04.FR.02).
    assert all(f.payload.get("offline") is True for f in ended_after)
    for sid in {f.station_id for f in after}:
        seqs = [f.payload["seqNo"] for f in after if f.station_id == sid]
        assert seqs == sorted(seqs), f"{sid}: queued events out of order {seqs}"


def test_toml_ocpp_version_and_device_model_tables() -> None:
    """[fleet] ocpp_version = "2.0.1" (as evsed's own [csms] names it) and the stations'
    device-model variables by component; 1.6 keys for a 2.0.1 fleet are refused clearly."""
    config = parse(
        tomllib.loads("""
            [fleet]
            ocpp_version = "2.0.1"
            [station.ocpp.SampledDataCtrlr]
            TxUpdatedInterval = 30
        """)
    )
    assert config.protocol == "2.0.1"
    assert config.ocpp == {"SampledDataCtrlr": {"TxUpdatedInterval": 30}}
    with pytest.raises(FleetConfigError, match="by component"):
        parse(tomllib.loads('[fleet]\nocpp_version = "2.0.1"\n[station]\nocpp = { X = 1 }'))
    with pytest.raises(FleetConfigError, match="for 2.0.1 stations"):
        parse(tomllib.loads('[fleet]\nprotocol = "1.6"\n[station.ocpp.AuthCtrlr]\nEnabled = true'))
    with pytest.raises(FleetConfigError, match="not both"):
        parse(tomllib.loads('[fleet]\nprotocol = "1.6"\nocpp_version = "2.0.1"'))
    with pytest.raises(FleetConfigError, match="'2.1' is not an OCPP version"):
        parse(tomllib.loads('[fleet]\nocpp_version = "2.1"'))


def test_ocpp_option_with_16_keys_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--ocpp 2.0.1 over a file of 1.6 keys: exit 2 naming the key (the check runs once the
    command line settled the version)."""
    path = tmp_path / "fleet.toml"
    path.write_text("[station]\nocpp = { MeterValueSampleInterval = 0 }")
    code = cli_main(
        ["fleet", "--config", str(path), "--csms", "ws://127.0.0.1:1/ocpp", "--ocpp", "2.0.1"]
    )
    assert code == 2
    assert "station.ocpp.MeterValueSampleInterval" in capsys.readouterr().err


async def test_unknown_device_model_variable_fails_the_station_start(tmp_path: Path) -> None:
    """A misspelt variable is no silent no-op: the station does not start and the report
    names the variable."""
    async with DevCsms(heartbeat_interval_s=3600, ocpp_versions=("2.0.1",)) as csms:
        misspelt = {"SampledDataCtrlr": {"TxUpdatedIntervall": 5}}
        config = fleet_201(csms.url, stations=1, duration_s=0.5, ocpp=misspelt)
        report = await Fleet(config, work_dir=tmp_path, summary_out=None).run()
    assert report["errors"]["stations"] == 1
    assert "TxUpdatedIntervall" in report["error_samples"][0]


SCRIPT_201 = """
[fleet]
stations = 3
prefix = "S2"
speed = 5
summary_interval_s = 0
start_rate_per_s = 0

[station]
reconnect_min_s = 0.1
reconnect_max_s = 0.3

[station.ocpp.SampledDataCtrlr]
TxUpdatedInterval = 0

[behaviour]
mode = "scripted"

[[behaviour.steps]]
do = "session"
s = 2
power_w = 7400
[[behaviour.steps]]
do = "offline"
s = 1
[[behaviour.steps]]
do = "session"
s = 2
"""


async def test_cli_fleet_ocpp_201_report(tmp_path: Path) -> None:
    """`evsed fleet --ocpp 2.0.1 --workers 2` as a real command with a TOML script (two
    sessions and an offline period between): each worker gets the version, the merged JSON
    and text reports count TransactionEvent per action."""
    toml_path = tmp_path / "fleet.toml"
    toml_path.write_text(SCRIPT_201)
    async with DevCsms(heartbeat_interval_s=3600, ocpp_versions=("2.0.1",)) as csms:
        report_path = tmp_path / "report.json"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "controller.cli",
            "fleet",
            "--config",
            str(toml_path),
            "--csms",
            csms.url,
            "--ocpp",
            "2.0.1",
            "--workers",
            "2",
            "--duration",
            "8",
            "--report",
            str(report_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()
    report = json.loads(report_path.read_text())
    assert report["protocol"] == "2.0.1"
    assert report["workers"] == 2
    assert report["booted"] == 3
    assert report["errors"]["total"] == 0, report["error_samples"]
    assert report["sessions_done"] == 6
    assert report["actions"]["TransactionEvent"]["count"] >= 12
    assert "StartTransaction" not in report["actions"]
    text = out.decode()
    assert "OCPP 2.0.1 stations" in text
    assert "TransactionEvent" in text
    assert check_transactions_201(csms, 3, "S2") == 6
