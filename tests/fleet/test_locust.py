"""The fleet under Locust (issue 16 item 3): a real Locust master with two workers on
127.0.0.1, each worker driving its own ``evsed fleet --serve`` child, against the dev CSMS.
Every Locust user is one station; Locust's statistics carry each OCPP action's CSMS response
time. Also the pipe protocol of ``--serve`` on its own."""

from __future__ import annotations

import asyncio
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from controller.dev.devcsms import DevCsms
from tests.procs import REPO, free_port

LOCUST = Path(sys.executable).with_name("locust")
pytestmark = pytest.mark.skipif(
    not LOCUST.exists() and shutil.which("locust") is None, reason="locust is not installed"
)

USERS = 6
SCRIPT = """
[behaviour]
mode = "scripted"
steps = [
  { do = "session", s = 2, power_w = 11000 },
]
"""


def locust_file() -> str:
    out = subprocess.run(
        [sys.executable, "-m", "controller.cli", "fleet", "--locustfile"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    path = out.stdout.strip()
    assert Path(path).is_file()
    return path


async def test_a_locust_master_with_two_workers_drives_one_station_per_user(
    tmp_path: Path,
) -> None:
    (tmp_path / "fleet.toml").write_text(SCRIPT)
    port = free_port()
    common = [str(LOCUST if LOCUST.exists() else "locust"), "-f", locust_file()]
    async with DevCsms(host="127.0.0.1", port=0) as csms:
        master = await asyncio.create_subprocess_exec(
            *common,
            "--master",
            "--headless",
            "--expect-workers",
            "2",
            "-u",
            str(USERS),
            "-r",
            str(USERS),
            "-t",
            "20s",  # headroom for a loaded CI machine: all must boot and run a session
            "--master-bind-host",
            "127.0.0.1",
            "--master-bind-port",
            str(port),
            "--host",
            csms.url,
            "--csv",
            str(tmp_path / "run"),
            "--fleet-config",
            str(tmp_path / "fleet.toml"),
            cwd=REPO,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=(tmp_path / "master.log").open("wb"),
        )
        workers = [
            await asyncio.create_subprocess_exec(
                *common,
                "--worker",
                "--master-host",
                "127.0.0.1",
                "--master-port",
                str(port),
                cwd=REPO,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=(tmp_path / f"worker{i}.log").open("wb"),
            )
            for i in range(2)
        ]
        try:
            code = await asyncio.wait_for(master.wait(), 120)
            worker_codes = await asyncio.wait_for(asyncio.gather(*(w.wait() for w in workers)), 120)
        finally:
            for proc in (master, *workers):
                if proc.returncode is None:
                    proc.kill()
        log = (tmp_path / "master.log").read_text()
        assert code == 0, log[-3000:]
        assert worker_codes == [0, 0]

        booted = {f.station_id for f in csms.received if f.action == "BootNotification"}
        # One station per user, named per worker: both workers took part.
        assert len(booted) == USERS, booted
        assert {sid.rsplit("-", 1)[0] for sid in booted} == {"LOCUST-W0", "LOCUST-W1"}
        starts = [f for f in csms.received if f.action == "StartTransaction"]
        stops = [f for f in csms.received if f.action == "StopTransaction"]
        assert len(starts) == USERS and len(stops) == USERS

    with (tmp_path / "run_stats.csv").open() as fh:
        rows = {row["Name"]: row for row in csv.DictReader(fh)}
    for action in ("BootNotification", "StatusNotification", "StartTransaction"):
        assert rows[action]["Type"] == "OCPP"
        assert int(rows[action]["Failure Count"]) == 0
    assert int(rows["BootNotification"]["Request Count"]) == USERS
    assert int(rows["StartTransaction"]["Request Count"]) == USERS
    assert int(rows["StopTransaction"]["Request Count"]) == USERS
    assert float(rows["Aggregated"]["Median Response Time"]) > 0
    # The fleet children quit with their workers.
    pgrep = await asyncio.create_subprocess_exec(
        "pgrep", "-f", "fleet --serve --csms " + csms.url, stdout=asyncio.subprocess.PIPE
    )
    left, _ = await pgrep.communicate()
    assert left == b""


async def _serve(csms: DevCsms, tmp_path: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "controller.cli",
        "fleet",
        "--serve",
        "--csms",
        csms.url,
        "--prefix",
        "PIPE",
        "--work-dir",
        str(tmp_path / "stores"),
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def _until(proc: asyncio.subprocess.Process, seen: list[dict[str, Any]], ev: str) -> None:
    assert proc.stdout is not None
    while not any(m["ev"] == ev for m in seen):
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line, "the fleet closed its output"
        seen.append(json.loads(line))


async def test_serve_adds_and_removes_stations_and_reports_every_call(tmp_path: Path) -> None:
    async with DevCsms(host="127.0.0.1", port=0) as csms:
        proc = await _serve(csms, tmp_path)
        assert proc.stdin is not None
        seen: list[dict[str, Any]] = []
        try:
            await _until(proc, seen, "ready")
            for line in (
                b'{"op": "add", "number": 3}\n',
                b"not json\n",
                b'{"op": "launch", "number": 1}\n',
                b'{"op": "add", "number": 0}\n',
                b'{"op": "remove", "number": 9}\n',
            ):
                proc.stdin.write(line)
            await _until(proc, seen, "added")
            await csms.wait_connected("PIPE-0003", timeout_s=10)
            proc.stdin.write(b'{"op": "add", "number": 3}\n')  # runs already
            proc.stdin.write(b'{"op": "remove", "number": 3}\n')
            await _until(proc, seen, "removed")
            proc.stdin.write(b'{"op": "quit"}\n')
            await proc.stdin.drain()
            rest, _ = await asyncio.wait_for(proc.communicate(), 60)
            seen += [json.loads(line) for line in rest.splitlines()]
            assert proc.returncode == 0
        finally:
            if proc.returncode is None:
                proc.kill()
    errors = [m["message"] for m in seen if m["ev"] == "error"]
    assert len(errors) == 5, errors  # four unusable lines, one add of a running station
    calls = [m for m in seen if m["ev"] == "call"]
    assert calls and all(m["station"] == "PIPE-0003" for m in calls)
    boots = [m for m in calls if m["action"] == "BootNotification"]
    assert len(boots) == 1 and boots[0]["error"] is None and boots[0]["ms"] > 0
    assert [f.station_id for f in csms.received if f.action == "BootNotification"] == ["PIPE-0003"]


async def test_serve_stops_every_station_when_its_driver_goes_away(tmp_path: Path) -> None:
    """The end of stdin (the Locust worker died) stops the stations cleanly: the session
    gets its StopTransaction."""
    async with DevCsms(host="127.0.0.1", port=0) as csms:
        proc = await _serve(csms, tmp_path)
        assert proc.stdin is not None
        seen: list[dict[str, Any]] = []
        try:
            await _until(proc, seen, "ready")
            proc.stdin.write(b'{"op": "add", "number": 1}\n')
            await _until(proc, seen, "added")
            await csms.wait_connected("PIPE-0001", timeout_s=10)
            proc.stdin.close()
            await asyncio.wait_for(proc.wait(), 60)
            assert proc.returncode == 0
        finally:
            if proc.returncode is None:
                proc.kill()
        assert not csms.connected("PIPE-0001")
