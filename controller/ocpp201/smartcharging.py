"""OCPP 2.0.1 ChargingProfileType (K01, 2.11) to and from the version-neutral profile model;
the rules live in core/charging_profiles.py and core/composite.py."""

from __future__ import annotations

from datetime import datetime
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
    to_decimal,
)
from controller.ocpp201.dm import DeviceModel

PURPOSES = {
    "ChargingStationMaxProfile": ProfilePurpose.STATION_MAX,
    "ChargingStationExternalConstraints": ProfilePurpose.EXTERNAL_CONSTRAINTS,
    "TxDefaultProfile": ProfilePurpose.TX_DEFAULT,
    "TxProfile": ProfilePurpose.TX,
}
UNITS = {"A": RateUnit.A, "W": RateUnit.W}
SMART_CHARGING = "SmartChargingCtrlr"


class BadProfile(ValueError):
    """A profile this charger cannot read (a time that is no date-time, a schedule for an
    ISO 15118 EV): answered Rejected like any profile it will not apply. ``reason_code``
    is the Appendix 5 reason code for the answer's statusInfo."""

    def __init__(self, message: str, reason_code: str = "InvalidProfile") -> None:
        super().__init__(message)
        self.reason_code = reason_code


def _time(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadProfile(f"not a date-time: {text!r}", "InvalidSchedule") from None


def parse_profile(raw: dict[str, Any], evse_id: int, tx_key: int | None = None) -> ChargingProfile:
    """A schema-valid ChargingProfileType set on ``evse_id`` (0: the station); ``tx_key``:
    the charger's key of the transaction a TxProfile is for. Semantic checks are
    ``validate_profile``'s; what the neutral model cannot hold raises BadProfile."""
    schedules = raw["chargingSchedule"]
    if len(schedules) != 1:
        # K01.FR.xx: up to three schedules only for an ISO 15118 EV to choose from; evsed
        # speaks IEC 61851-1 only, so a profile it could not follow whole is refused.
        raise BadProfile("more than one chargingSchedule (ISO 15118 only)", "InvalidSchedule")
    schedule = schedules[0]
    if "salesTariff" in schedule:
        raise BadProfile("salesTariff (ISO 15118 only) is not supported", "InvalidSchedule")
    kind = ProfileKind(raw["chargingProfileKind"])
    recurrency = raw.get("recurrencyKind")
    return ChargingProfile(
        profile_id=int(raw["id"]),
        stack_level=int(raw["stackLevel"]),
        purpose=PURPOSES[raw["chargingProfilePurpose"]],
        kind=kind,
        connector_id=evse_id,
        recurrency=Recurrency(recurrency)
        if recurrency is not None and kind is ProfileKind.RECURRING
        else None,
        valid_from=_time(raw.get("validFrom")),
        valid_to=_time(raw.get("validTo")),
        tx_key=tx_key,
        schedule=ChargingSchedule(
            unit=UNITS[schedule["chargingRateUnit"]],
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
                    phase_to_use=p.get("phaseToUse"),
                )
                for p in schedule["chargingSchedulePeriod"]
            ),
        ),
    )


def enabled(model: DeviceModel) -> bool:
    """SmartChargingCtrlr.Enabled: without it a profile is ignored (F01.FR.12, K05.FR.04)."""
    try:
        return model.get_bool(SMART_CHARGING, "Enabled")
    except KeyError:
        return False


def rules(model: DeviceModel, evses: int) -> ProfileRules:
    """What a profile may use: SmartChargingCtrlr ProfileStackLevel, PeriodsPerSchedule and
    RateUnit, with 2.0.1's stricter rules (K01.FR.38/40/41)."""

    def number(name: str, default: int) -> int:
        try:
            return model.get_int(SMART_CHARGING, name)
        except (KeyError, ValueError):
            return default

    try:
        units = frozenset(
            UNITS[u] for u in model.get_list(SMART_CHARGING, "RateUnit") if u in UNITS
        )
    except KeyError:
        units = frozenset(RateUnit)
    return ProfileRules.ocpp201(
        max_stack_level=number("ProfileStackLevel", 10),
        max_periods=number("PeriodsPerSchedule", 48),
        allowed_units=units,
        max_connector_id=evses,
    )
