"""OCPP 1.6 Smart Charging words (3.13, 5.5, 5.7, 5.16, 7.8-7.14): 1.6 payloads to and from
the version-neutral profile model; the rules live in core/charging_profiles.py and
core/composite.py."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from controller.core.charging_profiles import (
    ChargingProfile,
    ChargingSchedule,
    ProfileKind,
    ProfilePurpose,
    ProfileRules,
    RateUnit,
    Recurrency,
    SchedulePeriod,
    quantize_down,
    to_decimal,
)
from controller.core.composite import CompositeSchedule
from controller.core.timestamps import iso_utc
from controller.ocpp16.settings import Settings

PURPOSES = {
    "ChargePointMaxProfile": ProfilePurpose.STATION_MAX,
    "TxDefaultProfile": ProfilePurpose.TX_DEFAULT,
    "TxProfile": ProfilePurpose.TX,
}
UNITS = {"Current": RateUnit.A, "Power": RateUnit.W}


class BadProfile(ValueError):
    """A profile this charger cannot even read (e.g. a time that is no ISO 8601 date):
    answered Rejected, like any profile it will not apply."""


def _time(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadProfile(f"not a date-time: {text!r}") from None


def parse_profile(
    raw: dict[str, Any], connector_id: int, tx_key: int | None = None
) -> ChargingProfile:
    """csChargingProfiles (7.8) set on ``connector_id``; ``tx_key``: the charger's key of
    the transaction a TxProfile names (None: not running or not named). Schema-valid input
    is assumed (the RPC layer checked it); semantic checks are validate_profile's."""
    schedule = raw["chargingSchedule"]
    recurrency = raw.get("recurrencyKind")
    kind = ProfileKind(raw["chargingProfileKind"])
    return ChargingProfile(
        profile_id=int(raw["chargingProfileId"]),
        stack_level=int(raw["stackLevel"]),
        purpose=PURPOSES[raw["chargingProfilePurpose"]],
        kind=kind,
        connector_id=connector_id,
        # Errata 3.56: recurrencyKind only means something for Recurring profiles.
        recurrency=Recurrency(recurrency)
        if recurrency is not None and kind is ProfileKind.RECURRING
        else None,
        valid_from=_time(raw.get("validFrom")),
        valid_to=_time(raw.get("validTo")),
        tx_key=tx_key,
        schedule=ChargingSchedule(
            unit=RateUnit(schedule["chargingRateUnit"]),
            duration_s=schedule.get("duration"),
            start=_time(schedule.get("startSchedule")),
            min_rate=None
            if schedule.get("minChargingRate") is None
            else to_decimal(schedule["minChargingRate"]),
            periods=tuple(
                SchedulePeriod(
                    start_s=int(p["startPeriod"]),
                    limit=to_decimal(p["limit"]),
                    phases=p.get("numberPhases"),
                )
                for p in schedule["chargingSchedulePeriod"]
            ),
        ),
    )


def rules(settings: Settings, connectors: int) -> ProfileRules:
    """What SetChargingProfile may use (9.4 keys)."""
    return ProfileRules.ocpp16(
        max_stack_level=settings.get_int("ChargeProfileMaxStackLevel"),
        max_periods=settings.get_int("ChargingScheduleMaxPeriods"),
        allowed_units=frozenset(
            UNITS[u] for u in settings.get_csl("ChargingScheduleAllowedChargingRateUnit")
        ),
        max_connector_id=connectors,
    )


def _number(value: Decimal) -> int | float:
    """A decimal as JSON: an integer where it is one, else the one-digit fraction (7.14)."""
    value = quantize_down(value)
    return int(value) if value == value.to_integral_value() else float(value)


def composite_payload(schedule: CompositeSchedule, connector_id: int) -> dict[str, Any]:
    """GetCompositeSchedule.conf (6.23) for an Accepted request: scheduleStart at the top
    level, none inside chargingSchedule (errata 3.57); periods in whole seconds."""
    start = schedule.start.replace(microsecond=0)
    periods: list[dict[str, Any]] = []
    for p in schedule.periods:
        entry: dict[str, Any] = {
            "startPeriod": int(p.start_s),
            "limit": _number(p.limit),
            "numberPhases": p.phases,
        }
        if periods and periods[-1]["startPeriod"] == entry["startPeriod"]:
            periods[-1] = entry  # a sub-second period: the later value holds from that second
        elif periods and (periods[-1]["limit"], periods[-1]["numberPhases"]) == (
            entry["limit"],
            entry["numberPhases"],
        ):
            continue  # equal after rounding to the wire's precision
        else:
            periods.append(entry)
    charging_schedule: dict[str, Any] = {
        "duration": schedule.duration_s,
        "chargingRateUnit": schedule.unit.value,
        "chargingSchedulePeriod": periods,
    }
    if schedule.min_rate is not None:
        charging_schedule["minChargingRate"] = _number(schedule.min_rate)
    return {
        "status": "Accepted",
        "connectorId": connector_id,
        "scheduleStart": iso_utc(start),
        "chargingSchedule": charging_schedule,
    }
