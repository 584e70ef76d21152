"""Tests of the driver registry and its typed-settings helpers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from hal import registry
from hal.base import Indicator, IndicatorState
from hal.registry import (
    DRIVER_ROLES,
    REQUIRED,
    DriverConfigError,
    DriverContext,
    create_driver,
    known_drivers,
    register_driver,
    reject_unknown,
    setting_bool,
    setting_float,
    setting_int,
    setting_str,
)


class RecordingIndicator(Indicator):
    def __init__(self, settings: Mapping[str, Any], ctx: DriverContext) -> None:
        self.settings = dict(settings)
        self.ctx = ctx

    def show(self, state: IndicatorState) -> None:
        pass


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Let a test register drivers without leaking them into other tests."""
    registry.known_drivers("indicator")  # load the real modules into the saved copy first
    monkeypatch.setattr(registry, "_DRIVERS", {r: dict(d) for r, d in registry._DRIVERS.items()})
    yield


def ctx(prefix: str = "connectors.1.meter") -> DriverContext:
    return DriverContext(connector_id=1, monotonic_s=lambda: 0.0, shared={}, key_prefix=prefix)


def test_sim_is_registered_for_every_role_on_first_use() -> None:
    for role in DRIVER_ROLES:
        assert "sim" in known_drivers(role)


def test_unknown_role_lists_known_nothing() -> None:
    assert known_drivers("toaster") == []
    with pytest.raises(DriverConfigError) as info:
        create_driver("toaster", "sim", {}, ctx("connectors.1.toaster"))
    assert info.value.key == "connectors.1.toaster"
    assert "contactor" in str(info.value)


def test_unknown_driver_name_names_the_key_and_lists_known_drivers() -> None:
    with pytest.raises(DriverConfigError) as info:
        create_driver("meter", "simm", {}, ctx())
    error = info.value
    assert isinstance(error, ValueError)
    assert error.key == "connectors.1.meter.driver"
    assert "'sim'" in str(error)
    assert "did you mean 'sim'" in str(error)
    assert str(error).startswith("connectors.1.meter.driver: ")


@pytest.mark.parametrize("name", [None, 3, ["sim"], True])
def test_driver_name_of_wrong_type_is_a_config_error(name: object) -> None:
    with pytest.raises(DriverConfigError) as info:
        create_driver("meter", name, {}, ctx())
    assert info.value.key == "connectors.1.meter.driver"
    assert "'sim'" in str(info.value)


@pytest.mark.parametrize("settings", [None, "sim", ["a"], 5])
def test_settings_that_are_not_a_table_are_a_config_error(settings: object) -> None:
    with pytest.raises(DriverConfigError) as info:
        create_driver("meter", "sim", settings, ctx())
    assert info.value.key == "connectors.1.meter"


def test_registered_factory_gets_settings_and_context(isolated_registry: None) -> None:
    @register_driver("indicator", "recording")
    def factory(settings: Mapping[str, Any], ctx: DriverContext) -> RecordingIndicator:
        return RecordingIndicator(settings, ctx)

    assert "recording" in known_drivers("indicator")
    context = ctx("connectors.2.indicator")
    device = create_driver("indicator", "recording", {"colour": "red"}, context)
    assert isinstance(device, RecordingIndicator)
    assert device.settings == {"colour": "red"}
    assert device.ctx is context


def test_duplicate_registration_is_refused(isolated_registry: None) -> None:
    @register_driver("lock", "dup")
    def first(settings: Mapping[str, Any], ctx: DriverContext) -> Any:
        raise AssertionError

    with pytest.raises(ValueError, match="already registered"):

        @register_driver("lock", "dup")
        def second(settings: Mapping[str, Any], ctx: DriverContext) -> Any:
            raise AssertionError


def test_register_for_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="known roles"):
        register_driver("toaster", "x")


def test_factory_returning_the_wrong_device_is_a_bug_not_a_config_error(
    isolated_registry: None,
) -> None:
    @register_driver("contactor", "broken")
    def factory(settings: Mapping[str, Any], ctx: DriverContext) -> Any:
        return object()

    with pytest.raises(TypeError, match="expected a Contactor"):
        create_driver("contactor", "broken", {}, ctx())


def test_failing_driver_module_is_reported_when_its_driver_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "_DRIVER_MODULES", ("hal.sim", "hal.no_such_driver_module"))
    monkeypatch.setattr(registry, "_modules_loaded", False)
    monkeypatch.setattr(registry, "_IMPORT_ERRORS", {})
    with pytest.raises(DriverConfigError) as info:
        create_driver("contactor", "no-such-driver", {}, ctx("connectors.1.contactor"))
    assert "hal.no_such_driver_module" in str(info.value)
    assert "sim" in known_drivers("contactor")  # the simulator still works


