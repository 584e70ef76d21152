"""OCPP 2.0.1 device-model requests (B05-B08): GetVariables, SetVariables, GetBaseReport,
GetReport, answered from the station's DeviceModel (controller/ocpp201/dm/), reports sent as
NotifyReport pages after the answer."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from controller.core.control import StationControl
from controller.core.timestamps import iso_utc
from controller.csms.rpc import CallError, CallTimeout, ConnectionLost
from controller.ocpp201 import dm
from controller.ocpp201 import status as status201
from controller.runtime.clock import Clock
from controller.storage.store import Store

if TYPE_CHECKING:
    from controller.ocpp201.client import Ocpp201Client

LOG = logging.getLogger(__name__)

# A report's pages when DeviceDataCtrlr.ItemsPerMessage[GetReport] is not in the model.
DEFAULT_ITEMS_PER_REPORT_PAGE = 50


def station_model(
    store: Store,
    connectors: Sequence[Any],
    *,
    has_reader: bool,
    station: StationControl,
    clock: Clock,
    security_profile: int = 1,
    certificate_entries: Callable[[], int] | None = None,
    first_boot: Mapping[str, Mapping[str, Any]] | None = None,
) -> dm.DeviceModel:
    """The charger's device model (config ``connectors``: one EVSE each), its live values
    read from the station: availability, power and energy register, the clock;
    ``certificate_entries``: the installed roots (SecurityCtrlr.CertificateEntries);
    ``first_boot``: the configuration's [ocpp.<Component>] values (cfg.device_model_values)."""

    def availability(evse_id: int | None, connector_id: int | None) -> str:
        if evse_id is None:
            return "Available" if station.station_operative else "Unavailable"
        view = station.view(evse_id)
        return status201.connector_status(view.phase, view.plugged)

    def power_w(evse_id: int) -> Decimal | None:
        reading = station.view(evse_id).live_reading
        return None if reading is None else Decimal(str(reading.power_w))

    def energy_wh(evse_id: int) -> Decimal | None:
        reading = station.view(evse_id).live_reading
        return None if reading is None else Decimal(str(reading.energy_wh))

    live = dm.LiveValues(
        availability=availability,
        power_w=power_w,
        energy_wh=energy_wh,
        utc_now=lambda: iso_utc(clock.utc_now()),
        local_list_entries=store.local_list_count,  # LocalAuthListCtrlr.Entries (D01.FR.12)
        certificate_entries=certificate_entries,
        # SmartChargingCtrlr.Entries[ChargingProfiles]: the profiles installed now.
        charging_profile_entries=lambda: len(station.installed_profiles()),
    )
    description = dm.describe(connectors, has_reader=has_reader, security_profile=security_profile)
    return dm.build_station_model(store, description, live, first_boot)


def _model(client: Ocpp201Client) -> dm.DeviceModel:
    model = client.device_model
    if model is None:  # a client built without one (unit tests): nothing to answer with
        raise CallError("NotSupported", "no device model")
    return model


def _check_size(model: dm.DeviceModel, action: str, items: list[Any], payload: Any) -> None:
    size = len(json.dumps(payload, separators=(",", ":")))
    refused = dm.limit_error(model, action, len(items), size)
    if refused is not None:
        raise CallError(*refused)


async def get_variables(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    """B06: one GetVariableResult per requested item, in order."""
    model = _model(client)
    items = payload["getVariableData"]
    _check_size(model, "GetVariables", items, payload)
    return {"getVariableResult": dm.get_variables(model, items)}


async def set_variables(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    """B05: one SetVariableResult per item; the accepted values stored in one commit."""
    model = _model(client)
    items = payload["setVariableData"]
    _check_size(model, "SetVariables", items, payload)
    return {"setVariableResult": dm.set_variables(model, items)}


async def get_base_report(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    """B07: the status now, the NotifyReport pages after the answer went out."""
    report = dm.base_report(_model(client), payload["reportBase"])
    if report.status == "Accepted":
        _send_later(client, int(payload["requestId"]), report)
    return {"status": report.status}


async def get_report(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    """B08: componentVariable and componentCriteria filters; EmptyResultSet sends nothing."""
    model = _model(client)
    wanted = payload.get("componentVariable")
    _check_size(model, "GetReport", list(wanted or ()), payload)
    report = dm.custom_report(model, wanted, payload.get("componentCriteria"))
    if report.status == "Accepted":
        _send_later(client, int(payload["requestId"]), report)
    return {"status": report.status}


def _send_later(client: Ocpp201Client, request_id: int, report: dm.Report) -> None:
    client.spawn(_send_pages(client, request_id, report), name=f"notify-report-{request_id}")


async def _send_pages(client: Ocpp201Client, request_id: int, report: dm.Report) -> None:
    await asyncio.sleep(0)  # let the request's answer go out first (B07.FR.03)
    model = client.device_model
    assert model is not None
    try:
        per_page = model.get_int("DeviceDataCtrlr", dm.VariableKey("ItemsPerMessage", "GetReport"))
    except (KeyError, ValueError, TypeError):
        per_page = 0
    if per_page < 1:
        per_page = DEFAULT_ITEMS_PER_REPORT_PAGE
    pages = dm.notify_report_pages(
        request_id, report.data, iso_utc(client.clock.utc_now()), max(1, per_page)
    )
    for page in pages:
        try:
            await client.call("NotifyReport", page)
        except (CallError, CallTimeout, ConnectionLost) as exc:
            # A report is a snapshot: the CSMS asks again rather than getting half of an
            # old one later.
            LOG.warning(
                "report %d: NotifyReport seqNo %d failed (%s)", request_id, page["seqNo"], exc
            )
            return


ROUTES = {
    "GetVariables": get_variables,
    "SetVariables": set_variables,
    "GetBaseReport": get_base_report,
    "GetReport": get_report,
}
