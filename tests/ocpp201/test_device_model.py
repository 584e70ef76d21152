"""OCPP 2.0.1 device model: GetVariables (B06) and SetVariables (B05) on the station's model,
persistence on the real Store, exact decimals, listeners and guards."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from dm_support import Live, item, station_model, validate

from controller.core.records import StoreError
from controller.ocpp201.dm import (
    ComponentKey,
    InvalidValue,
    VariableKey,
    get_variables,
    limit_error,
    set_variables,
)
from controller.storage.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store(tmp_path / "evsed.db")
    yield s
    s.close()


def get(model: Any, *items: dict[str, Any]) -> list[dict[str, Any]]:
    results = get_variables(model, list(items))
    validate("GetVariablesResponse", {"getVariableResult": results})
    return results


def put(model: Any, *items: dict[str, Any]) -> list[dict[str, Any]]:
    validate("SetVariablesRequest", {"setVariableData": list(items)})
    results = set_variables(model, list(items))
    validate("SetVariablesResponse", {"setVariableResult": results})
    return results


# ---------------------------------------------------------------- GetVariables (B06)


def test_get_single_value_defaults_to_actual(store: Store) -> None:
    """TC_B_06_CS; B06.FR.01, B06.FR.04, B06.FR.10, B06.FR.11: no attributeType means Actual,
    and the result says so."""
    model = station_model(store)
    [result] = get(model, item("OCPPCommCtrlr", "HeartbeatInterval"))
    assert result == {
        "attributeStatus": "Accepted",
        "attributeType": "Actual",
        "attributeValue": "300",
        "component": {"name": "OCPPCommCtrlr"},
        "variable": {"name": "HeartbeatInterval"},
    }


def test_get_multiple_values_in_order_with_instances(store: Store) -> None:
    """TC_B_07_CS; B06.FR.01-03, B06.FR.14: one result per item, in order, each naming the
    component/variable (with instance) as asked."""
    model = station_model(store)
    results = get(
        model,
        item("DeviceDataCtrlr", "ItemsPerMessage", variable_instance="GetVariables"),
        item("DeviceDataCtrlr", "BytesPerMessage", variable_instance="GetReport"),
        item("AuthCtrlr", "AuthorizeRemoteStart", attribute_type="Actual"),
        item("OCPPCommCtrlr", "MessageAttempts", variable_instance="TransactionEvent"),
    )
    assert [r["attributeValue"] for r in results] == ["32", "65536", "false", "5"]
    assert results[0]["variable"] == {"name": "ItemsPerMessage", "instance": "GetVariables"}
    assert all(r["attributeStatus"] == "Accepted" for r in results)


def test_get_unknown_component_variable_and_attribute(store: Store) -> None:
    """TC_B_32_CS, TC_B_33_CS, TC_B_34_CS; B06.FR.06-08, B06.FR.15: no value with a
    failing status; a variable that exists only with an instance is unknown without it."""
    model = station_model(store)
    results = get(
        model,
        item("NoSuchCtrlr", "HeartbeatInterval"),
        item("OCPPCommCtrlr", "NoSuchVariable"),
        item("OCPPCommCtrlr", "HeartbeatInterval", attribute_type="Target"),
        item("DeviceDataCtrlr", "ItemsPerMessage"),
        item("EVSE", "AvailabilityState", evse=9),
    )
    assert [r["attributeStatus"] for r in results] == [
        "UnknownComponent",
        "UnknownVariable",
        "NotSupportedAttributeType",
        "UnknownVariable",
        "UnknownComponent",
    ]
    assert all("attributeValue" not in r for r in results)
    assert results[2]["attributeType"] == "Target"


def test_get_write_only_is_rejected(store: Store) -> None:
    """B06.FR.09: a WriteOnly variable (BasicAuthPassword) is never read back."""
    model = station_model(store)
    assert (
        put(model, item("SecurityCtrlr", "BasicAuthPassword", value="A" * 20))[0]["attributeStatus"]
        == "Accepted"
    )
    [result] = get(model, item("SecurityCtrlr", "BasicAuthPassword"))
    assert result["attributeStatus"] == "Rejected"
    assert result["attributeStatusInfo"] == {"reasonCode": "WriteOnly"}
    assert "attributeValue" not in result


def test_get_evse_and_connector_addressing_and_live_values(store: Store) -> None:
    """B06.FR.14; Part 2 2.13: EVSE on tier evse=n, Connector on evse=n/connectorId=1; live
    values (availability, power, energy, contactor) are read when asked; an unset live value
    is "" (B06.FR.13)."""
    live = Live()
    live.states[(1, None)] = "Occupied"
    live.states[(2, 1)] = "Unavailable"
    live.power_w[1] = Decimal("7360.5")
    live.energy_wh[1] = Decimal("1234.25")
    live.closed[1] = True
    model = station_model(store, live)
    results = get(
        model,
        item("EVSE", "AvailabilityState", evse=1),
        item("Connector", "AvailabilityState", evse=2, connector=1),
        item("Connector", "Available", evse=2, connector=1),
        item("EVSE", "Power", evse=1),
        item("EVSE", "Power", evse=2),
        item("FiscalMetering", "EnergyImportRegister", evse=1),
        item("PowerContactor", "Active", evse=1),
        item("Connector", "ConnectorType", evse=1, connector=1),
        item("Connector", "AvailabilityState", evse=2),
    )
    values = [r.get("attributeValue") for r in results]
    assert values[:8] == [
        "Occupied",
        "Unavailable",
        "false",
        "7360.5",
        "",
        "1234.25",
        "true",
        "sType2",
    ]
    assert results[0]["component"] == {"name": "EVSE", "evse": {"id": 1}}
    assert results[8]["attributeStatus"] == "UnknownComponent"  # a connector needs its id


def test_get_failing_live_source_is_rejected_not_a_crash(store: Store) -> None:
    """B06: a meter that does not answer gives Rejected for that item only."""
    live = Live(broken=True)
    model = station_model(store, live)
    results = get(model, item("EVSE", "Power", evse=1), item("OCPPCommCtrlr", "ResetRetries"))
    assert results[0]["attributeStatus"] == "Rejected"
    assert results[0]["attributeStatusInfo"]["reasonCode"] == "InternalError"
    assert results[1]["attributeStatus"] == "Accepted"


def test_limits_give_the_callerror_the_client_needs(store: Store) -> None:
    """B06.FR.16 / B06.FR.17, B08.FR.17 / B08.FR.18, B05.FR.11: more items than
    ItemsPerMessage -> OccurrenceConstraintViolation, more bytes -> FormatViolation."""
    model = station_model(store)
    assert limit_error(model, "GetVariables", 32, 1000) is None
    assert limit_error(model, "GetVariables", 33, 1000)[0] == "OccurrenceConstraintViolation"
    assert limit_error(model, "SetVariables", 1, 65537)[0] == "FormatViolation"
    assert limit_error(model, "GetReport", 40, 10)[0] == "OccurrenceConstraintViolation"


# ---------------------------------------------------------------- SetVariables (B05)


def test_set_single_value_persists_across_models(store: Store, tmp_path: Path) -> None:
    """TC_B_09_CS; B05.FR.10, B05.FR.12; Part 2 2 ("writable variables SHALL be persistent"):
    a value set on one model is read by a new model on a reopened database."""
    model = station_model(store)
    [result] = put(model, item("OCPPCommCtrlr", "HeartbeatInterval", value="120"))
    assert result["attributeStatus"] == "Accepted"
    assert result["attributeType"] == "Actual"
    assert model.get_int("OCPPCommCtrlr", "HeartbeatInterval") == 120
    store.close()
    reopened = Store(tmp_path / "evsed.db")
    try:
        again = station_model(reopened)
        assert again.get_int("OCPPCommCtrlr", "HeartbeatInterval") == 120
        assert get(again, item("OCPPCommCtrlr", "HeartbeatInterval"))[0]["attributeValue"] == "120"
    finally:
        reopened.close()


def test_set_multiple_values_applied_together(store: Store) -> None:
    """TC_B_10_CS; B05.FR.01-03: every item answered in order; accepted items are stored in
    one commit and the listeners hear each change once, after the commit."""
    model = station_model(store)
    heard: list[tuple[str, str, str]] = []
    model.on_change(lambda c, v, value: heard.append((c.name, v.text(), value)))
    results = put(
        model,
        item("OCPPCommCtrlr", "HeartbeatInterval", value="600"),
        item("SampledDataCtrlr", "TxUpdatedInterval", value="15"),
        item("OCPPCommCtrlr", "MessageAttempts", variable_instance="TransactionEvent", value="7"),
        item("AuthCtrlr", "LocalPreAuthorize", value="TRUE"),
    )
    assert [r["attributeStatus"] for r in results] == ["Accepted"] * 4
    assert heard == [
        ("OCPPCommCtrlr", "HeartbeatInterval", "600"),
        ("SampledDataCtrlr", "TxUpdatedInterval", "15"),
        ("OCPPCommCtrlr", "MessageAttempts[TransactionEvent]", "7"),
        ("AuthCtrlr", "LocalPreAuthorize", "true"),
    ]
    stored = store.settings_with_prefix("dm.")
    assert stored["dm.OCPPCommCtrlr/MessageAttempts[TransactionEvent]/Actual"] == "7"
    assert stored["dm.AuthCtrlr/LocalPreAuthorize/Actual"] == "true"


def test_set_unknown_component_variable_attribute(store: Store) -> None:
    """TC_B_35_CS, TC_B_36_CS, TC_B_37_CS; B05.FR.04-06."""
    model = station_model(store)
    results = put(
        model,
        item("NoSuchCtrlr", "HeartbeatInterval", value="1"),
        item("OCPPCommCtrlr", "NoSuchVariable", value="1"),
        item("OCPPCommCtrlr", "HeartbeatInterval", value="1", attribute_type="MaxSet"),
    )
    assert [r["attributeStatus"] for r in results] == [
        "UnknownComponent",
        "UnknownVariable",
        "NotSupportedAttributeType",
    ]
    assert results[2]["attributeType"] == "MaxSet"
    assert model.get_int("OCPPCommCtrlr", "HeartbeatInterval") == 300


@pytest.mark.parametrize("value", ["60.1", "true", "2026-01-01T00:00:00Z", "abc", "", "1e3"])
def test_set_invalidly_formatted_values(store: Store, value: str) -> None:
    """TC_B_11_CS; B05.FR.07: Rejected with reasonCode InvalidValue, nothing changes."""
    model = station_model(store)
    for target in (
        item("OCPPCommCtrlr", "OfflineThreshold", value=value),
        item("AuthCtrlr", "AuthorizeRemoteStart", value=value),
        item("SmartChargingCtrlr", "LimitChangeSignificance", value=value),
    ):
        [result] = put(model, target)
        accepted = (target["variable"]["name"], value) in {
            ("AuthorizeRemoteStart", "true"),
            ("LimitChangeSignificance", "60.1"),
        }
        if accepted:
            assert result["attributeStatus"] == "Accepted"
        else:
            assert result["attributeStatus"] == "Rejected"
            assert result["attributeStatusInfo"]["reasonCode"] == "InvalidValue"
    assert model.get("OCPPCommCtrlr", "OfflineThreshold") == "60"


def test_set_out_of_range_and_not_in_values_list(store: Store) -> None:
    """B05.FR.08: below minLimit / above maxLimit, a member not in valuesList, a string
    longer than its maxLimit: Rejected, no effect."""
    model = station_model(store)
    results = put(
        model,
        item("OCPPCommCtrlr", "HeartbeatInterval", value="0"),
        item("OCPPCommCtrlr", "ResetRetries", value="11"),
        item("SampledDataCtrlr", "TxUpdatedMeasurands", value="Energy.Active.Import.Register,RPM"),
        item("AlignedDataCtrlr", "Measurands", value="SoC"),
        item("SecurityCtrlr", "OrganizationName", value="x" * 65),
        item("ClockCtrlr", "TimeSource", value="Heartbeat,Heartbeat"),
        item("OCPPCommCtrlr", "OfflineThreshold", value="99999999999"),
    )
    assert [r["attributeStatus"] for r in results] == ["Rejected"] * 7
    assert [r["attributeStatusInfo"]["reasonCode"] for r in results] == [
        "ValueTooLow",
        "ValueTooHigh",
        "InvalidValue",
        "InvalidValue",
        "TooLargeElement",
        "InvalidValue",
        "InvalidValue",
    ]
    assert model.get("SampledDataCtrlr", "TxUpdatedMeasurands") == (
        "Energy.Active.Import.Register,Power.Active.Import"
    )


def test_set_read_only_is_rejected(store: Store) -> None:
    """TC_B_39_CS; B05.FR.09: ReadOnly variables (constant or live) are Rejected."""
    model = station_model(store)
    results = put(
        model,
        item("DeviceDataCtrlr", "ItemsPerMessage", variable_instance="GetVariables", value="4"),
        item("SecurityCtrlr", "SecurityProfile", value="2"),
        item("EVSE", "AvailabilityState", evse=1, value="Unavailable"),
        item("ClockCtrlr", "DateTime", value="2026-01-01T00:00:00Z"),
    )
    assert [r["attributeStatus"] for r in results] == ["Rejected"] * 4
    assert {r["attributeStatusInfo"]["reasonCode"] for r in results} == {"ReadOnly"}
    assert model.get("SecurityCtrlr", "SecurityProfile") == "1"


def test_set_reboot_required(store: Store) -> None:
    """B05 (SetVariableStatusEnumType RebootRequired): values applied on the next connection
    are stored and answered RebootRequired."""
    model = station_model(store)
    [ping, priority] = put(
        model,
        item("OCPPCommCtrlr", "WebSocketPingInterval", value="30"),
        item("OCPPCommCtrlr", "NetworkConfigurationPriority", value="2,1"),
    )
    assert ping["attributeStatus"] == priority["attributeStatus"] == "RebootRequired"
    assert model.get_list("OCPPCommCtrlr", "NetworkConfigurationPriority") == ["2", "1"]


def test_set_duplicate_items_all_rejected(store: Store) -> None:
    """B05.FR.13 (the CSMS SHALL NOT repeat component/variable/attributeType; an omitted
    attributeType counts as Actual): which would win is undefined, so both are Rejected."""
    model = station_model(store)
    results = put(
        model,
        item("OCPPCommCtrlr", "HeartbeatInterval", value="100"),
        item("OCPPCommCtrlr", "HeartbeatInterval", value="200", attribute_type="Actual"),
        item("OCPPCommCtrlr", "ResetRetries", value="2"),
    )
    assert [r["attributeStatus"] for r in results] == ["Rejected", "Rejected", "Accepted"]
    assert model.get_int("OCPPCommCtrlr", "HeartbeatInterval") == 300


def test_decimals_stay_exact(store: Store, tmp_path: Path) -> None:
    """B05/B06: a decimal is stored and answered as its exact text, never via a float."""
    model = station_model(store)
    for text in ("0.1", "33.333333333333", "100", "0.000000000001", "+7.50"):
        [result] = put(model, item("SmartChargingCtrlr", "LimitChangeSignificance", value=text))
        assert result["attributeStatus"] == "Accepted"
        value = get(model, item("SmartChargingCtrlr", "LimitChangeSignificance"))[0]
        assert Decimal(value["attributeValue"]) == Decimal(text)
    assert model.get("SmartChargingCtrlr", "LimitChangeSignificance") == "7.50"
    [over] = put(
        model, item("SmartChargingCtrlr", "LimitChangeSignificance", value="100.000000000001")
    )
    assert over["attributeStatusInfo"]["reasonCode"] == "ValueTooHigh"
    assert model.get_decimal("SmartChargingCtrlr", "LimitChangeSignificance") == Decimal("7.5")


def test_guard_vetoes_and_sees_old_and_new(store: Store) -> None:
    """B05.FR.09 / A05.FR.01 style guard: the charger decides beyond type and range."""
    model = station_model(store)
    seen: list[tuple[str | None, str]] = []

    def only_slot_one_first(old: str | None, new: str) -> str | None:
        seen.append((old, new))
        return None if new.startswith("1") else "slot 2 has no profile"

    model.add_guard("OCPPCommCtrlr", "NetworkConfigurationPriority", only_slot_one_first)
    [rejected] = put(model, item("OCPPCommCtrlr", "NetworkConfigurationPriority", value="2"))
    assert rejected["attributeStatus"] == "Rejected"
    assert rejected["attributeStatusInfo"]["additionalInfo"] == "slot 2 has no profile"
    assert seen == [("1", "2")]
    assert model.get("OCPPCommCtrlr", "NetworkConfigurationPriority") == "1"


def test_basic_auth_password_rules(store: Store) -> None:
    """Part 2 2.2.1: BasicAuthPassword is a passwordString of 16 to 40 characters."""
    model = station_model(store)
    results = put(
        model,
        item("SecurityCtrlr", "BasicAuthPassword", value="short"),
        item("SecurityCtrlr", "OrganizationName", value="ACME"),
    )
    assert results[0]["attributeStatus"] == "Rejected"
    [long] = put(model, item("SecurityCtrlr", "BasicAuthPassword", value="x" * 41))
    assert long["attributeStatusInfo"]["reasonCode"] == "TooLargeElement"


def test_storage_failure_rejects_the_whole_request(store: Store) -> None:
    """B05.FR.09 (setting fails for technical reasons): nothing applied, nothing heard."""
    model = station_model(store)
    heard: list[str] = []
    model.on_change(lambda c, v, value: heard.append(value))

    def broken(values: Any) -> None:
        raise StoreError("disk gone")

    store.set_settings = broken  # type: ignore[method-assign]
    results = put(
        model,
        item("OCPPCommCtrlr", "HeartbeatInterval", value="100"),
        item("OCPPCommCtrlr", "ResetRetries", value="2"),
    )
    assert [r["attributeStatus"] for r in results] == ["Rejected", "Rejected"]
    assert {r["attributeStatusInfo"]["reasonCode"] for r in results} == {"InternalError"}
    assert model.get_int("OCPPCommCtrlr", "HeartbeatInterval") == 300
    assert heard == []


def test_listener_error_does_not_undo_the_change(store: Store) -> None:
    """A listener's bug leaves the stored value and the answer intact."""
    model = station_model(store)

    def bad(component: ComponentKey, variable: VariableKey, value: str) -> None:
        raise RuntimeError("bug")

    model.on_change(bad)
    [result] = put(model, item("OCPPCommCtrlr", "HeartbeatInterval", value="100"))
    assert result["attributeStatus"] == "Accepted"
    assert model.get_int("OCPPCommCtrlr", "HeartbeatInterval") == 100


