"""`evsed hw-test`: the bring-up steps on simulated drivers, error translation, real Modbus."""

from __future__ import annotations

import asyncio
import errno
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.cli import build_parser, main
from controller.config import parse
from controller.ops.hwtest import (
    CardTimeout,
    explain_error,
    parse_steps,
    run_hw_test,
)
from hal.base import DeviceError
from hal.pcsc_diag import SCARD_E_NO_READERS_AVAILABLE, SCARD_E_NO_SERVICE, PcscProblem
from hal.registry import DriverConfigError
from tests.conftest import CARD, charger_config

FAST = {"contactor_hold_s": 0.05, "indicator_step_s": 0.0, "feedback_settle_s": 0.0}


def answers(mapping: dict[str, str]) -> tuple[Callable[[str], str], list[str]]:
    """An ``ask`` answering by the first key found in the prompt; records the prompts."""
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        for key, answer in mapping.items():
            if key in prompt:
                return answer
        raise AssertionError(f"unexpected question: {prompt!r}")

    return ask, prompts


def config(tmp_path: Path, **kwargs: Any) -> Any:
    return parse(charger_config(tmp_path, None, **kwargs))


async def run(
    cfg: Any, ask: Callable[[str], str], shared: dict[str, Any], **kwargs: Any
) -> tuple[int, str]:
    lines: list[str] = []
    code = await run_hw_test(cfg, ask=ask, out=lines.append, shared=shared, **{**FAST, **kwargs})
    return code, "\n".join(lines)


async def present_card_when_started(shared: dict[str, Any], uid: str = CARD) -> None:
    while True:
        reader = shared.get("sim.reader")
        if reader is not None and reader.present(uid):
            return
        await asyncio.sleep(0.01)


# --- sim drivers --------------------------------------------------------------------------


async def test_all_steps_pass(tmp_path: Path) -> None:
    shared: dict[str, Any] = {}
    ask, prompts = answers({"cable lock": "y", "light": "y", "type YES": "YES"})
    card = asyncio.create_task(present_card_when_started(shared))
    code, text = await run(config(tmp_path), ask, shared, card_timeout_s=5)
    await card
    assert code == 0, text
    assert "energy import  1000.0 Wh (1.000 kWh)" in text
    assert "voltage        L1 230.0 V  L2 230.0 V  L3 230.0 V" in text
    assert "frequency      50.00 Hz" in text
    assert "vehicle state A: no vehicle connected" in text
    assert f"card UID {CARD} -> idTag {CARD}" in text
    assert "DANGER" in text
    assert "all steps passed" in text
    for step in ("meter", "vehicle", "reader", "lock", "indicator", "contactor"):
        assert any(line.split()[:1] == [step] and "PASS" in line for line in text.splitlines())
    rig = shared["sim.rig.1"]
    commands = [closed for _, closed in rig.contactor.history]
    assert commands.count(True) == 1 and commands[-1] is False
    assert not rig.contactor.closed
    assert not rig.lock.locked
    assert rig.indicator.state.value == "off"
    assert len(rig.indicator.history) > 5


async def test_vehicle_state_b_meaning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hal.base import VehicleState
    from hal.sim import SimVehicle

    original = SimVehicle.start

    def start_with_car(self: SimVehicle, on_state: Any) -> None:
        original(self, on_state)
        self.set_state(VehicleState.C)  # the car wants energy ...

    monkeypatch.setattr(SimVehicle, "start", start_with_car)
    ask, _ = answers({})
    code, text = await run(config(tmp_path), ask, {}, steps={"vehicle"})
    assert code == 0, text
    # ... but hw-test never offers current, so the car waits in B.
    assert "vehicle state B: vehicle connected, not requesting energy" in text


@pytest.mark.parametrize("answer", ["", "yes", "y", "NO", "YES please"])
async def test_contactor_not_closed_without_yes(tmp_path: Path, answer: str) -> None:
    shared: dict[str, Any] = {}
    ask, prompts = answers({"type YES": answer})
    code, text = await run(config(tmp_path), ask, shared, steps={"contactor"})
    assert code == 0, text
    assert prompts == ["  type YES to close the contactor of connector 1 for 0.05 seconds: "]
    assert "contactor stays open" in text
    contactor = shared["sim.rig.1"].contactor
    assert all(not closed for _, closed in contactor.history)
    assert not contactor.closed


