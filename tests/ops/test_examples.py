"""The shipped example configs and the TOML snippets in hardware.md stay valid.

* every ``controller/examples/*.toml`` loads and passes ``evsed check-config``;
* every drivers' settings in them are accepted by the real driver factories (GPIO on
  gpiozero's MockFactory, Modbus links are never opened, the PC/SC reader is not started);
* every ```toml block in hardware.md parses; a complete config (has ``[station]``) passes
  ``controller.config.parse``; a device snippet (only ``connectors`` / ``reader`` tables) is
  wrapped into a minimal config, parsed, its driver names are registered, and its drivers
  accept their settings.
"""

from __future__ import annotations

import asyncio
import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from controller.cli import main
from controller.config import REQUIRED_ROLES, Config, load, parse
from controller.ops.hwtest import release
from hal.registry import DriverContext, create_driver, known_drivers

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "controller" / "examples").glob("*.toml"))
HARDWARE_MD = ROOT / "hardware.md"
DEVICE_SNIPPET_KEYS = frozenset({"connectors", "reader"})

_FENCE = re.compile(r"^```toml[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def toml_snippets(text: str) -> list[tuple[int, str]]:
    """(line number, body) of every ```toml fenced block."""
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in _FENCE.finditer(text)]


def _snippets() -> list[tuple[int, str]]:
    return toml_snippets(HARDWARE_MD.read_text(encoding="utf-8"))


def _id(snippet: tuple[int, str]) -> str:
    return f"hardware.md:{snippet[0]}"


def wrap_device_snippet(data: dict[str, Any]) -> dict[str, Any]:
    """A minimal config around a snippet of [connectors.*] / [[connectors]] / [reader] tables.

    Required roles the snippet does not set are filled with simulated drivers.
    """
    config: dict[str, Any] = {"station": {"id": "SNIPPET", "storage": ":memory:"}}
    raw = copy.deepcopy(data.get("connectors", [{}]))
    connectors = [raw] if isinstance(raw, dict) else list(raw)
    for connector in connectors:
        for role in REQUIRED_ROLES:
            connector.setdefault(role, {"driver": "sim"})
    config["connectors"] = connectors
    if "reader" in data:
        config["reader"] = copy.deepcopy(data["reader"])
    return config


def _devices(config: Config) -> list[tuple[int, str, Any]]:
    devices = [
        (cc.connector_id, role, dev) for cc in config.connectors for role, dev in cc.devices.items()
    ]
    if config.reader is not None:
        devices.append((0, "reader", config.reader))
    return devices


def assert_drivers_registered(config: Config) -> None:
    for _connector_id, role, dev in _devices(config):
        assert dev.driver in known_drivers(role), f"{dev.key}.driver {dev.driver!r} unknown"


def build_real_drivers(config: Config) -> None:
    """Create every non-simulated driver without touching hardware, then release it.

    GPIO drivers get a MockFactory through the shared dict; Modbus drivers only open their
    port on the first request; the PC/SC reader only talks to pcscd once started.
    """
    shared: dict[str, Any] = {"gpio.factory": MockFactory(pin_class=MockPWMPin)}
    created = []
    try:
        for connector_id, role, dev in _devices(config):
            if dev.driver == "sim":
                continue
            if dev.driver == "pcsc":
                pytest.importorskip("smartcard", reason="pyscard (the pcsc extra) not installed")
            ctx = DriverContext(connector_id, shared=shared, key_prefix=dev.key)
            created.append(create_driver(role, dev.driver, dev.settings, ctx))
    finally:

        async def release_all() -> None:
            for device in reversed(created):
                await release(device)

        asyncio.run(release_all())


# --- controller/examples ----------------------------------------------------------------


def test_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"evsed.toml", "evsed-pi.toml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_loads_and_passes_check_config(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load(path)
    assert config.connectors
    assert main(["check-config", str(path)]) == 0, capsys.readouterr().err
    assert_drivers_registered(config)
    build_real_drivers(config)


def test_pi_example_is_the_reference_build() -> None:
    config = load(ROOT / "controller" / "examples" / "evsed-pi.toml")
    assert not config.uses_simulation
    assert config.storage_path == "/var/lib/evsed/evsed.db"
    assert config.csms is not None and config.csms.password
    assert config.reader is not None and config.reader.driver == "pcsc"
    (connector,) = config.connectors
    drivers = {role: dev.driver for role, dev in connector.devices.items()}
    assert drivers == {
        "contactor": "gpio",
        "meter": "modbus",
        "vehicle": "evse-din",
        "lock": "gpio",
        "indicator": "gpio",
        "fault": "gpio",
    }
    meter = connector.devices["meter"].settings
    board = connector.devices["vehicle"].settings
    assert meter["model"] == "eastron_sdm630"
    assert meter["port"] == board["port"] == "/dev/ttyUSB0"
    assert meter.get("unit_id", 1) != board.get("unit_id", 1)
    assert "feedback_pin" in connector.devices["contactor"].settings
    assert "feedback_pin" in connector.devices["lock"].settings


def test_pi_example_pins_match_hardware_md() -> None:
    """The pin table in hardware.md lists the BCM numbers the Pi example uses."""
    config = load(ROOT / "controller" / "examples" / "evsed-pi.toml")
    used = {
        value
        for dev in config.connectors[0].devices.values()
        if dev.driver == "gpio"
        for name, value in dev.settings.items()
        if name == "pin" or name.endswith("_pin")
    }
    text = HARDWARE_MD.read_text(encoding="utf-8")
    table = {int(n) for n in re.findall(r"^\|\s*GPIO(\d+)\s*\|", text, re.MULTILINE)}
    assert used <= table, f"pins missing from the hardware.md pin table: {sorted(used - table)}"


# --- hardware.md ----------------------------------------------------------------------------


def test_hardware_md_has_config_snippets() -> None:
    kinds = {"config": 0, "device": 0}
    for _line, body in _snippets():
        data = tomllib.loads(body)
        if "station" in data:
            kinds["config"] += 1
        elif data and set(data) <= DEVICE_SNIPPET_KEYS:
            kinds["device"] += 1
    assert kinds["device"] >= 5, kinds


@pytest.mark.parametrize("snippet", _snippets(), ids=_id)
def test_hardware_md_snippet(snippet: tuple[int, str]) -> None:
    line, body = snippet
    try:
        data = tomllib.loads(body)
    except tomllib.TOMLDecodeError as exc:
        pytest.fail(f"hardware.md:{line}: not valid TOML: {exc}")
    if "station" in data:
        config = parse(data)
    elif data and set(data) <= DEVICE_SNIPPET_KEYS:
        config = parse(wrap_device_snippet(data))
    else:
        return  # some other TOML (not a config): parsing it is all we can check
    assert_drivers_registered(config)
    build_real_drivers(config)


def test_wrap_device_snippet_fills_required_roles() -> None:
    data = tomllib.loads('[connectors.meter]\ndriver = "modbus"\nmodel = "eastron_sdm120"\n')
    wrapped = wrap_device_snippet(data)
    (connector,) = wrapped["connectors"]
    assert connector["meter"]["driver"] == "modbus"
    assert connector["contactor"] == {"driver": "sim"}
    assert "meter" in data["connectors"] and "contactor" not in data["connectors"]
