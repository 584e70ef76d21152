"""OCPP configuration keys (OCPP 1.6 section 9.1): defaults, ChangeConfiguration, persistence."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.core.policy import ChargingPolicy
from controller.ocpp16 import policy as policy16
from controller.ocpp16.settings import (
    MAX_CSL_ITEMS,
    SUPPORTED_MEASURANDS,
    InvalidValue,
    KeyDef,
    Settings,
    core_keys,
    normalise,
)
from controller.storage.store import Store

# Every Core key with its documented default for a 2-connector station.
DEFAULTS_2 = {
    "AllowOfflineTxForUnknownId": "false",
    "AuthorizationCacheEnabled": "true",
    "AuthorizeRemoteTxRequests": "false",
    "ClockAlignedDataInterval": "0",
    "ConnectionTimeOut": "60",
    "ConnectorPhaseRotation": "1.Unknown,2.Unknown",
    "ConnectorPhaseRotationMaxLength": "3",
    "GetConfigurationMaxKeys": "64",
    "HeartbeatInterval": "300",
    "LocalAuthListEnabled": "true",
    "LocalAuthListMaxLength": "1000",
    "LocalAuthorizeOffline": "true",
    "LocalPreAuthorize": "false",
    "MaxEnergyOnInvalidId": "0",
    "MeterValuesAlignedData": "Energy.Active.Import.Register",
    "MeterValuesAlignedDataMaxLength": "10",
    "MeterValuesSampledData": "Energy.Active.Import.Register,Power.Active.Import",
    "MeterValuesSampledDataMaxLength": "10",
    "MeterValueSampleInterval": "60",
    "MinimumStatusDuration": "0",
    "NumberOfConnectors": "2",
    "ReserveConnectorZeroSupported": "true",  # 9.3.1, Reservation profile
    "ResetRetries": "3",
    "SendLocalListMaxLength": "1000",
    "StopTransactionOnEVSideDisconnect": "true",
    "StopTransactionOnInvalidId": "true",
    "StopTxnAlignedData": "",
    "StopTxnAlignedDataMaxLength": "10",
    "StopTxnSampledData": "Energy.Active.Import.Register",
    "StopTxnSampledDataMaxLength": "10",
    "SupportedFeatureProfiles": (
        "Core,FirmwareManagement,LocalAuthListManagement,RemoteTrigger,SmartCharging,Reservation"
    ),
    "SupportedFeatureProfilesMaxLength": "6",
    "TransactionMessageAttempts": "5",
    "TransactionMessageRetryInterval": "30",
    "UnlockConnectorOnEVSideDisconnect": "true",
    "WebSocketPingInterval": "60",
    "AuthorizationKey": "",
    # Smart Charging (9.4)
    "ChargeProfileMaxStackLevel": "10",
    "ChargingScheduleAllowedChargingRateUnit": "Current,Power",
    "ChargingScheduleMaxPeriods": "48",
    "ConnectorSwitch3to1PhaseSupported": "false",
    "MaxChargingProfilesInstalled": "20",
    # Security whitepaper, section 7 (+ SupportedFileTransferProtocols, 1.6 N01 remark).
    "AdditionalRootCertificateCheck": "false",
    "CertificateSignedMaxChainSize": "10000",
    "CertificateStoreMaxLength": "20",
    "CpoName": "",
    "SecurityProfile": "1",
    "SupportedFileTransferProtocols": "HTTP,HTTPS,FTP,FTPS",
}

# Keys that OCPP 1.6 section 9.1 marks as required for the Core profile.
REQUIRED_CORE = {
    "AuthorizeRemoteTxRequests",
    "ClockAlignedDataInterval",
    "ConnectionTimeOut",
    "ConnectorPhaseRotation",
    "GetConfigurationMaxKeys",
    "HeartbeatInterval",
    "LocalAuthorizeOffline",
    "LocalPreAuthorize",
    "MeterValuesAlignedData",
    "MeterValuesSampledData",
    "MeterValueSampleInterval",
    "NumberOfConnectors",
    "ResetRetries",
    "StopTransactionOnEVSideDisconnect",
    "StopTransactionOnInvalidId",
    "StopTxnAlignedData",
    "StopTxnSampledData",
    "SupportedFeatureProfiles",
    "TransactionMessageAttempts",
    "TransactionMessageRetryInterval",
    "UnlockConnectorOnEVSideDisconnect",
}

READ_ONLY = {
    "AdditionalRootCertificateCheck",
    "CertificateSignedMaxChainSize",
    "CertificateStoreMaxLength",
    "SupportedFileTransferProtocols",
    "ChargeProfileMaxStackLevel",
    "ChargingScheduleAllowedChargingRateUnit",
    "ChargingScheduleMaxPeriods",
    "ConnectorSwitch3to1PhaseSupported",
    "MaxChargingProfilesInstalled",
    "ConnectorPhaseRotationMaxLength",
    "GetConfigurationMaxKeys",
    "LocalAuthListMaxLength",
    "MeterValuesAlignedDataMaxLength",
    "MeterValuesSampledDataMaxLength",
    "NumberOfConnectors",
    "ReserveConnectorZeroSupported",
    "SendLocalListMaxLength",
    "StopTxnAlignedDataMaxLength",
    "StopTxnSampledDataMaxLength",
    "SupportedFeatureProfiles",
    "SupportedFeatureProfilesMaxLength",
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "x.db")
    yield s
    s.close()


def make(store: Store, connectors: int = 2, overrides: dict[str, object] | None = None) -> Settings:
    return Settings(store, core_keys(connectors), overrides)


def key(name: str, connectors: int = 1) -> KeyDef:
    return {k.name: k for k in core_keys(connectors)}[name]


# --------------------------------------------------------------------------- definitions


def test_defaults_for_every_core_key(store: Store) -> None:
    s = make(store)
    assert {k.name for k in s.keys()} == set(DEFAULTS_2)
    for name, default in DEFAULTS_2.items():
        assert s.get(name) == default, name
    assert REQUIRED_CORE <= set(DEFAULTS_2)


def test_typed_getters(store: Store) -> None:
    s = make(store)
    assert s.get_int("HeartbeatInterval") == 300
    assert s.get_bool("LocalAuthorizeOffline") is True
    assert s.get_bool("AllowOfflineTxForUnknownId") is False
    assert s.get_csl("MeterValuesSampledData") == [
        "Energy.Active.Import.Register",
        "Power.Active.Import",
    ]
    assert s.get_csl("StopTxnAlignedData") == []
    assert s.get_csl("SupportedFeatureProfiles") == [
        "Core",
        "FirmwareManagement",
        "LocalAuthListManagement",
        "RemoteTrigger",
        "SmartCharging",
        "Reservation",
    ]


def test_connector_count_shapes_defaults(store: Store) -> None:
    s = make(store, connectors=1)
    assert s.get("NumberOfConnectors") == "1"
    assert s.get("ConnectorPhaseRotation") == "1.Unknown"
    assert s.get("ConnectorPhaseRotationMaxLength") == "2"


def test_flags(store: Store) -> None:
    s = make(store)
    assert {k.name for k in s.keys() if k.readonly} == READ_ONLY
    assert {k.name for k in s.keys() if k.write_only} == {"AuthorizationKey"}
    # AuthorizationKey is Accepted and applied by reconnecting (security whitepaper A01).
    assert {k.name for k in s.keys() if k.reboot_required} == {"WebSocketPingInterval"}
    auth = s.key("AuthorizationKey")
    assert auth is not None and auth.write_only
    assert s.key("NoSuchKey") is None
    for k in s.keys():
        normalise(k, k.default)  # every default passes its own validation


# --------------------------------------------------------------------------- change()


def test_change_unknown_key_not_supported(store: Store) -> None:
    s = make(store)
    assert s.change("NoSuchKey", "1") == "NotSupported"
    assert s.change("heartbeatinterval", "10") == "NotSupported"  # names are case-sensitive
    assert store.settings_with_prefix("cfg.") == {}


@pytest.mark.parametrize("name", sorted(READ_ONLY))
def test_change_read_only_rejected(store: Store, name: str) -> None:
    s = make(store)
    before = s.get(name)
    assert s.change(name, before) == "Rejected"
    assert s.change(name, "7") == "Rejected"
    assert s.get(name) == before
    assert store.get_setting("cfg." + name) is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HeartbeatInterval", "abc"),
        ("HeartbeatInterval", "-1"),
        ("HeartbeatInterval", "86401"),
        ("HeartbeatInterval", "1.5"),
        ("HeartbeatInterval", ""),
        ("HeartbeatInterval", "+5"),
        ("MeterValueSampleInterval", "1e3"),
        ("TransactionMessageAttempts", "0"),
        ("TransactionMessageRetryInterval", "0"),
        ("ResetRetries", "11"),
        ("ConnectionTimeOut", "3601"),
        ("LocalPreAuthorize", "yes"),
        ("LocalPreAuthorize", "1"),
        ("LocalPreAuthorize", ""),
        ("AuthorizationCacheEnabled", "truee"),
        ("MeterValuesSampledData", "SoC"),
        ("MeterValuesSampledData", "Energy.Active.Import.Register,Temperature"),
        ("MeterValuesSampledData", "NotAMeasurand"),
        ("StopTxnSampledData", "energy.active.import.register"),
        ("MeterValuesAlignedData", ",".join(["Voltage"] * (MAX_CSL_ITEMS + 1))),
        ("ConnectorPhaseRotation", "RST"),
        ("ConnectorPhaseRotation", "1.XYZ"),
        ("ConnectorPhaseRotation", "a.RST"),
        ("AuthorizationKey", "0" * 41),
        ("HeartbeatInterval", "1" * 501),
        ("WebSocketPingInterval", "-1"),  # 9.1.34: negative values are not allowed
        ("WebSocketPingInterval", "-60"),
    ],
)
def test_change_bad_value_rejected(store: Store, name: str, value: str) -> None:
    s = make(store)
    before = s.get(name)
    calls: list[tuple[str, str]] = []
    s.on_change(lambda n, v: calls.append((n, v)))
    assert s.change(name, value) == "Rejected"
    assert s.get(name) == before
    assert store.get_setting("cfg." + name) is None
    assert calls == []


@pytest.mark.parametrize("value", [None, 60, True, ["60"]])
def test_change_non_string_value_rejected(store: Store, value: object) -> None:
    s = make(store)
    assert s.change("HeartbeatInterval", value) == "Rejected"  # type: ignore[arg-type]
    assert s.get("HeartbeatInterval") == "300"


@pytest.mark.parametrize(
    ("name", "value", "canonical", "result"),
    [
        ("HeartbeatInterval", "60", "60", "Accepted"),
        ("HeartbeatInterval", " 0042 ", "42", "Accepted"),
        ("HeartbeatInterval", "0", "0", "Accepted"),
        ("HeartbeatInterval", "86400", "86400", "Accepted"),
        ("MeterValueSampleInterval", "-0", "0", "Accepted"),
        ("LocalPreAuthorize", "TRUE", "true", "Accepted"),
        ("LocalPreAuthorize", " False ", "false", "Accepted"),
        ("AuthorizeRemoteTxRequests", "True", "true", "Accepted"),
        (
            "MeterValuesSampledData",
            " Voltage , Current.Import ,,Frequency ",
            "Voltage,Current.Import,Frequency",
            "Accepted",
        ),
        ("MeterValuesSampledData", "Voltage.L1,Current.Import.L2", None, "Accepted"),
        ("StopTxnAlignedData", "", "", "Accepted"),
        ("ConnectorPhaseRotation", "0.RST, 1.TRS,2.NotApplicable", None, "Accepted"),
        ("WebSocketPingInterval", "0", "0", "RebootRequired"),
        ("WebSocketPingInterval", "30", "30", "RebootRequired"),
        ("AuthorizationKey", "00112233445566778899aabbccddeeff", None, "Accepted"),
    ],
)
def test_change_good_value(
    store: Store, name: str, value: str, canonical: str | None, result: str
) -> None:
    s = make(store)
    assert s.change(name, value) == result
    expected = (
        canonical
        if canonical is not None
        else ",".join(v.strip() for v in value.split(",") if v.strip())
    )
    assert s.get(name) == expected
    assert store.get_setting("cfg." + name) == expected


def test_every_supported_measurand_accepted(store: Store) -> None:
    s = make(store)
    for m in sorted(SUPPORTED_MEASURANDS):
        for name in (
            "MeterValuesSampledData",
            "MeterValuesAlignedData",
            "StopTxnSampledData",
            "StopTxnAlignedData",
        ):
            assert s.change(name, m) == "Accepted", (name, m)
    full = ",".join(sorted(SUPPORTED_MEASURANDS))
    assert s.change("MeterValuesSampledData", full) == "Accepted"
    assert s.get_csl("MeterValuesSampledData") == sorted(SUPPORTED_MEASURANDS)
    ten = ",".join(["Voltage"] * MAX_CSL_ITEMS)
    assert s.change("MeterValuesSampledData", ten) == "Accepted"


@pytest.mark.parametrize(
    "measurand",
    ["SoC", "Temperature", "RPM", "Power.Factor", "Energy.Active.Import.Interval"],
)
def test_unsupported_measurands_rejected(store: Store, measurand: str) -> None:
    """README: anything outside the supported list is Rejected (9.1.17)."""
    s = make(store)
    assert s.change("MeterValuesSampledData", measurand) == "Rejected"
    assert s.change("StopTxnSampledData", f"Energy.Active.Import.Register,{measurand}") == (
        "Rejected"
    )


@pytest.mark.parametrize("value", ["--5", "²", "-²"])
def test_change_odd_integer_text_rejected(store: Store, value: str) -> None:
    s = make(store)
    assert s.change("HeartbeatInterval", value) == "Rejected"


# --------------------------------------------------------------------------- normalise()


def test_normalise_kinds() -> None:
    assert normalise(key("LocalPreAuthorize"), "tRuE") == "true"
    with pytest.raises(InvalidValue):
        normalise(key("LocalPreAuthorize"), "on")
    assert normalise(key("HeartbeatInterval"), "007") == "7"
    with pytest.raises(InvalidValue):
        normalise(key("HeartbeatInterval"), "seven")
    assert normalise(key("StopTxnSampledData"), "Voltage,,Frequency,") == "Voltage,Frequency"
    assert (
        normalise(key("AuthorizationKey"), " spaced key 0123 ") == " spaced key 0123 "
    )  # verbatim
    with pytest.raises(InvalidValue):
        normalise(key("HeartbeatInterval"), 5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- persistence


def test_values_persist_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    first = Store(path)
    s = make(first)
    assert s.change("HeartbeatInterval", "120") == "Accepted"
    assert s.change("LocalPreAuthorize", "TRUE") == "Accepted"
    assert s.change("MeterValuesSampledData", "Voltage, Frequency") == "Accepted"
    assert s.change("AuthorizationKey", "aabbccddeeff00112233") == "Accepted"
    s.set_internal("WebSocketPingInterval", "15")
    first.close()

    second = Store(path)
    try:
        again = make(second)
        assert again.get("HeartbeatInterval") == "120"
        assert again.get_bool("LocalPreAuthorize") is True
        assert again.get("MeterValuesSampledData") == "Voltage,Frequency"
        assert again.get("AuthorizationKey") == "aabbccddeeff00112233"
        assert again.get_int("WebSocketPingInterval") == 15
        assert again.get("ResetRetries") == "3"  # untouched keys keep their defaults
    finally:
        second.close()


def test_rejected_change_is_not_persisted(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    first = Store(path)
    s = make(first)
    assert s.change("HeartbeatInterval", "100") == "Accepted"
    assert s.change("HeartbeatInterval", "-100") == "Rejected"
    first.close()
    second = Store(path)
    try:
        assert make(second).get("HeartbeatInterval") == "100"
    finally:
        second.close()


def test_toml_overrides_apply_below_db_values(store: Store) -> None:
    overrides: dict[str, object] = {
        "HeartbeatInterval": 900,
        "MeterValueSampleInterval": "30",
        "LocalPreAuthorize": True,
        "StopTransactionOnInvalidId": False,
    }
    s = make(store, overrides=overrides)
    assert s.get("HeartbeatInterval") == "900"
    assert s.get("MeterValueSampleInterval") == "30"
    assert s.get("LocalPreAuthorize") == "true"
    assert s.get("StopTransactionOnInvalidId") == "false"
    assert s.change("HeartbeatInterval", "45") == "Accepted"
    # A restart with the same TOML: the CSMS-set value wins, other overrides still apply.
    again = make(store, overrides=overrides)
    assert again.get("HeartbeatInterval") == "45"
    assert again.get("MeterValueSampleInterval") == "30"
    assert again.get_bool("LocalPreAuthorize") is True


def test_invalid_overrides_raise(store: Store) -> None:
    with pytest.raises(InvalidValue):
        make(store, overrides={"NoSuchKey": 1})
    with pytest.raises(InvalidValue):
        make(store, overrides={"HeartbeatInterval": -1})


def test_invalid_stored_value_is_ignored(store: Store) -> None:
    store.set_setting("cfg.HeartbeatInterval", "not-a-number")
    store.set_setting("cfg.LocalPreAuthorize", "true")
    store.set_setting("cfg.RetiredKey", "1")  # a key this version no longer knows
    store.set_setting("other.HeartbeatInterval", "5")  # outside the settings prefix
    s = make(store, overrides={"HeartbeatInterval": 600})
    assert s.get("HeartbeatInterval") == "600"
    assert s.get("LocalPreAuthorize") == "true"


# --------------------------------------------------------------------------- listeners


def test_listeners_called_on_change(store: Store) -> None:
    s = make(store)
    a: list[tuple[str, str]] = []
    b: list[tuple[str, str]] = []
    s.on_change(lambda n, v: a.append((n, v)))
    s.on_change(lambda n, v: b.append((n, v)))
    assert s.change("HeartbeatInterval", " 0120") == "Accepted"
    assert s.change("WebSocketPingInterval", "10") == "RebootRequired"
    assert s.change("NoSuchKey", "1") == "NotSupported"
    assert s.change("NumberOfConnectors", "4") == "Rejected"
    assert a == [("HeartbeatInterval", "120"), ("WebSocketPingInterval", "10")]
    assert b == a


def test_listener_sees_the_new_value(store: Store) -> None:
    s = make(store)
    seen: list[int] = []
    s.on_change(lambda n, v: seen.append(s.get_int(n)))
    s.change("MeterValueSampleInterval", "15")
    assert seen == [15]


def test_set_internal(store: Store) -> None:
    s = make(store)
    calls: list[tuple[str, str]] = []
    s.on_change(lambda n, v: calls.append((n, v)))
    s.set_internal("HeartbeatInterval", "300")  # unchanged: no write, no notification
    assert calls == [] and store.get_setting("cfg.HeartbeatInterval") is None
    s.set_internal("HeartbeatInterval", "240")
    assert calls == [("HeartbeatInterval", "240")]
    assert store.get_setting("cfg.HeartbeatInterval") == "240"
    with pytest.raises(InvalidValue):
        s.set_internal("HeartbeatInterval", "-3")


# ----------------------------------------------------------------------------- policy
# The 1.6 keys the runtime's ChargingPolicy is made of (controller/ocpp16/policy.py): the
# runtime never looks a key up by name; it gets a new policy when the CSMS changes one.


def test_policy_from_the_1_6_keys_and_changes_follow() -> None:
    store = Store(":memory:")
    settings = Settings(store, core_keys(1), {"MeterValueSampleInterval": 10})
    seen: list[ChargingPolicy] = []
    policy16.follow(settings, seen.append)
    assert seen == [
        ChargingPolicy(
            sample_interval_s=10,
            aligned_interval_s=0,
            connection_timeout_s=60.0,
            stop_on_ev_disconnect=True,
            unlock_on_ev_disconnect=True,
            stop_on_invalid_id=True,
            max_energy_on_invalid_id_wh=None,  # 0 = none (9.1.14)
        )
    ]
    assert settings.change("MaxEnergyOnInvalidId", "1500") == "Accepted"
    assert settings.change("StopTransactionOnInvalidId", "false") == "Accepted"
    assert settings.change("ConnectionTimeOut", "30") == "Accepted"
    assert settings.change("HeartbeatInterval", "120") == "Accepted"  # not a policy key
    assert len(seen) == 4
    assert seen[-1].max_energy_on_invalid_id_wh == 1500
    assert seen[-1].stop_on_invalid_id is False
    assert seen[-1].connection_timeout_s == 30.0
    assert settings.change("ClockAlignedDataInterval", "nonsense") == "Rejected"
    assert len(seen) == 4  # a rejected value changes nothing
