"""`evsed safe-off`: real gpio contactor drivers on gpiozero's MockFactory, a real EVSE-DIN
board simulation over RTU framing (socat pty), and the command line as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero import DigitalOutputDevice
from gpiozero.pins.mock import MockFactory, MockPin, MockPWMPin

from controller.ops.safeoff import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    Outcome,
    SafeOffConfigError,
    read_devices,
    safe_off,
)
from hal.gpio import FACTORY_KEY
from tests.modbus_sim import EvseDinSim, SimLine, SocatPair, require_socat
from tests.procs import REPO

COIL_1 = 17  # active high
COIL_2 = 22  # active low: "off" is the high level
FEEDBACK_1 = 27
UNIT = 3


def levels(pin: MockPin) -> list[bool]:
    return [bool(s.state) for s in pin.states]


def connector(contactor: str, vehicle: str = '{ driver = "sim" }') -> str:
    return f"""
[[connectors]]
max_current_a = 16
contactor = {contactor}
meter = {{ driver = "sim" }}
vehicle = {vehicle}
"""


def write_config(tmp_path: Path, *connectors: str, extra: str = "") -> Path:
    """A config whose non-HAL parts are all wrong: safe-off must not care."""
    path = tmp_path / "evsed.toml"
    path.write_text(
        f"""
[station]
id = "CP-SAFE"
storage = "{tmp_path / "evsed.db"}"

[csms]
url = "not a websocket url"

[ocpp]
NoSuchKey = 1
{extra}
{"".join(connectors)}
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory(pin_class=MockPWMPin)
    yield f
    f.close()


def coil_left_on(factory: MockFactory, number: int, level: bool) -> MockPin:
    """The pin as a crashed evsed left it: an output at the coil-on level."""
    pin = factory.pin(number)
    pin.function = "output"
    pin.state = level
    pin.clear_states()
    return pin


# --------------------------------------------------------------------------- gpio


async def test_gpio_contactors_are_driven_off_then_released(
    tmp_path: Path, factory: MockFactory
) -> None:
    cfg = write_config(
        tmp_path,
        connector(f"{{ driver = 'gpio', pin = {COIL_1}, feedback_pin = {FEEDBACK_1} }}"),
        connector(f"{{ driver = 'gpio', pin = {COIL_2}, active_high = false }}"),
    )
    coil_1 = coil_left_on(factory, COIL_1, True)
    coil_2 = coil_left_on(factory, COIL_2, False)

    outcomes = await safe_off(cfg, shared={FACTORY_KEY: factory})

    assert [o.ok for o in outcomes] == [True, True, True, True], outcomes
    assert outcomes[0].device == "connector 1 contactor"
    assert outcomes[0].detail == "open, feedback contact reads open"
    assert outcomes[1].device == "connector 2 contactor"
    # The coil outputs went to their inactive level, then the pins were released (inputs:
    # the relay driver's pull-down holds the coil off from there).
    assert levels(coil_1) == [True, False]
    assert levels(coil_2)[:2] == [False, True]  # then released: the pull decides
    assert coil_1.function == "input" and coil_2.function == "input"
    # Only contactors (and vehicle drivers) were built: meters etc. never touched a pin.
    assert outcomes[2].detail.startswith("nothing to do")


async def test_welded_feedback_is_reported_as_a_failure(
    tmp_path: Path, factory: MockFactory
) -> None:
    # The mirror contact reads closed (high, here through the pull-up) while the coil is off.
    cfg = write_config(
        tmp_path,
        connector(
            f"{{ driver = 'gpio', pin = {COIL_1}, feedback_pin = {FEEDBACK_1}, "
            "feedback_pull_up = true }"
        ),
    )
    coil = coil_left_on(factory, COIL_1, True)

    outcomes = await safe_off(cfg, shared={FACTORY_KEY: factory})

    assert not outcomes[0].ok
    assert "feedback contact reads closed (welded?)" in outcomes[0].detail
    assert levels(coil) == [True, False]  # the coil was switched off all the same


async def test_a_failing_contactor_does_not_stop_the_others(
    tmp_path: Path, factory: MockFactory
) -> None:
    cfg = write_config(
        tmp_path,
        connector(f"{{ driver = 'gpio', pin = {COIL_1} }}"),
        connector("{ driver = 'no-such-driver' }"),
        connector(f"{{ driver = 'gpio', pin = {COIL_2} }}"),
    )
    # Somebody (a still running evsed) holds the first coil's pin.
    holder = DigitalOutputDevice(COIL_1, pin_factory=factory)
    coil_3 = coil_left_on(factory, COIL_2, True)
    try:
        outcomes = await safe_off(cfg, shared={FACTORY_KEY: factory})
    finally:
        holder.close()

    by_device = {o.device: o for o in outcomes}
    first = by_device["connector 1 contactor"]
    assert not first.ok and "is evsed still running?" in first.detail
    second = by_device["connector 2 contactor"]
    assert not second.ok and "unknown contactor driver 'no-such-driver'" in second.detail
    assert by_device["connector 3 contactor"].ok
    assert levels(coil_3) == [True, False]


def test_config_without_connectors_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "evsed.toml"
    path.write_text('[station]\nid = "x"\n', encoding="utf-8")
    with pytest.raises(SafeOffConfigError, match="no \\[\\[connectors\\]\\]"):
        read_devices(path)
    path.write_text("[[connectors]\n", encoding="utf-8")
    with pytest.raises(SafeOffConfigError, match="not valid TOML"):
        read_devices(path)
    with pytest.raises(SafeOffConfigError, match="cannot read"):
        read_devices(tmp_path / "missing.toml")


