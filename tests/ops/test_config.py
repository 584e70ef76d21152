"""TOML configuration: the example parses, every mistake is a ConfigError naming the dotted key."""

from __future__ import annotations

import copy
import string
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.config import Config, ConfigError, load, parse
from controller.ocpp16.settings import core_keys
from tests.conftest import STATION_ID, charger_config

EXAMPLE = Path(__file__).resolve().parents[2] / "controller" / "examples" / "evsed.toml"
CSMS_URL = "ws://127.0.0.1:9000/ocpp"


def base(tmp_path: Path | None = None) -> dict[str, Any]:
    """A valid document with a [csms] table (charger_config from conftest)."""
    return charger_config(tmp_path or Path("/tmp/evsed-test"), CSMS_URL)


def assert_error(data: dict[str, Any], key: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(data)
    err = info.value
    assert err.key == key, f"expected key {key!r}, got {err.key!r} ({err.message})"
    assert str(err).startswith(f"{key}: ")
    assert err.message  # says what to do
    return err


# --------------------------------------------------------------------------- valid documents


def test_example_config_parses() -> None:
    config = load(EXAMPLE)
    assert isinstance(config, Config)
    assert config.station_id == "EVSED-001"
    assert config.vendor == "evsed"
    assert config.model == "DIY-Wallbox"
    assert config.storage_path == "./evsed.db"
    assert config.csms is not None
    assert config.csms.url == CSMS_URL
    assert config.csms.ocpp_version == "1.6"
    assert config.csms.password is None
    assert config.api_host == "127.0.0.1"
    assert config.api_port == 8080
    assert config.reader is not None and config.reader.driver == "sim"
    assert len(config.connectors) == 1
    c = config.connectors[0]
    assert c.connector_id == 1
    assert c.max_current_a == 16.0
    assert set(c.devices) == {"contactor", "meter", "vehicle", "lock", "indicator", "fault"}
    assert c.devices["vehicle"].settings == {"power_w": 11000, "phases": 3}
    assert c.devices["meter"].key == "connectors.1.meter"
    assert config.ocpp_overrides == {"MeterValueSampleInterval": 60, "HeartbeatInterval": 300}
    assert config.uses_simulation


def test_charger_config_parses(tmp_path: Path) -> None:
    config = parse(charger_config(tmp_path, CSMS_URL, connectors=3, password="s3cret"))
    assert config.station_id == STATION_ID
    assert config.storage_path == str(tmp_path / "evsed.db")
    assert config.csms is not None and config.csms.password == "s3cret"
    assert config.csms.reconnect_min_s == 0.05
    assert config.csms.reconnect_max_s == 0.2
    assert config.csms.response_timeout_s == 2.0
    assert [c.connector_id for c in config.connectors] == [1, 2, 3]
    assert config.api_port == 0


def test_standalone_without_csms(tmp_path: Path) -> None:
    data = charger_config(tmp_path, None)
    data["standalone"] = {"id_tags": ["04a1b2c3", "DEADBEEF"], "free_vend": False}
    config = parse(data)
    assert config.csms is None
    assert config.standalone.id_tags == ("04A1B2C3", "DEADBEEF")  # upper-cased
    assert config.standalone.free_vend is False


def test_documented_defaults() -> None:
    """README configuration reference: the defaults of optional keys."""
    minimal = {
        "station": {"id": "CP1"},
        "csms": {"url": "wss://csms.example.com/ocpp"},
        "connectors": [
            {"contactor": {"driver": "sim"}, "meter": {"driver": "sim"}, "vehicle": {"driver": "x"}}
        ],
    }
    config = parse(minimal)
    assert config.vendor == "evsed"
    assert config.model == "evsed-sim"
    assert config.serial_number is None and config.firmware_version is None
    assert config.storage_path == "/var/lib/evsed/evsed.db"
    assert config.tick_interval_s == 1.0
    assert config.csms is not None
    assert (config.csms.reconnect_min_s, config.csms.reconnect_max_s) == (1.0, 60.0)
    assert config.csms.response_timeout_s == 30.0
    assert config.standalone.id_tags == () and config.standalone.free_vend is False
    assert (config.api_host, config.api_port) == ("127.0.0.1", 8080)
    assert config.reader is None
    assert config.connectors[0].max_current_a == 32.0
    assert config.log_level == "INFO"
    assert config.ocpp_overrides == {}
    assert config.uses_simulation  # the contactor is simulated


def test_accepted_edge_values() -> None:
    data = base()
    data["station"]["id"] = "a" * 48
    data["station"]["vendor"] = "v" * 20
    data["station"]["model"] = "m" * 20
    data["csms"]["password"] = "p" * 40
    data["csms"]["reconnect_min_s"] = 5
    data["csms"]["reconnect_max_s"] = 5
    data["api"]["host"] = "::1"
    data["logging"] = {"level": "debug"}
    data["connectors"][0]["max_current_a"] = 6
    data["connectors"] = data["connectors"] * 8
    data["ocpp"] = {
        "LocalAuthorizeOffline": False,
        "HeartbeatInterval": "120",
        "MeterValuesSampledData": "Energy.Active.Import.Register,Voltage",
    }
    config = parse(data)
    assert config.log_level == "DEBUG"
    assert len(config.connectors) == 8
    assert config.connectors[0].max_current_a == 6.0
    data["api"]["host"] = "localhost"
    assert parse(data).api_host == "localhost"


# --------------------------------------------------------------------------- broken documents


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        node[last] = value

    return mutate


def _del(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        del node[last]

    return mutate


def _many_connectors(n: int) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        data["connectors"] = [copy.deepcopy(data["connectors"][0]) for _ in range(n)]

    return mutate


BROKEN: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("missing [station]", _del("station"), "station"),
    ("station not a table", _set("station", "CP-1"), "station"),
    ("station.id missing", _del("station.id"), "station.id"),
    ("station.id with a slash", _set("station.id", "CP/1"), "station.id"),
    ("station.id with a space", _set("station.id", "CP 1"), "station.id"),
    ("station.id empty", _set("station.id", ""), "station.id"),
    ("station.id too long", _set("station.id", "a" * 49), "station.id"),
    ("station.id a number", _set("station.id", 17), "station.id"),
    ("vendor > 20 chars", _set("station.vendor", "v" * 21), "station.vendor"),
    ("vendor not a string", _set("station.vendor", ["evsed"]), "station.vendor"),
    ("station unknown key", _set("station.colour", "red"), "station.colour"),
    ("tick_interval_s too small", _set("station.tick_interval_s", 0.01), "station.tick_interval_s"),
    ("storage not a string", _set("station.storage", 5), "station.storage"),
    ("csms not a table", _set("csms", "ws://x"), "csms"),
    ("csms.url missing", _del("csms.url"), "csms.url"),
    ("csms.url http scheme", _set("csms.url", "http://127.0.0.1:9000/ocpp"), "csms.url"),
    ("csms.url no scheme", _set("csms.url", "127.0.0.1:9000/ocpp"), "csms.url"),
    ("csms.url no host", _set("csms.url", "ws:///ocpp"), "csms.url"),
    ("csms.url not a string", _set("csms.url", 9000), "csms.url"),
    ("ocpp_version 2.1", _set("csms.ocpp_version", "2.1"), "csms.ocpp_version"),
    ("ocpp_version empty list", _set("csms.ocpp_version", []), "csms.ocpp_version"),
    ("ocpp_version twice", _set("csms.ocpp_version", ["1.6", "1.6"]), "csms.ocpp_version"),
    ("ocpp_version list of numbers", _set("csms.ocpp_version", [1.6]), "csms.ocpp_version"),
    ("ocpp_version a float", _set("csms.ocpp_version", 1.6), "csms.ocpp_version"),
    ("password > 40 chars", _set("csms.password", "p" * 41), "csms.password"),
    ("password empty", _set("csms.password", ""), "csms.password"),
    ("reconnect_max < min", _set("csms.reconnect_max_s", 0.01), "csms.reconnect_max_s"),
    ("reconnect_min a string", _set("csms.reconnect_min_s", "1"), "csms.reconnect_min_s"),
    ("response_timeout 0", _set("csms.response_timeout_s", 0), "csms.response_timeout_s"),
    ("csms unknown key", _set("csms.user", "me"), "csms.user"),
    ("unknown top-level key", _set("stations", {}), "stations"),
    ("unknown top-level key 2", _set("connector", []), "connector"),
    (
        "unknown key in a connector",
        _set("connectors.0.max_current", 16),
        "connectors.1.max_current",
    ),
    ("missing contactor", _del("connectors.0.contactor"), "connectors.1.contactor"),
    ("missing meter", _del("connectors.0.meter"), "connectors.1.meter"),
    ("missing vehicle", _del("connectors.0.vehicle"), "connectors.1.vehicle"),
    ("device not a table", _set("connectors.0.lock", "sim"), "connectors.1.lock"),
    ("driver missing", _set("connectors.0.meter", {"x": 1}), "connectors.1.meter.driver"),
    ("driver not a string", _set("connectors.0.meter.driver", 1), "connectors.1.meter.driver"),
    ("driver a table", _set("connectors.0.fault.driver", {}), "connectors.1.fault.driver"),
    ("reader driver a bool", _set("reader.driver", True), "reader.driver"),
    ("reader not a table", _set("reader", "sim"), "reader"),
    (
        "max_current_a too low",
        _set("connectors.0.max_current_a", 5.9),
        "connectors.1.max_current_a",
    ),
    (
        "max_current_a too high",
        _set("connectors.0.max_current_a", 81),
        "connectors.1.max_current_a",
    ),
    (
        "max_current_a a bool",
        _set("connectors.0.max_current_a", True),
        "connectors.1.max_current_a",
    ),
    (
        "max_current_a a string",
        _set("connectors.0.max_current_a", "16"),
        "connectors.1.max_current_a",
    ),
    (
        "max_current_a nan",
        _set("connectors.0.max_current_a", float("nan")),
        "connectors.1.max_current_a",
    ),
    (
        "max_current_a inf",
        _set("connectors.0.max_current_a", float("inf")),
        "connectors.1.max_current_a",
    ),
    ("ocpp not a table", _set("ocpp", ["HeartbeatInterval"]), "ocpp"),
    ("ocpp unknown key", _set("ocpp.HeartBeatInterval", 60), "ocpp.HeartBeatInterval"),
    ("ocpp read-only key", _set("ocpp.NumberOfConnectors", 2), "ocpp.NumberOfConnectors"),
    (
        "ocpp read-only key 2",
        _set("ocpp.GetConfigurationMaxKeys", 10),
        "ocpp.GetConfigurationMaxKeys",
    ),
    ("ocpp int out of range", _set("ocpp.HeartbeatInterval", -1), "ocpp.HeartbeatInterval"),
    ("ocpp int not a number", _set("ocpp.HeartbeatInterval", "often"), "ocpp.HeartbeatInterval"),
    ("ocpp int is a bool", _set("ocpp.HeartbeatInterval", True), "ocpp.HeartbeatInterval"),
    ("ocpp int is a float", _set("ocpp.HeartbeatInterval", 60.5), "ocpp.HeartbeatInterval"),
    ("ocpp bool bad", _set("ocpp.LocalPreAuthorize", "yes"), "ocpp.LocalPreAuthorize"),
    ("ocpp bool as int", _set("ocpp.LocalPreAuthorize", 1), "ocpp.LocalPreAuthorize"),
    (
        "ocpp value a list",
        _set("ocpp.MeterValuesSampledData", ["Voltage"]),
        "ocpp.MeterValuesSampledData",
    ),
    (
        "ocpp bad measurand",
        _set("ocpp.MeterValuesSampledData", "SoC"),
        "ocpp.MeterValuesSampledData",
    ),
    ("ocpp ping negative", _set("ocpp.WebSocketPingInterval", -5), "ocpp.WebSocketPingInterval"),
    ("id_tags a string", _set("standalone.id_tags", "04A1B2C3"), "standalone.id_tags"),
    ("id_tags with a number", _set("standalone.id_tags", [1234]), "standalone.id_tags"),
    ("id_tags too long", _set("standalone.id_tags", ["0" * 21]), "standalone.id_tags"),
    ("id_tags empty tag", _set("standalone.id_tags", [""]), "standalone.id_tags"),
    ("free_vend a string", _set("standalone.free_vend", "yes"), "standalone.free_vend"),
    ("standalone unknown key", _set("standalone.cards", []), "standalone.cards"),
    ("api.host not an IP", _set("api.host", "my-pi.local"), "api.host"),
    ("api.host with port", _set("api.host", "127.0.0.1:8080"), "api.host"),
    ("api.host a number", _set("api.host", 127), "api.host"),
    ("api.port too high", _set("api.port", 70000), "api.port"),
    ("api.port negative", _set("api.port", -1), "api.port"),
    ("api unknown key", _set("api.token", "x"), "api.token"),
    ("logging.level bad", _set("logging.level", "VERBOSE"), "logging.level"),
    ("logging.level a number", _set("logging.level", 10), "logging.level"),
    ("logging unknown key", _set("logging.file", "/tmp/x"), "logging.file"),
    ("logging not a table", _set("logging", "INFO"), "logging"),
    ("> 8 connectors", _many_connectors(9), "connectors"),
    ("no connectors", _set("connectors", []), "connectors"),
    ("connectors missing", _del("connectors"), "connectors"),
    ("connectors not a list", _set("connectors", {"contactor": {"driver": "sim"}}), "connectors"),
    ("connector not a table", _set("connectors", ["sim"]), "connectors.1"),
]


@pytest.mark.parametrize(("mutate", "key"), [pytest.param(m, k, id=name) for name, m, k in BROKEN])
def test_broken_document_names_the_key(mutate: Callable[[dict[str, Any]], None], key: str) -> None:
    data = base()
    data.setdefault("standalone", {})
    data.setdefault("logging", {})
    mutate(data)
    assert_error(data, key)


def test_error_in_second_connector_names_its_index() -> None:
    data = base()
    data["connectors"] = [copy.deepcopy(data["connectors"][0]) for _ in range(3)]
    del data["connectors"][1]["meter"]
    assert_error(data, "connectors.2.meter")
    data["connectors"][1]["meter"] = {"driver": "sim"}
    data["connectors"][2]["max_current_a"] = 100
    assert_error(data, "connectors.3.max_current_a")


def test_ocpp_connector_phase_rotation_uses_connector_count() -> None:
    data = base()
    data["ocpp"] = {"ConnectorPhaseRotation": "1.RST"}
    assert parse(data).ocpp_overrides["ConnectorPhaseRotation"] == "1.RST"
    data["ocpp"] = {"ConnectorPhaseRotation": "one.RST"}
    assert_error(data, "ocpp.ConnectorPhaseRotation")


def test_every_writable_core_key_is_accepted_with_its_default() -> None:
    data = base()
    data["ocpp"] = {k.name: k.default for k in core_keys(1) if not k.readonly}
    parse(data)
    for k in core_keys(1):
        if k.readonly:
            data["ocpp"] = {k.name: k.default}
            assert_error(data, f"ocpp.{k.name}")


def test_model_too_long_names_station_model() -> None:
    data = base()
    data["station"]["model"] = "m" * 21
    assert_error(data, "station.model")


def test_station_id_with_trailing_newline_rejected() -> None:
    data = base()
    data["station"]["id"] = "CP-1\n"
    assert_error(data, "station.id")


def test_csms_url_bad_ipv6_is_config_error() -> None:
    data = base()
    data["csms"]["url"] = "ws://[abc/ocpp"
    assert_error(data, "csms.url")


def test_ocpp_int_with_double_minus_is_config_error() -> None:
    data = base()
    data["ocpp"] = {"HeartbeatInterval": "--5"}
    assert_error(data, "ocpp.HeartbeatInterval")


# --------------------------------------------------------------------------- load()


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "nope.toml")
    assert info.value.key == "file"
    assert "nope.toml" in info.value.message


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    assert info.value.key == "file"


