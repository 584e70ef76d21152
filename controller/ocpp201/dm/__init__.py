"""The OCPP 2.0.1 device model (Part 1 ch. 4, Part 2 B05-B08) and its request handling.

Components, variables and their attributes as data; GetVariables / SetVariables,
GetBaseReport / GetReport.

For the 2.0.1 client:

- ``build_station_model(store, describe(cfg.connectors, has_reader=...), LiveValues(...))``
  makes the station's model (dm.station); values set by the CSMS persist in the Store
  settings under ``dm.`` and are loaded by the next model on the same store;
- ``model.get_int("OCPPCommCtrlr", "HeartbeatInterval")`` etc. read values,
  ``model.on_change(fn)`` follows them, ``model.add_guard(...)`` vetoes CSMS writes,
  ``model.set_internal(...)`` sets what the charger learns itself (dm.model);
- GetVariables / SetVariables: ``limit_error`` (the CALLERROR for an oversized request),
  ``get_variables`` / ``set_variables`` on the payload's item lists (dm.access);
- GetBaseReport / GetReport: ``base_report`` / ``custom_report`` give the status and the
  ReportData, ``notify_report_pages`` the NotifyReportRequest payloads (dm.reports).

Nothing here imports the ``ocpp`` library: payloads are the OCPP-J dicts (camelCase)."""

from __future__ import annotations

from controller.ocpp201.dm.access import get_variables, limit_error, set_variables
from controller.ocpp201.dm.firstboot import FirstBootValueError, first_boot_values
from controller.ocpp201.dm.model import DeviceModel
from controller.ocpp201.dm.reports import Report, base_report, custom_report, notify_report_pages
from controller.ocpp201.dm.station import (
    EvseDescription,
    LiveValues,
    StationDescription,
    build_station_model,
    describe,
)
from controller.ocpp201.dm.types import ComponentKey, VariableKey
from controller.ocpp201.dm.values import InvalidValue

__all__ = [
    "ComponentKey",
    "DeviceModel",
    "EvseDescription",
    "FirstBootValueError",
    "InvalidValue",
    "LiveValues",
    "Report",
    "StationDescription",
    "VariableKey",
    "base_report",
    "build_station_model",
    "custom_report",
    "describe",
    "first_boot_values",
    "get_variables",
    "limit_error",
    "notify_report_pages",
    "set_variables",
]