async def test_contactor_eof_means_no(tmp_path: Path) -> None:
    shared: dict[str, Any] = {}

    def ask(prompt: str) -> str:
        raise EOFError

    code, _ = await run(config(tmp_path), ask, shared, steps={"contactor"})
    assert code == 0
    assert all(not closed for _, closed in shared["sim.rig.1"].contactor.history)


async def test_contactor_closed_then_opened_on_yes(tmp_path: Path) -> None:
    shared: dict[str, Any] = {}
    ask, _ = answers({"type YES": " YES\n"})
    code, text = await run(config(tmp_path), ask, shared, steps={"contactor"}, contactor_hold_s=0.2)
    assert code == 0, text
    history = shared["sim.rig.1"].contactor.history
    closes = [(t, c) for t, c in history if c]
    assert len(closes) == 1
    assert history[-1][1] is False
    assert not shared["sim.rig.1"].contactor.closed
    assert "closed; opening again in 0.2 s" in text and "opened" in text


async def test_contactor_opened_when_cancelled(tmp_path: Path) -> None:
    shared: dict[str, Any] = {}
    ask, _ = answers({"type YES": "YES"})
    task = asyncio.create_task(
        run(config(tmp_path), ask, shared, steps={"contactor"}, contactor_hold_s=30)
    )
    for _ in range(500):  # until the contactor is closed, at most 5 s
        rig = shared.get("sim.rig.1")
        if rig is not None and rig.contactor is not None and rig.contactor.closed:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("contactor never closed")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not shared["sim.rig.1"].contactor.closed


async def test_welded_contactor_fails(tmp_path: Path) -> None:
    data = charger_config(tmp_path, None)
    data["connectors"][0]["contactor"] = {"driver": "sim", "welded": True}
    shared: dict[str, Any] = {}
    ask, _ = answers({"type YES": "YES"})
    code, text = await run(parse(data), ask, shared, steps={"contactor"})
    assert code == 1
    assert "welded" in text
    assert not shared["sim.rig.1"].contactor.closed


async def test_card_timeout(tmp_path: Path) -> None:
    ask, _ = answers({})
    code, text = await run(config(tmp_path), ask, {}, steps={"reader"}, card_timeout_s=0.05)
    assert code == 1
    assert "no card presented within 0.05 s" in text


async def test_meter_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hal.sim import SimMeter

    original = SimMeter.__init__

    def failing_meter(self: SimMeter, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.fail(True)

    monkeypatch.setattr(SimMeter, "__init__", failing_meter)
    shared: dict[str, Any] = {}
    cfg = config(tmp_path)
    ask, _ = answers({})
    code, text = await run(cfg, ask, shared, steps={"meter", "vehicle"})
    assert code == 1
    assert "FAIL: meter error: simulated meter does not answer" in text
    assert "fix:  check wiring and power" in text
    assert "some steps FAILED" in text
    assert "vehicle state A" in text  # the other steps still run


async def test_not_configured_steps_are_skipped(tmp_path: Path) -> None:
    data = charger_config(tmp_path, None)
    del data["reader"]
    del data["connectors"][0]["lock"]
    ask, _ = answers({})
    code, text = await run(parse(data), ask, {}, steps={"reader", "lock"})
    assert code == 0
    assert "no [reader] in the config" in text
    assert "no [connectors.lock]" in text


async def test_connector_selection(tmp_path: Path) -> None:
    ask, _ = answers({})
    code, text = await run(config(tmp_path, connectors=2), ask, {}, steps={"meter"}, connector=2)
    assert code == 0
    assert "connector 2" in text and "meter, connector 1" not in text
    with pytest.raises(ValueError, match="no connector 3"):
        await run(config(tmp_path), ask, {}, connector=3)


def test_parse_steps() -> None:
    assert parse_steps("meter, Reader") == {"meter", "reader"}
    with pytest.raises(ValueError, match="unknown step"):
        parse_steps("meter,relay")


def test_cli_parser_has_no_yes_option() -> None:
    args = build_parser().parse_args(
        ["hw-test", "-c", "x.toml", "--connector", "2", "--only", "meter", "--card-timeout", "5"]
    )
    assert (args.config, args.connector, args.only, args.card_timeout) == ("x.toml", 2, "meter", 5)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["hw-test", "--yes"])


def test_cli_runs_meter_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "evsed.toml"
    path.write_text(
        f"""
[station]
id = "CP-HW"
storage = "{tmp_path / "db"}"
[api]
port = 0
[[connectors]]
contactor = {{ driver = "sim" }}
meter = {{ driver = "sim" }}
vehicle = {{ driver = "sim" }}
""",
        encoding="utf-8",
    )
    assert main(["hw-test", "-c", str(path), "--only", "meter,vehicle"]) == 0
    out = capsys.readouterr().out
    assert "energy import" in out and "vehicle state A" in out
    assert main(["hw-test", "-c", str(path), "--only", "relay"]) == 2