@pytest.mark.parametrize(
    "text",
    [
        "[station\nid = 'x'\n",
        "station.id = \n",
        "[station]\nid = 'a'\nid = 'b'\n",
        "[[connectors]]\n[connectors]\n",
        "= 1\n",
    ],
)
def test_load_invalid_toml(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.key == "file"
    assert "not valid TOML" in info.value.message


def test_load_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b"[station]\nid = '\xff\xfe'\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.key == "file"


def test_load_valid_file_reports_validation_key(tmp_path: Path) -> None:
    path = tmp_path / "evsed.toml"
    text = EXAMPLE.read_text(encoding="utf-8").replace(
        'ocpp_version = "1.6"', 'ocpp_version = "2.1"'
    )
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.key == "csms.ocpp_version"


# --------------------------------------------------------------------------- fuzzing

_KEYS = [
    "station",
    "csms",
    "standalone",
    "api",
    "reader",
    "connectors",
    "ocpp",
    "logging",
    "id",
    "vendor",
    "model",
    "storage",
    "url",
    "password",
    "ocpp_version",
    "reconnect_min_s",
    "reconnect_max_s",
    "id_tags",
    "free_vend",
    "host",
    "port",
    "driver",
    "max_current_a",
    "contactor",
    "meter",
    "vehicle",
    "lock",
    "level",
    "HeartbeatInterval",
    "LocalPreAuthorize",
    "MeterValuesSampledData",
    "NumberOfConnectors",
    "AuthorizationKey",
]
_scalars = st.one_of(
    st.text(alphabet=string.printable, max_size=30),
    st.sampled_from(["sim", "ws://h/ocpp", "1.6", "127.0.0.1", "INFO", "true", "60", "-1"]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True),
    st.booleans(),
    st.datetimes(max_value=datetime(9999, 1, 1)),
)
_values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=8), children, max_size=5),
    ),
    max_leaves=25,
)