def test_set_internal_and_stored_garbage(store: Store, tmp_path: Path) -> None:
    """What the charger learns itself (BootNotification interval, a raised security profile)
    goes through set_internal, checked and persisted; a stored value that no longer fits is
    ignored at load (the default applies)."""
    model = station_model(store)
    assert model.set_internal("SecurityCtrlr", "SecurityProfile", "2") == "2"
    model.set_internal("OCPPCommCtrlr", "HeartbeatInterval", "900")
    with pytest.raises(InvalidValue):
        model.set_internal("SecurityCtrlr", "SecurityProfile", "4")
    store.set_setting("dm.OCPPCommCtrlr/ResetRetries/Actual", "lots")
    again = station_model(store)
    assert again.get("SecurityCtrlr", "SecurityProfile") == "2"
    assert again.get_int("OCPPCommCtrlr", "HeartbeatInterval") == 900
    assert again.get_int("OCPPCommCtrlr", "ResetRetries") == 3


def test_model_follows_the_configuration(tmp_path: Path, store: Store) -> None:
    """The station's model reflects the parsed configuration: one EVSE per configured
    connector with its phases and rated power (EVSE.Power maxLimit), the reader, meter and
    contactor components."""
    from conftest import charger_config

    from controller.config import parse
    from controller.ocpp201.dm import build_station_model, describe

    data = charger_config(tmp_path, None, connectors=2)
    data["connectors"][1]["phases"] = 1
    data["connectors"][1]["max_current_a"] = 32
    cfg = parse(data)
    model = build_station_model(store, describe(cfg.connectors, has_reader=cfg.reader is not None))
    evse2 = model.find(ComponentKey("EVSE", evse_id=2), "Power")
    assert evse2 is not None and evse2.characteristics.max_limit == Decimal(32 * 230)
    assert model.get(ComponentKey("EVSE", evse_id=2), "SupplyPhases") == "1"
    assert model.get("ChargingStation", "SupplyPhases") == "3"
    assert model.has_component(ComponentKey("TokenReader"))
    assert model.has_component(ComponentKey("FiscalMetering", evse_id=2))
    assert model.has_component(ComponentKey("PowerContactor", evse_id=1))
    assert not model.has_component(ComponentKey("EVSE", evse_id=3))