# --- error translation --------------------------------------------------------------------

SERIAL = {"port": "/dev/ttyUSB0", "unit_id": 7, "baudrate": 19200, "parity": "E"}


def text_of(exc: BaseException, role: str = "meter", settings: Any = SERIAL) -> str:
    return str(explain_error(exc, role, settings, user="evsed"))


def test_translate_missing_port() -> None:
    exc = FileNotFoundError(errno.ENOENT, "No such file or directory", "/dev/ttyUSB0")
    assert text_of(exc) == (
        "serial port /dev/ttyUSB0 does not exist: check the adapter and "
        "`ls /dev/serial/by-id` (use that stable name as port)"
    )


def test_translate_pyserial_could_not_open() -> None:
    from serial import SerialException

    missing = SerialException(
        errno.ENOENT,
        "could not open port /dev/ttyUSB1: [Errno 2] No such file or directory: '/dev/ttyUSB1'",
    )
    assert "serial port /dev/ttyUSB1 does not exist" in text_of(missing)
    denied = SerialException(
        "could not open port /dev/ttyUSB1: [Errno 13] Permission denied: '/dev/ttyUSB1'"
    )
    assert text_of(denied).startswith(
        "permission denied on /dev/ttyUSB1: add the user to the "
        "dialout group (sudo usermod -aG dialout evsed)"
    )
    # Wrapped the way a driver might (raise ... from exc).
    try:
        try:
            raise denied
        except SerialException as inner:
            raise DeviceError("cannot open") from inner
    except DeviceError as outer:
        assert "permission denied on /dev/ttyUSB1" in text_of(outer)


def test_translate_permission_denied() -> None:
    exc = PermissionError(errno.EACCES, "Permission denied", "/dev/ttyUSB0")
    assert text_of(exc) == (
        "permission denied on /dev/ttyUSB0: add the user to the dialout group "
        "(sudo usermod -aG dialout evsed) and log in again"
    )
    gpio = PermissionError(errno.EACCES, "Permission denied", "/dev/gpiochip0")
    wrapped = DriverConfigError("connectors.1.contactor.pin", f"cannot use this pin: {gpio}")
    wrapped.__cause__ = gpio
    assert text_of(wrapped, "contactor", {"pin": 17}).startswith(
        "permission denied on /dev/gpiochip0: add the user to the gpio group "
        "(sudo usermod -aG gpio evsed)"
    )


def test_translate_plain_file_errors() -> None:
    exc = PermissionError(errno.EACCES, "Permission denied", "/var/lib/evsed/meter.json")
    assert "ls -l /var/lib/evsed/meter.json" in text_of(exc)
    assert "usermod" not in text_of(exc)


def test_translate_busy_port() -> None:
    exc = OSError(errno.EBUSY, "Device or resource busy", "/dev/ttyUSB0")
    assert "in use by another program" in text_of(exc)


def test_translate_modbus_timeout() -> None:
    from hal.modbus_bus import ModbusTimeout

    exc = ModbusTimeout("/dev/ttyUSB0 unit 7: read 2 input registers at 0: no answer within 0.5 s")
    assert text_of(exc).startswith(
        "no answer from unit id 7 at 19200 baud (8E1 on /dev/ttyUSB0): check unit id, baud "
        "rate, parity, A/B wiring and termination"
    )
    # Defaults when the settings leave them out.
    assert text_of(exc, settings={"port": "/dev/ttyUSB0"}).startswith(
        "no answer from unit id 1 at 9600 baud (8N1"
    )
    tcp = text_of(exc, settings={"host": "10.0.0.5", "unit_id": 3})
    assert tcp.startswith("no answer from unit id 3 at 10.0.0.5:502")


def test_translate_modbus_exception_and_not_connected(tmp_path: Path) -> None:
    from hal.modbus_bus import ModbusExceptionResponse, ModbusNotConnected

    exc = ModbusExceptionResponse("unit 7: exception response 2 (illegal data address)", 2)
    assert "check the model setting" in text_of(exc)
    nope = ModbusNotConnected("/dev/ttyNOPE: cannot open the port")
    assert text_of(nope, settings={"port": "/dev/ttyNOPE"}).startswith(
        "serial port /dev/ttyNOPE does not exist"
    )
    exists = tmp_path / "ttyFAKE"
    exists.write_text("")
    text = text_of(nope, settings={"port": str(exists)})
    assert "although it exists" in text or "permission denied" in text
    assert "cannot connect to the Modbus TCP gateway 10.0.0.5:502" in text_of(
        nope, settings={"host": "10.0.0.5"}
    )