# --- settings helpers --------------------------------------------------------------------


def test_setting_float_accepts_numbers_and_defaults() -> None:
    c = ctx()
    assert setting_float({"x": 3}, "x", 1.0, c) == 3.0
    assert isinstance(setting_float({"x": 3}, "x", 1.0, c), float)
    assert setting_float({"x": 2.5}, "x", 1.0, c) == 2.5
    assert setting_float({}, "x", 1.0, c) == 1.0
    assert setting_float({"x": None}, "x", 1.0, c) == 1.0
    assert setting_float({"x": 5}, "x", 1.0, c, min_value=5, max_value=5) == 5.0


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (True, "must be a number"),
        ("230", "without quotes"),
        ([1], "must be a number"),
        ({"v": 1}, "must be a number"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (-1, "at least 0"),
        (1001, "at most 1000"),
    ],
)
def test_setting_float_rejects_bad_values(value: object, fragment: str) -> None:
    with pytest.raises(DriverConfigError) as info:
        setting_float({"voltage_v": value}, "voltage_v", 230.0, ctx(), 0, 1000)
    assert info.value.key == "connectors.1.meter.voltage_v"
    assert fragment in str(info.value)


def test_required_settings() -> None:
    c = ctx()
    for helper in (setting_float, setting_int, setting_bool, setting_str):
        with pytest.raises(DriverConfigError, match="is required") as info:
            helper({}, "port", REQUIRED, c)
        assert info.value.key == "connectors.1.meter.port"


def test_setting_int() -> None:
    c = ctx()
    assert setting_int({"phases": 1}, "phases", 3, c, choices=(1, 3)) == 1
    assert setting_int({}, "phases", 3, c) == 3
    for bad in (True, 3.0, "3", [3]):
        with pytest.raises(DriverConfigError, match="whole number"):
            setting_int({"phases": bad}, "phases", 3, c)
    with pytest.raises(DriverConfigError, match="one of 1, 3"):
        setting_int({"phases": 2}, "phases", 3, c, choices=(1, 3))
    with pytest.raises(DriverConfigError, match="at least 1"):
        setting_int({"address": 0}, "address", 1, c, min_value=1, max_value=247)


@pytest.mark.parametrize("value", ["true", "yes", 1, 0, 1.0, []])
def test_setting_bool_rejects_non_booleans(value: object) -> None:
    with pytest.raises(DriverConfigError) as info:
        setting_bool({"welded": value}, "welded", False, ctx("connectors.1.contactor"))
    assert info.value.key == "connectors.1.contactor.welded"
    assert "true or false" in str(info.value)


def test_setting_bool_and_str_values() -> None:
    c = ctx()
    assert setting_bool({"x": True}, "x", False, c) is True
    assert setting_bool({}, "x", True, c) is True
    assert setting_str({"port": "/dev/ttyUSB0"}, "port", "/dev/ttyS0", c) == "/dev/ttyUSB0"
    assert setting_str({}, "port", None, c) is None
    assert setting_str({"parity": "E"}, "parity", "N", c, choices={"N", "E", "O"}) == "E"
    with pytest.raises(DriverConfigError, match="must be one of"):
        setting_str({"parity": "X"}, "parity", "N", c, choices={"N", "E", "O"})
    with pytest.raises(DriverConfigError, match="must be a string"):
        setting_str({"port": 5}, "port", None, c)
    with pytest.raises(DriverConfigError, match="must not be empty"):
        setting_str({"port": ""}, "port", None, c)


def test_reject_unknown_names_full_key_and_suggests() -> None:
    c = ctx()
    reject_unknown({"state_file": "x", "driver": "sim"}, {"state_file"}, c)  # fine
    with pytest.raises(DriverConfigError) as info:
        reject_unknown({"state_fle": "x"}, {"state_file", "initial_energy_wh"}, c)
    assert info.value.key == "connectors.1.meter.state_fle"
    assert "connectors.1.meter.state_file" in str(info.value)  # did you mean
    assert "initial_energy_wh" in str(info.value)  # lists what is accepted
    with pytest.raises(DriverConfigError) as info:
        odd: Any = {1: "x"}  # non-string keys from odd config formats
        reject_unknown(odd, {"a"}, c)
    assert info.value.key == "connectors.1.meter.1"


def test_context_key_without_prefix() -> None:
    assert DriverContext(0).key("port") == "port"
    error = DriverConfigError("reader.port", "is wrong")
    assert (error.key, error.reason, str(error)) == (
        "reader.port",
        "is wrong",
        "reader.port: is wrong",
    )
