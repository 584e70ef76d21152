"""Builds OCPP 1.6 payloads from core data (meter samples, transaction starts and stops)."""

from __future__ import annotations

from typing import Any

from controller.core.port import Sample, TxStart, TxStop
from controller.csms.measurands import measured
from controller.ocpp16 import status as status16


def _fmt(value: float, decimals: int = 1) -> str:
    if decimals == 0:
        return str(round(value))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def sampled_values(sample: Sample, measurands: list[str]) -> list[dict[str, Any]]:
    """SampledValue entries (section 7.45) for the configured measurands of one reading."""
    out: list[dict[str, Any]] = []
    for m in measured(sample, measurands):
        value: dict[str, Any] = {
            "context": sample.context,
            "format": "Raw",
            "location": "Outlet",
            "value": _fmt(m.value, m.decimals),
            "measurand": m.measurand,
        }
        if m.phase is not None:
            value["phase"] = m.phase
        # 1.6's UnitOfMeasure has no Hz: a frequency goes without a unit, as before.
        if m.unit is not None and m.unit != "Hz":
            value["unit"] = m.unit
        out.append(value)
    return out


def meter_value(sample: Sample, measurands: list[str]) -> dict[str, Any] | None:
    values = sampled_values(sample, measurands)
    if not values:
        return None
    return {"timestamp": sample.timestamp, "sampledValue": values}


def start_transaction(tx: TxStart) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "connectorId": tx.connector_id,
        "idTag": tx.id_tag,
        "meterStart": tx.meter_start_wh,
        "timestamp": tx.timestamp,
    }
    if tx.reservation_id is not None:
        payload["reservationId"] = tx.reservation_id
    return payload


def stop_transaction(
    stop: TxStop, sampled: list[str], aligned: list[str] | None = None
) -> dict[str, Any]:
    """StopTransaction without transactionId: that is filled in when it is sent.

    ``transactionData`` holds StopTxnSampledData measurands of the periodic, begin and end
    samples, and StopTxnAlignedData measurands of the clock-aligned ones (9.1.25, 9.1.27).
    """
    payload: dict[str, Any] = {
        "meterStop": stop.meter_stop_wh,
        "timestamp": stop.timestamp,
        "reason": status16.stop_reason(stop.reason),
    }
    if stop.id_tag is not None:
        payload["idTag"] = stop.id_tag
    data = [
        mv
        for s in stop.transaction_data
        if (mv := meter_value(s, (aligned or []) if s.context == "Sample.Clock" else sampled))
    ]
    if data:
        payload["transactionData"] = data
    return payload