def test_translate_pcsc() -> None:
    assert text_of(PcscProblem("x", SCARD_E_NO_SERVICE), "reader", {}).startswith(
        "pcscd is not running: install and start it"
    )
    assert text_of(PcscProblem("x", SCARD_E_NO_READERS_AVAILABLE), "reader", {}).startswith(
        "no card reader found: plug in the USB reader"
    )
    wrong = PcscProblem("x", 0, ["ACS ACR122U 00 00"], "Identiv")
    assert "no card reader matches 'Identiv' (readers found: 'ACS ACR122U 00 00')" in text_of(
        wrong, "reader", {}
    )
    missing = ModuleNotFoundError("No module named 'smartcard'", name="smartcard")
    assert text_of(missing, "reader", {}).startswith("pyscard is not installed")
    # The registry reports a module that failed to import inside a DriverConfigError.
    registry = DriverConfigError(
        "reader.driver",
        "unknown reader driver 'pcsc'; known reader drivers: 'sim'; driver modules that failed "
        "to import: hal.pcsc (ModuleNotFoundError: No module named 'smartcard')",
    )
    assert text_of(registry, "reader", {}).startswith("pyscard is not installed")
    assert "no card presented within 30 s" in text_of(CardTimeout(30), "reader", {})


def test_translate_driver_config_error() -> None:
    exc = DriverConfigError("connectors.1.meter.unit_id", "must be at most 247, got 300")
    assert text_of(exc) == (
        "configuration error at connectors.1.meter.unit_id: must be at most 247, got 300: "
        "fix this key in the config file (`evsed check-config FILE` checks it)"
    )


# --- the real Modbus meter driver ---------------------------------------------------------


def modbus_meter_config(tmp_path: Path, port: str, unit_id: int = 1) -> Any:
    data = charger_config(tmp_path, None)
    data["connectors"][0]["meter"] = {
        "driver": "modbus",
        "model": "eastron_sdm630",
        "port": port,
        "unit_id": unit_id,
        "timeout_s": 0.2,
        "retries": 0,
    }
    return parse(data)


async def test_real_modbus_meter_missing_port(tmp_path: Path) -> None:
    ask, _ = answers({})
    code, text = await run(modbus_meter_config(tmp_path, "/dev/ttyNOPE"), ask, {}, steps={"meter"})
    assert code == 1
    assert "FAIL: serial port /dev/ttyNOPE does not exist" in text
    assert "ls /dev/serial/by-id" in text


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed")
async def test_real_modbus_meter_wrong_unit_id(tmp_path: Path) -> None:
    from hal.base import MeterReading
    from hal.modbus import load_model
    from tests.modbus_sim import SimLine, SimSlave, SocatPair

    class OnlyKnownUnits(SimLine):
        """pymodbus' simulator answers unknown unit ids with an exception (server device
        failure); on a real RS-485 line nobody answers. Drop those answers."""

        def trace_packet(self, sending: bool, data: bytes) -> bytes:
            if sending and data and data[0] not in self.slaves:
                return b""
            return super().trace_packet(sending, data)

    pair = SocatPair(tmp_path).start()
    try:
        slave = SimSlave(1)
        slave.fill_meter(
            load_model("eastron_sdm630"),
            MeterReading(1234.0, 0.0, (230.0,) * 3, (0.0,) * 3, 50.0),
        )
        line = await OnlyKnownUnits([slave]).start_rtu(pair.b)
        try:
            ask, _ = answers({})
            good = modbus_meter_config(tmp_path, pair.a, unit_id=1)
            code, text = await run(good, ask, {}, steps={"meter"})
            assert code == 0, text
            assert "energy import  1234.0 Wh" in text
            wrong = modbus_meter_config(tmp_path, pair.a, unit_id=5)
            code, text = await run(wrong, ask, {}, steps={"meter"})
            assert code == 1
            assert f"FAIL: no answer from unit id 5 at 9600 baud (8N1 on {pair.a})" in text
            assert "check unit id, baud rate, parity, A/B wiring and termination" in text
        finally:
            await line.stop()
    finally:
        pair.stop()