def _check(data: dict[str, Any]) -> None:
    try:
        result = parse(data)
    except ConfigError as exc:
        assert type(exc) is ConfigError
        assert isinstance(exc.key, str)  # "" only for a quoted empty top-level key
        assert exc.key or "" in data
    else:
        assert isinstance(result, Config)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=8), _values, max_size=8))
def test_random_documents_raise_only_config_error(data: dict[str, Any]) -> None:
    _check(data)


@st.composite
def _mutated_valid(draw: st.DrawFn) -> dict[str, Any]:
    """A valid document with a few values replaced by random ones (reaches deep checks)."""
    data = base()
    data["standalone"] = {"id_tags": ["04A1B2C3"], "free_vend": False}
    data["logging"] = {"level": "INFO"}
    for _ in range(draw(st.integers(1, 3))):
        node: Any = data
        while True:
            if isinstance(node, dict) and node:
                name = draw(st.sampled_from(sorted(node)))
                if isinstance(node[name], dict | list) and draw(st.booleans()):
                    node = node[name]
                    continue
                node[name] = draw(_values)
            elif isinstance(node, list) and node:
                index = draw(st.integers(0, len(node) - 1))
                if isinstance(node[index], dict | list) and draw(st.booleans()):
                    node = node[index]
                    continue
                node[index] = draw(_values)
            break
    return data


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(_mutated_valid())
def test_mutated_valid_documents_raise_only_config_error(data: dict[str, Any]) -> None:
    _check(data)


