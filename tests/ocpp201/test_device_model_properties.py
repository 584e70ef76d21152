"""Properties of the OCPP 2.0.1 device model: random SetVariables / GetVariables sequences
never leave a value outside its characteristics, answers are schema-valid, and what is read
back after a restart is what was accepted (B05.FR.07-10, B06.FR.10)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from dm_support import item, station_model, validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.ocpp201.dm import get_variables, set_variables
from controller.ocpp201.dm.types import VariableDef
from controller.ocpp201.dm.values import InvalidValue, normalise
from controller.storage.store import Store

_PROBE_STORE = Store(":memory:")
VARIABLES = station_model(_PROBE_STORE).variables()
_PROBE_STORE.close()
WRITABLE = [d for d in VARIABLES if d.settable]


def _wire(d: VariableDef, value: str | None = None) -> dict[str, Any]:
    return item(
        d.component.name,
        d.variable.name,
        evse=d.component.evse_id,
        connector=d.component.connector_id,
        variable_instance=d.variable.instance,
        value=value,
    )


def _candidate(d: VariableDef) -> st.SearchStrategy[str]:
    chars = d.characteristics
    members = st.sampled_from(chars.values_list or ("x",))
    return st.one_of(
        st.integers(min_value=-(2**33), max_value=2**33).map(str),
        st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
        st.sampled_from(["true", "false", "TRUE", "", " ", "1e3", "NaN", "-0", "+5", "0.10"]),
        st.lists(members, max_size=6).map(",".join),
        st.text(max_size=80),
    )


@st.composite
def requests(draw: st.DrawFn) -> list[tuple[VariableDef, str]]:
    chosen = draw(st.lists(st.sampled_from(WRITABLE), min_size=1, max_size=6))
    return [(d, draw(_candidate(d))) for d in chosen]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests(), min_size=1, max_size=5))
def test_random_sets_keep_values_within_characteristics(
    sequence: list[list[tuple[VariableDef, str]]],
) -> None:
    store = Store(":memory:")
    model = station_model(store)
    expected: dict[tuple[Any, Any], str] = {}
    try:
        for request in sequence:
            items = [_wire(d, value) for d, value in request]
            results = set_variables(model, items)
            validate("SetVariablesResponse", {"setVariableResult": results})
            addresses = [(d.component, d.variable) for d, _ in request]
            for (d, value), result in zip(request, results, strict=True):
                try:
                    canonical: str | None = normalise(d.characteristics, value)
                except InvalidValue:
                    canonical = None
                repeated = addresses.count((d.component, d.variable)) > 1
                if canonical is None or repeated:
                    assert result["attributeStatus"] == "Rejected"
                elif d.variable.name != "BasicAuthPassword":  # its guard may veto
                    assert result["attributeStatus"] in ("Accepted", "RebootRequired")
                if result["attributeStatus"] != "Rejected":
                    assert canonical is not None
                    expected[(d.component, d.variable)] = canonical
            for d in VARIABLES:
                attribute = d.attribute("Actual")
                assert attribute is not None
                if attribute.provider is not None:
                    continue
                value = model.read(d, attribute)
                if value is not None:
                    assert normalise(d.characteristics, value) == value, d.variable.text()
                if d.characteristics.data_type in ("integer", "decimal") and value:
                    number = Decimal(value)
                    if d.characteristics.min_limit is not None:
                        assert number >= d.characteristics.min_limit
                    if d.characteristics.max_limit is not None:
                        assert number <= d.characteristics.max_limit
        readable = [d for d in WRITABLE if d.attributes[0].mutability != "WriteOnly"]
        again = station_model(store)
        results = get_variables(again, [_wire(d) for d in readable])
        validate("GetVariablesResponse", {"getVariableResult": results})
        for d, result in zip(readable, results, strict=True):
            if (d.component, d.variable) in expected:
                assert result["attributeValue"] == expected[(d.component, d.variable)]
    finally:
        store.close()


@settings(max_examples=100, deadline=None)
@given(
    st.integers(min_value=1, max_value=50),
    st.one_of(st.none(), st.integers(min_value=200, max_value=20000)),
    st.integers(min_value=0, max_value=len(VARIABLES)),
)
def test_pages_carry_every_entry_once_within_limits(
    per_page: int, max_bytes: int | None, count: int
) -> None:
    """B07.FR.10 / B08.FR.14: for any page limits the pages hold the report in order, seqNo
    counts from 0, only the last has tbc false, no page exceeds its item (and, unless a single
    entry is larger, byte) limit."""
    import json

    from controller.ocpp201.dm import base_report, notify_report_pages

    store = Store(":memory:")
    try:
        data = base_report(station_model(store), "FullInventory").data[:count]
    finally:
        store.close()
    pages = notify_report_pages(7, data, "2026-01-01T00:00:00Z", per_page, max_bytes)
    assert [p["seqNo"] for p in pages] == list(range(len(pages)))
    assert [p["tbc"] for p in pages] == [True] * (len(pages) - 1) + [False]
    assert [d for p in pages for d in p.get("reportData", [])] == list(data)
    for page in pages:
        entries = page.get("reportData", [])
        assert len(entries) <= per_page
        size = sum(len(json.dumps(e, separators=(",", ":"))) + 1 for e in entries)
        if max_bytes is not None and len(entries) > 1:
            assert size <= max_bytes
