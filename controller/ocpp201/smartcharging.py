"""OCPP 2.0.1 ChargingProfileType (K01, 2.11) to and from the version-neutral profile model;
the rules live in core/charging_profiles.py and core/composite.py."""

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
from controller.ocpp201.dm import DeviceModel

PURPOSES = {
    "ChargingStationMaxProfile": ProfilePurpose.STATION_MAX,
    "ChargingStationExternalConstraints": ProfilePurpose.EXTERNAL_CONSTRAINTS,
    "TxDefaultProfile": ProfilePurpose.TX_DEFAULT,
    "TxProfile": ProfilePurpose.TX,
}
PURPOSE_NAMES = {purpose: name for name, purpose in PURPOSES.items()}
UNITS = {"A": RateUnit.A, "W": RateUnit.W}
# ChargingLimitSourceEnumType: who set a profile. Everything a CSMS sets is CSO's; the
# external constraints would be an EMS's (K11.FR.06, K12.FR.05).
SOURCE_CSO = "CSO"
SOURCE_EMS = "EMS"
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
            schedule_id=int(schedule["id"]),
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


def limit_source(profile: ChargingProfile) -> str:
    """The chargingLimitSource of an installed profile (K09)."""
    if profile.purpose is ProfilePurpose.EXTERNAL_CONSTRAINTS:
        return SOURCE_EMS
    return SOURCE_CSO


def _number(value: Decimal) -> int | float:
    """A decimal as JSON: an integer where it is one (2.0.1 decimals carry no fixed
    precision, so the CSMS gets back what it set)."""
    return int(value) if value == value.to_integral_value() else float(value)


def _time_text(moment: datetime) -> str:
    return iso_utc(moment)


def profile_payload(profile: ChargingProfile, transaction_id: str | None) -> dict[str, Any]:
    """ChargingProfileType of an installed profile, as it was set (K09 ReportChargingProfiles);
    ``transaction_id``: the 2.0.1 transactionId of a TxProfile's transaction."""
    schedule = profile.schedule
    periods: list[dict[str, Any]] = []
    for p in schedule.periods:
        period: dict[str, Any] = {"startPeriod": p.start_s, "limit": _number(p.limit)}
        if p.phases is not None:
            period["numberPhases"] = p.phases
        if p.phase_to_use is not None:
            period["phaseToUse"] = p.phase_to_use
        periods.append(period)
    body: dict[str, Any] = {
        # A schedule stored before the id was kept reports the profile's id.
        "id": profile.profile_id if schedule.schedule_id is None else schedule.schedule_id,
        "chargingRateUnit": schedule.unit.value,
        "chargingSchedulePeriod": periods,
    }
    if schedule.start is not None:
        body["startSchedule"] = _time_text(schedule.start)
    if schedule.duration_s is not None:
        body["duration"] = schedule.duration_s
    if schedule.min_rate is not None:
        body["minChargingRate"] = _number(schedule.min_rate)
    out: dict[str, Any] = {
        "id": profile.profile_id,
        "stackLevel": profile.stack_level,
        "chargingProfilePurpose": PURPOSE_NAMES[profile.purpose],
        "chargingProfileKind": profile.kind.value,
        "chargingSchedule": [body],
    }
    if profile.recurrency is not None:
        out["recurrencyKind"] = profile.recurrency.value
    if profile.valid_from is not None:
        out["validFrom"] = _time_text(profile.valid_from)
    if profile.valid_to is not None:
        out["validTo"] = _time_text(profile.valid_to)
    if transaction_id is not None:
        out["transactionId"] = transaction_id
    return out


def composite_payload(schedule: CompositeSchedule, evse_id: int) -> dict[str, Any]:
    """GetCompositeScheduleResponse (K08) for an Accepted request: whole seconds, limits
    rounded down to one decimal (never more than the charger allows), equal neighbours
    merged after rounding."""
    periods: list[dict[str, Any]] = []
    for p in schedule.periods:
        entry: dict[str, Any] = {
            "startPeriod": int(p.start_s),
            "limit": _number(quantize_down(p.limit)),
            "numberPhases": p.phases,
        }
        if periods and periods[-1]["startPeriod"] == entry["startPeriod"]:
            periods[-1] = entry  # a sub-second period: the later value holds from that second
        elif periods and (periods[-1]["limit"], periods[-1]["numberPhases"]) == (
            entry["limit"],
            entry["numberPhases"],
        ):
            continue
        else:
            periods.append(entry)
    return {
        "status": "Accepted",
        "schedule": {
            "evseId": evse_id,
            "duration": schedule.duration_s,
            "scheduleStart": iso_utc(schedule.start.replace(microsecond=0)),
            "chargingRateUnit": schedule.unit.value,
            "chargingSchedulePeriod": periods,
        },
    }