def test_all_attribute_types_of_a_variable(store: Store) -> None:
    """B06.FR.13 (a supported but unset Target reads ""), B07.FR.11 (every supported attribute
    type is reported, unset ones without a value), B05.FR.03 (the attributeType comes back);
    a non-persistent attribute lives in memory only."""
    from controller.ocpp201.dm import DeviceModel, base_report
    from controller.ocpp201.dm.types import AttributeDef, Characteristics, VariableDef

    fan = VariableDef(
        ComponentKey("AirCoolingSystem"),
        VariableKey("FanSpeed"),
        Characteristics("integer", "RPM", Decimal(0), Decimal(6000)),
        (
            AttributeDef("Actual", "ReadOnly", persistent=False, provider=lambda: "1200"),
            AttributeDef("Target", "ReadWrite", persistent=False),
            AttributeDef("MinSet", "ReadWrite", default="1000"),
            AttributeDef("MaxSet", "ReadWrite", default="5000"),
        ),
    )
    model = DeviceModel(store, [fan])
    results = get(
        model,
        *(
            item("AirCoolingSystem", "FanSpeed", attribute_type=t)
            for t in ("Actual", "Target", "MinSet", "MaxSet")
        ),
    )
    assert [r["attributeValue"] for r in results] == ["1200", "", "1000", "5000"]
    assert [r["attributeType"] for r in results] == ["Actual", "Target", "MinSet", "MaxSet"]
    set_results = put(
        model,
        item("AirCoolingSystem", "FanSpeed", attribute_type="Target", value="3000"),
        item("AirCoolingSystem", "FanSpeed", attribute_type="MaxSet", value="5500"),
        item("AirCoolingSystem", "FanSpeed", value="1"),
    )
    assert [r["attributeStatus"] for r in set_results] == ["Accepted", "Accepted", "Rejected"]
    assert [r["attributeType"] for r in set_results] == ["Target", "MaxSet", "Actual"]
    again = DeviceModel(store, [fan])
    assert again.get("AirCoolingSystem", "FanSpeed", "Target") is None
    assert again.get("AirCoolingSystem", "FanSpeed", "MaxSet") == "5500"
    [entry] = base_report(again, "FullInventory").data
    assert [a.get("value") for a in entry["variableAttribute"]] == ["1200", None, "1000", "5500"]
    validate(
        "NotifyReportRequest",
        {
            "requestId": 1,
            "generatedAt": "2026-01-01T00:00:00Z",
            "seqNo": 0,
            "reportData": [entry],
        },
    )


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("2026-03-01T10:00:00Z", True),
        ("2026-03-01T10:00:00.123456789+01:00", True),
        ("2026-03-01t10:00:00z", True),
        ("2026-03-01T10:00:00", False),  # no offset
        ("2026-03-01", False),
        ("2026-W09-1T10:00:00Z", False),
        ("2026-02-30T10:00:00Z", False),
        ("yesterday", False),
    ],
)
def test_datetime_values(text: str, ok: bool) -> None:
    """B05.FR.07 for dateTime variables (e.g. ClockCtrlr NextTimeOffsetTransitionDateTime):
    RFC 3339 with its offset, nothing else."""
    from controller.ocpp201.dm.types import Characteristics
    from controller.ocpp201.dm.values import normalise

    chars = Characteristics("dateTime")
    if ok:
        assert normalise(chars, text) == text
    else:
        with pytest.raises(InvalidValue):
            normalise(chars, text)


def test_controllers_with_only_instanced_variables_meet_criteria(store: Store) -> None:
    """B08.FR.09: DeviceDataCtrlr has no Enabled variable (all its variables have instances):
    it is in a report for componentCriteria Enabled."""
    from controller.ocpp201.dm import custom_report

    model = station_model(store)
    report = custom_report(model, component_criteria=["Enabled"])
    assert "DeviceDataCtrlr" in {d["component"]["name"] for d in report.data}