# --------------------------------------------------------------------------- phase switch


def test_phase_switch_defaults_and_settings() -> None:
    data = base()
    cfg = parse(data)
    assert not cfg.connectors[0].has_phase_switch
    data["connectors"][0]["phase_switch"] = {"driver": "sim"}
    cc = parse(data).connectors[0]
    assert cc.has_phase_switch
    assert (cc.phase_switch_pause_s, cc.phase_switch_settle_s) == (3.0, 1.0)
    data["connectors"][0]["phase_switch"] = {"driver": "gpio", "pin": 23, "pause_s": 10}
    data["connectors"][0]["line"] = 2  # the line left on one phase
    cc = parse(data).connectors[0]
    assert cc.phase_switch_pause_s == 10.0 and cc.line == 2
    # pause_s / settle_s are the controller's, not passed to the driver.
    assert cc.devices["phase_switch"].settings == {"pin": 23}


@pytest.mark.parametrize(
    ("section", "extra", "key"),
    [
        ({"driver": "sim", "pause_s": 0.5}, {}, "connectors.1.phase_switch.pause_s"),
        ({"driver": "sim", "pause_s": "3"}, {}, "connectors.1.phase_switch.pause_s"),
        ({"driver": "sim", "settle_s": 11}, {}, "connectors.1.phase_switch.settle_s"),
        ({"driver": "sim"}, {"phases": 1}, "connectors.1.phase_switch"),
        ({"pin": 23}, {}, "connectors.1.phase_switch.driver"),
        ("gpio", {}, "connectors.1.phase_switch"),
    ],
)
def test_phase_switch_errors_name_the_key(section: Any, extra: dict[str, Any], key: str) -> None:
    data = base()
    data["connectors"][0]["phase_switch"] = section
    data["connectors"][0].update(extra)
    assert_error(data, key)


def test_connector_switch_key_follows_the_config() -> None:
    keys = {k.name: k for k in core_keys(1, phase_switch=True)}
    assert keys["ConnectorSwitch3to1PhaseSupported"].default == "true"
    assert keys["ConnectorSwitch3to1PhaseSupported"].readonly
    keys = {k.name: k for k in core_keys(1)}
    assert keys["ConnectorSwitch3to1PhaseSupported"].default == "false"
