"""Builds OCPP 1.6 payloads from core data (meter samples, transaction starts and stops)."""

from __future__ import annotations

from typing import Any

from controller.core.port import Sample, TxStart, TxStop
from controller.ocpp16 import status as status16


def _fmt(value: float, decimals: int = 1) -> str:
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def sampled_values(sample: Sample, measurands: list[str]) -> list[dict[str, Any]]:
    """SampledValue entries (section 7.45) for the configured measurands of one reading."""
    r = sample.reading
    base = {"context": sample.context, "format": "Raw", "location": "Outlet"}
    out: list[dict[str, Any]] = []
    for measurand in measurands:
        if measurand == "Energy.Active.Import.Register":
            out.append(
                {**base, "value": str(round(r.energy_wh)), "measurand": measurand, "unit": "Wh"}
            )
        elif measurand == "Energy.Active.Export.Register" and r.energy_export_wh is not None:
            out.append(
                {
                    **base,
                    "value": str(round(r.energy_export_wh)),
                    "measurand": measurand,
                    "unit": "Wh",
                }
            )
        elif measurand == "Power.Active.Import":
            out.append({**base, "value": _fmt(r.power_w), "measurand": measurand, "unit": "W"})
        elif measurand == "Current.Offered" and sample.offered_current_a is not None:
            out.append(
                {
                    **base,
                    "value": _fmt(sample.offered_current_a),
                    "measurand": measurand,
                    "unit": "A",
                }
            )
        elif measurand == "Power.Offered" and sample.offered_power_w is not None:
            out.append(
                {
                    **base,
                    "value": _fmt(sample.offered_power_w),
                    "measurand": measurand,
                    "unit": "W",
                }
            )
        elif measurand.startswith("Current.Import"):
            for index, amps in enumerate(r.current_a, start=1):
                phase = f"L{index}"
                if measurand in ("Current.Import", f"Current.Import.{phase}"):
                    out.append(
                        {
                            **base,
                            "value": _fmt(amps, 2),
                            "measurand": "Current.Import",
                            "phase": phase,
                            "unit": "A",
                        }
                    )
        elif measurand.startswith("Voltage"):
            for index, volts in enumerate(r.voltage_v, start=1):
                phase = f"L{index}"
                if measurand in ("Voltage", f"Voltage.{phase}"):
                    out.append(
                        {
                            **base,
                            "value": _fmt(volts),
                            "measurand": "Voltage",
                            "phase": f"{phase}-N",
                            "unit": "V",
                        }
                    )
        elif measurand == "Frequency" and r.frequency_hz is not None:
            out.append({**base, "value": _fmt(r.frequency_hz, 2), "measurand": measurand})
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
