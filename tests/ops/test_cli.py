"""The `evsed` command line, run in-process (and once as a real subprocess)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from controller.cli import main
from controller.dev.devcsms import DevCsms
from tests.conftest import CARD, STATION_ID

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "controller" / "examples" / "evsed.toml"
EXAMPLE_TEXT = EXAMPLE.read_text(encoding="utf-8")


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The example's sim meter state file is relative ("./sim-meter-1.json").
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str, name: str = "evsed.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# --------------------------------------------------------------------------- check-config


def test_check_config_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert "OK" in out
    assert "EVSED-001" in out
    assert "1 connector(s)" in out
    assert "CSMS ws://127.0.0.1:9000/ocpp" in out
    assert "simulated drivers" in out
    assert err == ""


def test_check_config_standalone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = EXAMPLE_TEXT.replace(
        '[csms]\nurl = "ws://127.0.0.1:9000/ocpp"\nocpp_version = "1.6"', ""
    )
    assert "[csms]" not in text
    assert main(["check-config", write(tmp_path, text)]) == 0
    assert "standalone" in capsys.readouterr().out


BROKEN = [
    ("ocpp_version", ('ocpp_version = "1.6"', 'ocpp_version = "2.1"'), "csms.ocpp_version"),
    ("http url", ('url = "ws://', 'url = "http://'), "csms.url"),
    ("station id", ('id = "EVSED-001"', 'id = "EVSED 001"'), "station.id"),
    ("unknown key", ("[api]", "[api]\ntoken = 'x'"), "api.token"),
    ("max current", ("max_current_a = 16", "max_current_a = 100"), "connectors.1.max_current_a"),
    (
        "missing meter",
        ('meter = { driver = "sim", state_file = "./sim-meter-1.json" }\n', ""),
        "connectors.1.meter",
    ),
    ("ocpp key", ("HeartbeatInterval = 300", "HeartbeatInterval = -300"), "ocpp.HeartbeatInterval"),
    (
        "read-only key",
        ("HeartbeatInterval = 300", "NumberOfConnectors = 3"),
        "ocpp.NumberOfConnectors",
    ),
    ("driver setting", ("phases = 3", "phases = 2"), "connectors.1.vehicle.phases"),
    (
        "driver setting type",
        ("power_w = 11000", 'power_w = "11 kW"'),
        "connectors.1.vehicle.power_w",
    ),
    ("bad toml", ("[api]", "[api"), "file"),
]


@pytest.mark.parametrize(("replace", "key"), [pytest.param(r, k, id=name) for name, r, k in BROKEN])
def test_check_config_broken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], replace: tuple[str, str], key: str
) -> None:
    old, new = replace
    assert old in EXAMPLE_TEXT
    path = write(tmp_path, EXAMPLE_TEXT.replace(old, new, 1))
    assert main(["check-config", path]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"{path}: error: {key}")
    assert err.count("\n") == 1  # one line, no traceback


def test_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "missing.toml")
    assert main(["check-config", path]) == 2
    err = capsys.readouterr().err
    assert "error: file: cannot read" in err
    assert "missing.toml" in err


def test_check_config_unknown_driver_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        EXAMPLE_TEXT.replace('contactor = { driver = "sim" }', 'contactor = { driver = "simm" }'),
    )
    assert main(["check-config", path]) == 2
    assert "connectors.1.contactor" in capsys.readouterr().err


def test_check_config_bad_reader_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        EXAMPLE_TEXT.replace(
            '[reader]\ndriver = "sim"', '[reader]\ndriver = "sim"\nport = "/dev/ttyUSB0"'
        ),
    )
    assert main(["check-config", path]) == 2
    assert "reader" in capsys.readouterr().err


def test_check_config_subprocess() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "controller.cli", "check-config", "controller/examples/evsed.toml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "EVSED-001" in result.stdout


# --------------------------------------------------------------------------- help


def test_help_lists_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("run", "check-config", "demo", "dev-csms", "status", "sim"):
        assert cmd in out


def test_no_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "usage: evsed" in capsys.readouterr().err


def test_sim_help_lists_actions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["sim", "--help"])
    out = capsys.readouterr().out
    for action in ("plug", "unplug", "card", "vehicle", "fault"):
        assert action in out


# --------------------------------------------------------------------------- status and sim


async def cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def status_json(url: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert await cli("status", "--json", "--api", url) == 0
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


async def test_status_and_sim_drive_a_session(
    charger: Any, csms: DevCsms, capsys: pytest.CaptureFixture[str]
) -> None:
    h = await charger(csms)
    url = f"http://127.0.0.1:{h.app.api.port}/"  # a trailing slash is fine

    capsys.readouterr()
    assert await cli("status", "--api", url) == 0
    out = capsys.readouterr().out
    assert f"station {STATION_ID}: CSMS accepted, 0 message(s) queued" in out
    assert "connector 1: Available" in out

    assert await cli("sim", "plug", "1", "--api", url) == 0
    assert capsys.readouterr().out.strip() == "ok"
    await h.settle(lambda: h.connector().state.phase.value == "Preparing")

    assert await cli("sim", "card", CARD, "--api", url) == 0
    await csms.wait_for(lambda f: f.action == "StartTransaction")
    await h.settle(lambda: h.connector().hw.contactor.closed)

    assert await cli("sim", "vehicle", "1", "c", "--power-w", "7400", "--api", url) == 0
    await h.advance(60, step_s=10)
    data = await status_json(url, capsys)
    c = data["connectors"][0]
    assert c["status"] == "Charging"
    assert c["contactor_closed"] is True
    assert c["power_w"] == 7400.0
    assert c["transaction_id"] == 1
    assert data["station_id"] == STATION_ID

    assert await cli("status", "--api", url) == 0
    out = capsys.readouterr().out
    assert "connector 1: Charging" in out
    assert "contactor closed" in out
    assert "7400 W" in out
    assert f"tx 1 ({CARD}," in out

    assert await cli("sim", "fault", "1", "GroundFailure", "--api", url) == 0
    await h.settle(lambda: h.connector().state.phase.value == "Faulted")
    assert not h.connector().hw.contactor.closed
    assert await cli("sim", "fault", "1", "clear", "--api", url) == 0
    await h.settle(lambda: h.connector().state.phase.value != "Faulted")
    assert await cli("sim", "unplug", "1", "--api", url) == 0
    await csms.wait_for(lambda f: f.action == "StopTransaction")
    await h.settle(lambda: h.connector().state.phase.value == "Available")
    data = await status_json(url, capsys)
    assert data["connectors"][0]["transaction_key"] is None
    assert data["connectors"][0]["vehicle_state"] == "A"


async def test_status_uses_api_from_config(
    charger: Any, csms: DevCsms, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h = await charger(csms)
    text = EXAMPLE_TEXT.replace("port = 8080", f"port = {h.app.api.port}")
    path = write(tmp_path, text, "running.toml")
    data_raw = await cli("status", "--json", "-c", path)
    assert data_raw == 0
    assert json.loads(capsys.readouterr().out)["station_id"] == STATION_ID


async def test_sim_errors_from_the_api(
    charger: Any, csms: DevCsms, capsys: pytest.CaptureFixture[str]
) -> None:
    h = await charger(csms)
    url = f"http://127.0.0.1:{h.app.api.port}"
    with pytest.raises(SystemExit) as info:
        await cli("sim", "card", "xyz", "--api", url)
    assert str(info.value.code).startswith("evsed: ")
    assert "UID" in str(info.value.code)
    with pytest.raises(SystemExit) as info:
        await cli("sim", "plug", "4", "--api", url)
    assert "unknown connector 4" in str(info.value.code)
    with pytest.raises(SystemExit) as info:
        await cli("sim", "fault", "1", "Smoke", "--api", url)
    assert "GroundFailure" in str(info.value.code)

    # A stopped reader does not take the card: exit 1 with a message.
    h.app.shared["sim.reader"].stop()
    capsys.readouterr()
    assert await cli("sim", "card", CARD, "--api", url) == 1
    assert "reader is not started" in capsys.readouterr().err


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize(
    "argv",
    [["sim", "plug", "1"], ["status"], ["status", "--json"], ["sim", "card", CARD]],
)
def test_unreachable_api(argv: list[str]) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(SystemExit) as info:
        main([*argv, "--api", url])
    message = str(info.value.code)
    assert message.startswith(f"evsed: cannot reach {url}")
    assert "evsed run" in message


async def test_sim_against_wrong_api_path(charger: Any, csms: DevCsms) -> None:
    h = await charger(csms)
    url = f"http://127.0.0.1:{h.app.api.port}/wrong-prefix"
    with pytest.raises(SystemExit) as info:
        await cli("sim", "plug", "1", "--api", url)
    message = str(info.value.code)
    assert message.startswith("evsed: ")
    assert "Not Found" in message  # a non-JSON error body still gives a clear message


def test_status_with_broken_config(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE_TEXT.replace("port = 8080", "port = 'x'"))
    with pytest.raises(SystemExit) as info:
        main(["status", "-c", path])
    message = str(info.value.code)
    assert message.startswith("evsed: ")
    assert "api.port" in message