# --------------------------------------------------------------------------- EVSE-DIN


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[SocatPair]:
    require_socat()
    p = SocatPair(tmp_path).start()
    try:
        yield p
    finally:
        p.stop()


def board_vehicle(port: str, timeout_s: float = 0.2, retries: int = 1) -> str:
    return (
        f"{{ driver = 'evse-din', port = '{port}', unit_id = {UNIT}, "
        f"timeout_s = {timeout_s}, retries = {retries} }}"
    )


async def test_evse_board_is_set_to_zero_amps(
    tmp_path: Path, pair: SocatPair, factory: MockFactory
) -> None:
    board = EvseDinSim(UNIT)
    assert board.setpoint == 13  # the board offers 13 A: the car may draw
    line = await SimLine([board]).start_rtu(pair.b)
    try:
        cfg = write_config(
            tmp_path,
            connector(f"{{ driver = 'gpio', pin = {COIL_1} }}", board_vehicle(pair.a)),
        )
        outcomes = await safe_off(cfg, shared={FACTORY_KEY: factory})
    finally:
        await line.stop()
    assert [o.ok for o in outcomes] == [True, True], outcomes
    assert outcomes[1] == Outcome(
        "connector 1 vehicle", "evse-din", True, "0 A offered (read back)"
    )
    assert board.setpoint == 0
    assert (1000, [0]) in board.writes


class _BoardIgnoringWrites(EvseDinSim):
    """Answers a write but keeps its setpoint (a board whose register is write-protected)."""

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> Any:
        if set_values is not None:
            self.requests += 1
            return None
        return await super().action(
            function_code, start_address, address, count, current_registers, set_values
        )


async def test_board_that_keeps_offering_current_is_a_failure(
    tmp_path: Path, pair: SocatPair, factory: MockFactory
) -> None:
    """The driver reads the register back (EvseDinBoard.offer_nothing): a board still
    offering 13 A after the write is reported, not taken for safe."""
    board = _BoardIgnoringWrites(UNIT)
    line = await SimLine([board]).start_rtu(pair.b)
    try:
        cfg = write_config(
            tmp_path,
            connector(f"{{ driver = 'gpio', pin = {COIL_1} }}", board_vehicle(pair.a)),
        )
        outcomes = await safe_off(cfg, shared={FACTORY_KEY: factory})
    finally:
        await line.stop()
    assert outcomes[0].ok and not outcomes[1].ok, outcomes
    assert "register 1000 reads 13, not 0" in outcomes[1].detail
    assert board.setpoint == 13


async def test_silent_board_fails_within_the_budget_and_contactors_still_open(
    tmp_path: Path, pair: SocatPair, factory: MockFactory
) -> None:
    board = EvseDinSim(UNIT)
    board.muted = True
    line = await SimLine([board]).start_rtu(pair.b)
    coil = coil_left_on(factory, COIL_1, True)
    try:
        cfg = write_config(
            tmp_path,
            # 11 attempts of 2 s each would take over 20 s; the budget is 0.5 s.
            connector(
                f"{{ driver = 'gpio', pin = {COIL_1} }}",
                board_vehicle(pair.a, timeout_s=2.0, retries=10),
            ),
        )
        outcomes = await safe_off(cfg, shared={FACTORY_KEY: factory}, timeout_s=0.5)
    finally:
        await line.stop()
    assert outcomes[0].ok
    assert levels(coil) == [True, False]
    assert not outcomes[1].ok
    assert outcomes[1].detail.startswith("no answer within 0.")


# --------------------------------------------------------------------------- command line


def run_safe_off(cfg: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}  # gpiozero's default factory
    return subprocess.run(
        [sys.executable, "-m", "controller.cli", "safe-off", "-c", str(cfg), *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_works_with_a_broken_database_and_no_csms(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, connector(f"{{ driver = 'gpio', pin = {COIL_1} }}"))
    garbage = b"this is not an SQLite database\x00" * 64
    (tmp_path / "evsed.db").write_bytes(garbage)

    result = run_safe_off(cfg)

    assert result.returncode == EXIT_OK, result.stderr
    assert "connector 1 contactor (gpio): open" in result.stdout
    assert "connector 1 vehicle (sim): nothing to do" in result.stdout
    assert "1 contactor(s) open" in result.stdout
    assert (tmp_path / "evsed.db").read_bytes() == garbage  # never opened for writing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evsed.db", "evsed.toml"]


def test_cli_reports_every_device_and_fails_when_one_failed(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        connector("{ driver = 'gpio', pin = 99 }"),
        connector(f"{{ driver = 'gpio', pin = {COIL_2} }}"),
    )
    result = run_safe_off(cfg)
    assert result.returncode == EXIT_FAILED
    assert (
        "connector 1 contactor (gpio): FAILED: cannot set up: connectors.1.contactor.pin: "
        "must be at most 27, got 99" in result.stdout
    )
    assert "connector 2 contactor (gpio): open" in result.stdout
    assert "1 device(s) FAILED: connector 1 contactor" in result.stderr


def test_cli_exit_code_2_without_a_usable_config(tmp_path: Path) -> None:
    result = run_safe_off(tmp_path / "missing.toml")
    assert result.returncode == EXIT_CONFIG
    assert "cannot read" in result.stderr
    cfg = write_config(tmp_path, connector(f"{{ driver = 'gpio', pin = {COIL_1} }}"))
    result = run_safe_off(cfg, "--timeout", "0")
    assert result.returncode == EXIT_CONFIG
    assert "--timeout must be positive" in result.stderr
