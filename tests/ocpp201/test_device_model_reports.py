"""OCPP 2.0.1 device model reports: GetBaseReport (B07), GetReport (B08), NotifyReport paging,
and the required variables of Part 2 / appendices-csv present in the station's model."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from dm_support import CSV, Live, station_model, validate

from controller.ocpp201.dm import base_report, custom_report, notify_report_pages
from controller.ocpp201.dm.reports import REPORT_BASES
from controller.storage.store import Store

AT = "2026-01-01T12:00:00Z"


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store(tmp_path / "evsed.db")
    yield s
    s.close()


def pages_of(data: Any, per_page: int = 10, **kw: Any) -> list[dict[str, Any]]:
    pages = notify_report_pages(42, data, AT, per_page, **kw)
    for page in pages:
        validate("NotifyReportRequest", page)
    return pages


def names(data: Any) -> set[tuple[str, int | None, str, str | None]]:
    return {
        (
            d["component"]["name"],
            d["component"].get("evse", {}).get("id"),
            d["variable"]["name"],
            d["variable"].get("instance"),
        )
        for d in data
    }


def test_full_inventory_reports_everything_with_characteristics(store: Store) -> None:
    """TC_B_13_CS; B07.FR.01, B07.FR.03 (errata: no WriteOnly value), B07.FR.08, B07.FR.11,
    B07.FR.12: every variable with every attribute (mutability, persistence) and its
    characteristics; list types carry their valuesList; schema-valid pages."""
    model = station_model(store)
    report = base_report(model, "FullInventory")
    assert report.status == "Accepted"
    assert len(report.data) == len(model.variables())
    by_name = {(d["component"]["name"], d["variable"]["name"]): d for d in report.data}
    password = by_name[("SecurityCtrlr", "BasicAuthPassword")]
    assert password["variableAttribute"] == [
        {"type": "Actual", "mutability": "WriteOnly", "persistent": True, "constant": False}
    ]
    power = by_name[("EVSE", "Power")]
    assert power["variableCharacteristics"]["maxLimit"] == 16 * 3 * 230
    assert power["variableCharacteristics"]["unit"] == "W"
    for entry in report.data:
        chars = entry["variableCharacteristics"]
        if chars["dataType"] in ("OptionList", "SequenceList", "MemberList"):
            assert chars.get("valuesList"), entry
    pages = pages_of(report.data)
    assert sum(len(p.get("reportData", [])) for p in pages) == len(report.data)


def test_configuration_inventory_only_settable(store: Store) -> None:
    """TC_B_12_CS; B07.FR.07: the component-variables the operator can set."""
    model = station_model(store)
    report = base_report(model, "ConfigurationInventory")
    assert report.status == "Accepted"
    for entry in report.data:
        assert any(a["mutability"] != "ReadOnly" for a in entry["variableAttribute"]), entry
    got = names(report.data)
    assert ("OCPPCommCtrlr", None, "HeartbeatInterval", None) in got
    assert ("SecurityCtrlr", None, "BasicAuthPassword", None) in got
    assert ("DeviceDataCtrlr", None, "ItemsPerMessage", "GetVariables") not in got
    pages_of(report.data)


def test_summary_inventory_availability_and_problems(store: Store) -> None:
    """TC_B_14_CS; B07.FR.09: AvailabilityState of the station, each EVSE and connector, and
    the Problem variable of components in trouble (only those)."""
    live = Live()
    live.states[(2, None)] = "Faulted"
    live.problems.add(2)
    model = station_model(store, live)
    report = base_report(model, "SummaryInventory")
    assert report.status == "Accepted"
    got = names(report.data)
    assert got == {
        ("ChargingStation", None, "AvailabilityState", None),
        ("EVSE", 1, "AvailabilityState", None),
        ("EVSE", 2, "AvailabilityState", None),
        ("Connector", 1, "AvailabilityState", None),
        ("Connector", 2, "AvailabilityState", None),
        ("EVSE", 2, "Problem", None),
    }
    faulted = [d for d in report.data if d["component"].get("evse") == {"id": 2}]
    assert {d["variableAttribute"][0]["value"] for d in faulted} == {"Faulted", "true"}
    pages_of(report.data)


def test_unknown_base_report_not_supported(store: Store) -> None:
    """TC_B_15_CS; B07.FR.02 (and B07.FR.05: nothing to send)."""
    model = station_model(store)
    assert base_report(model, "SomethingElse").status == "NotSupported"
    assert base_report(model, "SomethingElse").data == ()
    assert set(REPORT_BASES) >= {"ConfigurationInventory", "FullInventory"}  # B07.FR.12


def test_custom_report_component_criteria(store: Store) -> None:
    """TC_B_16_CS; B08.FR.07-10, B08.FR.13: a component with Enabled=false is left out, one
    without an Enabled variable is in; Problem needs Problem=true; criteria are OR-ed."""
    model = station_model(store)
    model.set_internal("AuthCacheCtrlr", "Enabled", "false")
    report = custom_report(model, component_criteria=["Enabled"])
    assert report.status == "Accepted"
    components = {d["component"]["name"] for d in report.data}
    assert "AuthCacheCtrlr" not in components
    assert {"LocalAuthListCtrlr", "OCPPCommCtrlr", "EVSE"} <= components
    assert custom_report(model, component_criteria=["Problem"]).status == "EmptyResultSet"
    either = custom_report(model, component_criteria=["Problem", "Enabled"])
    assert either.data == report.data
    pages_of(report.data)


def test_custom_report_problem_criterion(store: Store) -> None:
    """B08.FR.10, B08.FR.12: only the components whose Problem is true, with characteristics."""
    live = Live()
    live.problems.add(1)
    model = station_model(store, live)
    report = custom_report(model, component_criteria=["Problem"])
    assert {
        (d["component"]["name"], d["component"].get("evse", {}).get("id")) for d in report.data
    } == {("EVSE", 1)}
    assert all("variableCharacteristics" in d for d in report.data)


def test_custom_report_component_variable(store: Store) -> None:
    """TC_B_17_CS, TC_B_54_CS, TC_B_55_CS, TC_B_56_CS; B08.FR.11, B08.FR.20-25: absent
    variable, variable instance or evse are wildcards; given ones must match."""
    model = station_model(store)
    all_evses = custom_report(
        model, [{"component": {"name": "EVSE"}, "variable": {"name": "AvailabilityState"}}]
    )
    assert names(all_evses.data) == {
        ("EVSE", 1, "AvailabilityState", None),
        ("EVSE", 2, "AvailabilityState", None),
    }
    every_instance = custom_report(
        model, [{"component": {"name": "DeviceDataCtrlr"}, "variable": {"name": "ItemsPerMessage"}}]
    )
    assert {n[3] for n in names(every_instance.data)} == {
        "GetReport",
        "GetVariables",
        "SetVariables",
    }
    one_instance = custom_report(
        model,
        [
            {
                "component": {"name": "DeviceDataCtrlr"},
                "variable": {"name": "ItemsPerMessage", "instance": "GetReport"},
            }
        ],
    )
    assert len(one_instance.data) == 1
    whole_component = custom_report(model, [{"component": {"name": "EVSE", "evse": {"id": 2}}}])
    assert {n[1] for n in names(whole_component.data)} == {2}
    assert len(whole_component.data) == 6  # AvailabilityState, Available, AllowReset, ...
    connector = custom_report(
        model, [{"component": {"name": "Connector", "evse": {"id": 1, "connectorId": 1}}}]
    )
    assert {d["component"]["evse"]["connectorId"] for d in connector.data} == {1}
    for report in (all_evses, every_instance, one_instance, whole_component, connector):
        pages_of(report.data)


def test_custom_report_criteria_and_component_variable(store: Store) -> None:
    """TC_B_18_CS; B08.FR.05: both given: the intersection."""
    model = station_model(store)
    model.set_internal("AuthCacheCtrlr", "Enabled", "false")
    wanted = [
        {"component": {"name": "AuthCacheCtrlr"}},
        {"component": {"name": "LocalAuthListCtrlr"}, "variable": {"name": "Enabled"}},
    ]
    report = custom_report(model, wanted, ["Enabled"])
    assert names(report.data) == {("LocalAuthListCtrlr", None, "Enabled", None)}


def test_custom_report_empty_and_not_supported(store: Store) -> None:
    """TC_B_19_CS; B08.FR.02 (criterion not supported), B08.FR.15 (EmptyResultSet)."""
    model = station_model(store)
    assert custom_report(model, [{"component": {"name": "Nope"}}]).status == "EmptyResultSet"
    limited = custom_report(
        model,
        component_criteria=["Available", "Active"],
        supported_criteria=("Available", "Enabled", "Problem"),
    )
    assert limited.status == "NotSupported"
    assert custom_report(model).status == "Accepted"  # B08.FR.05: neither given -> all


def test_notify_report_paging(store: Store) -> None:
    """B07.FR.04, B07.FR.10, B08.FR.14: seqNo from 0 up, one requestId, tbc on all but the
    last; items and bytes per page bounded; nothing lost or repeated."""
    model = station_model(store)
    data = base_report(model, "FullInventory").data
    pages = pages_of(data, per_page=7)
    assert [p["seqNo"] for p in pages] == list(range(len(pages)))
    assert {p["requestId"] for p in pages} == {42}
    assert [p["tbc"] for p in pages] == [True] * (len(pages) - 1) + [False]
    assert all(len(p["reportData"]) <= 7 for p in pages)
    flat = [d for p in pages for d in p["reportData"]]
    assert flat == list(data)
    small = pages_of(data, per_page=1000, max_bytes=2000)
    assert len(small) > 1
    assert [d for p in small for d in p["reportData"]] == list(data)
    single = notify_report_pages(1, [], AT, 5)
    assert single == [{"requestId": 1, "generatedAt": AT, "seqNo": 0, "tbc": False}]
    validate("NotifyReportRequest", single[0])


def test_report_with_broken_live_source_still_reports(store: Store) -> None:
    """A meter that fails during a report: the variable is reported without a value."""
    model = station_model(store, Live(broken=True))
    report = custom_report(model, [{"component": {"name": "EVSE"}, "variable": {"name": "Power"}}])
    assert report.status == "Accepted"
    assert all("value" not in d["variableAttribute"][0] for d in report.data)


# ---------------------------------------------------------------- required variables

MODELLED = {
    "AlignedDataCtrlr",
    "AuthCtrlr",
    "AuthCacheCtrlr",
    "ChargingStation",
    "ClockCtrlr",
    "Connector",
    "DeviceDataCtrlr",
    "EVSE",
    "LocalAuthListCtrlr",
    "OCPPCommCtrlr",
    "ReservationCtrlr",
    "SampledDataCtrlr",
    "SecurityCtrlr",
    "SmartChargingCtrlr",
    "TxCtrlr",
    "TokenReader",
}
# Blocks evsed does not implement: their required variables are not due (Part 2 2: "A
# required Configuration Variable ... only has to be supported ... if it supports that
# functional block").
NOT_IMPLEMENTED = {"DisplayMessageCtrlr", "ISO15118Ctrlr", "MonitoringCtrlr", "TariffCostCtrlr"}


def required_rows() -> list[dict[str, str]]:
    with CSV.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    return [r for r in rows if r["Required?"].strip().lower() == "yes"]


def test_required_variables_present(store: Store) -> None:
    """TC_B_53_CS; B07.FR.08: every `Required? = yes` row of appendices-csv/
    dm_components_vars.csv for the components modelled is in the FullInventory (per EVSE and
    connector for those tiers), with the CSV's data type."""
    model = station_model(store)
    report = base_report(model, "FullInventory")
    reported: dict[tuple[str, int | None, str, str | None], dict[str, Any]] = {
        (
            d["component"]["name"],
            d["component"].get("evse", {}).get("id"),
            d["variable"]["name"],
            d["variable"].get("instance"),
        ): d
        for d in report.data
    }
    rows = required_rows()
    components = {r["Specific Component"] for r in rows}
    assert components <= MODELLED | NOT_IMPLEMENTED, components - MODELLED - NOT_IMPLEMENTED
    checked = 0
    for row in rows:
        component = row["Specific Component"]
        if component in NOT_IMPLEMENTED:
            continue
        tiers: list[int | None] = [1, 2] if component in ("EVSE", "Connector") else [None]
        for evse in tiers:
            key = (component, evse, row["Variable"], row["Instance"] or None)
            assert key in reported, key
            data_type = reported[key]["variableCharacteristics"]["dataType"]
            # Part 2 2.1.6 makes NetworkConfigurationPriority a SequenceList (the CSV: string).
            expected = row["DataType"]
            if key[2] == "NetworkConfigurationPriority":
                expected = "SequenceList"
            assert data_type.lower() == expected.lower(), key
            # Errata 2025-09 6.2.19 (TC_B_53_CS): a value unless WriteOnly (EVSE.Power: only
            # its maxLimit is required); a list value from the valuesList.
            chars = reported[key]["variableCharacteristics"]
            for attribute in reported[key]["variableAttribute"]:
                if attribute["mutability"] == "WriteOnly":
                    assert "value" not in attribute, key
                elif key[2] == "Power":
                    assert "maxLimit" in chars
                else:
                    assert "value" in attribute, key
                    if data_type in ("OptionList", "SequenceList", "MemberList"):
                        allowed = set(chars["valuesList"].split(","))
                        members = [m for m in attribute["value"].split(",") if m]
                        assert set(members) <= allowed, key
            checked += 1
    assert checked >= 60


def test_report_answers_are_schema_valid(store: Store) -> None:
    """B07.FR.01/02, B08.FR.01/02/15: every status a report request can get is a valid
    GetBaseReportResponse / GetReportResponse; the filters used are valid GetReportRequests."""
    model = station_model(store)
    for base in (*REPORT_BASES, "Other"):
        validate("GetBaseReportResponse", {"status": base_report(model, base).status})
    requests = [
        {"requestId": 1, "componentCriteria": ["Enabled", "Problem"]},
        {"requestId": 2, "componentVariable": [{"component": {"name": "Nope"}}]},
        {
            "requestId": 3,
            "componentVariable": [
                {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Power"}}
            ],
        },
    ]
    statuses = set()
    for request in requests:
        validate("GetReportRequest", request)
        report = custom_report(
            model, request.get("componentVariable"), request.get("componentCriteria")
        )
        validate("GetReportResponse", {"status": report.status})
        statuses.add(report.status)
    assert statuses == {"Accepted", "EmptyResultSet"}
