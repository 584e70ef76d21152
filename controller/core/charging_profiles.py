"""Smart-charging profiles in neutral words (OCPP 1.6 3.13, 7.8-7.14; 2.0.1 K): model, checks.

The adapters parse their protocol's ChargingProfile into ``ChargingProfile`` and answer
Rejected for whatever ``validate_profile`` returns a reason for; the composite schedule
(controller/core/composite.py) reads only this model.

Limits are ``Decimal``: the CSMS sends decimals with one fraction digit (1.6 7.14, "accepts
at most one digit fraction", e.g. ``10.2``), which a Decimal holds exactly, so comparisons
with the hardware limit and between profiles are exact and "never above" can be stated
without an epsilon. A float would turn W -> A -> W into 10999.999999999998 or 16.000000000000004.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import field, replace
from datetime import datetime
from decimal import ROUND_FLOOR, Context, Decimal

from controller.core.values import value

# IEC 61851-1: the control pilot cannot offer less than 6 A; limits below are reported.
PILOT_MINIMUM_A = Decimal(6)
# numberPhases absent: "3 SHALL be assumed" (1.6 7.12 W / errata 3.69; 2.0.1 K01.FR.49).
DEFAULT_PHASES = 3
DAY_S = 86_400
WEEK_S = 7 * DAY_S

# Division rounds towards zero so that a current computed from a power never allows more
# power than the profile (watts_to_amps(w) * V * phases <= w).
_FLOOR = Context(prec=28, rounding=ROUND_FLOOR)


class ProfilePurpose(enum.StrEnum):
    """chargingProfilePurpose (1.6 7.10, 2.0.1 ChargingProfilePurposeEnumType)."""

    # 1.6 ChargePointMaxProfile, 2.0.1 ChargingStationMaxProfile: the whole station.
    STATION_MAX = "StationMax"
    # 2.0.1 ChargingStationExternalConstraints: a limit set by an EMS/DSO, not by the CSMS.
    EXTERNAL_CONSTRAINTS = "ExternalConstraints"
    TX_DEFAULT = "TxDefault"
    TX = "Tx"


class ProfileKind(enum.StrEnum):
    """chargingProfileKind (1.6 7.9)."""

    ABSOLUTE = "Absolute"
    RECURRING = "Recurring"
    RELATIVE = "Relative"


class Recurrency(enum.StrEnum):
    """recurrencyKind (1.6 7.37, errata 3.79: every 24 h / 7 days from the startSchedule)."""

    DAILY = "Daily"
    WEEKLY = "Weekly"

    @property
    def period_s(self) -> int:
        return DAY_S if self is Recurrency.DAILY else WEEK_S


class RateUnit(enum.StrEnum):
    """chargingRateUnit (1.6 7.12): A per phase, or W in total."""

    A = "A"
    W = "W"


@value
class SchedulePeriod:
    """ChargingSchedulePeriod (1.6 7.14): from ``start_s`` after the schedule start until the
    next period's start (or the schedule's end), at most ``limit`` of the schedule's unit."""

    start_s: int
    limit: Decimal
    # numberPhases; None = not given (3 assumed when a number is needed).
    phases: int | None = None
    # 2.0.1 phaseToUse (only with phases == 1); never set by a 1.6 adapter.
    phase_to_use: int | None = None


@value
class ChargingSchedule:
    """ChargingSchedule (1.6 7.13, 2.0.1 ChargingScheduleType)."""

    unit: RateUnit
    periods: tuple[SchedulePeriod, ...]
    # None: the last period lasts for ever (or to the end of the transaction).
    duration_s: int | None = None
    # startSchedule (aware); Absolute and Recurring count from it, Relative ignores it.
    start: datetime | None = None
    # minChargingRate in ``unit``: what the EV needs at least to charge efficiently.
    min_rate: Decimal | None = None
    # 2.0.1 ChargingScheduleType.id, kept to report the profile as it was set (K09);
    # 1.6 has none.
    schedule_id: int | None = None


@value
class ChargingProfile:
    """ChargingProfile (1.6 7.8, 2.0.1 ChargingProfileType) as installed on the charger.

    ``connector_id`` is the 1.6 connectorId / 2.0.1 evseId it was set on: 0 = the station
    (station maximum, external constraints, or a TX default for every connector). A TX
    profile is bound to the charger's own transaction key ``tx_key`` (the adapter maps a
    1.6 transactionId or a 2.0.1 transactionId, or the RemoteStart session, onto it).
    """

    profile_id: int
    stack_level: int
    purpose: ProfilePurpose
    kind: ProfileKind
    schedule: ChargingSchedule
    connector_id: int = 0
    recurrency: Recurrency | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    tx_key: int | None = None


@value
class ProfileRules:
    """What the charger accepts: configuration keys and the version's stricter rules.

    1.6: ChargeProfileMaxStackLevel, ChargingScheduleMaxPeriods,
    ChargingScheduleAllowedChargingRateUnit (9.4); 2.0.1: SmartChargingCtrlr
    ProfileStackLevel, PeriodsPerSchedule, RateUnit (ChargingScheduleChargingRateUnit).
    """

    max_stack_level: int = 10
    max_periods: int = 48
    allowed_units: frozenset[RateUnit] = field(default_factory=lambda: frozenset(RateUnit))
    # Highest connector (1.6) / EVSE (2.0.1) id; 0 is always the station.
    max_connector_id: int = 1
    # 2.0.1 K01.FR.40: Absolute and Recurring SHALL have a startSchedule. 1.6 7.13 lets an
    # Absolute schedule without one count "relative to start of charging".
    start_required_for_absolute: bool = False
    # 2.0.1 K01.FR.41: Relative SHALL NOT have a startSchedule. 1.6 has no such rule; the
    # composite ignores a Relative startSchedule (it counts from the transaction start).
    relative_start_forbidden: bool = False
    # 2.0.1 K01.FR.38: a station maximum SHALL NOT be Relative. 1.6 allows it (and Home
    # Assistant's ocpp integration sends exactly that).
    relative_station_max_forbidden: bool = False

    @classmethod
    def ocpp16(cls, **keys: object) -> ProfileRules:
        return cls(**keys)  # type: ignore[arg-type]

    @classmethod
    def ocpp201(cls, **keys: object) -> ProfileRules:
        return cls(
            start_required_for_absolute=True,
            relative_start_forbidden=True,
            relative_station_max_forbidden=True,
            **keys,  # type: ignore[arg-type]
        )


def _aware(moment: datetime | None) -> bool:
    return moment is None or moment.utcoffset() is not None


def _finite_non_negative(value: Decimal) -> bool:
    return value.is_finite() and value >= 0


def validate_profile(
    profile: ChargingProfile,
    rules: ProfileRules,
    *,
    running_tx: Mapping[int, int] | None = None,
    from_csms: bool = True,
) -> str | None:
    """Why ``profile`` must be answered Rejected, or None if it may be installed.

    ``running_tx`` maps a connector id to the key of the transaction running on it (only
    needed for TX profiles). ``from_csms``: the profile came in a SetChargingProfile or
    RemoteStart (not from a local EMS), so ChargingStationExternalConstraints is refused.

    A 1.6 adapter answers an unknown connectorId with the CALLERROR
    PropertyConstraintViolation (1.6 errata 3.39) before asking here; 2.0.1 K01.FR.28 is
    Rejected, which the ``connector`` reason below covers.
    """
    schedule = profile.schedule
    periods = schedule.periods
    if not 0 <= profile.connector_id <= rules.max_connector_id:
        return f"connector {profile.connector_id} does not exist (2.0.1 K01.FR.28)"
    if profile.stack_level < 0:
        return "stackLevel below 0 (1.6 7.8: lowest level is 0)"
    if profile.stack_level > rules.max_stack_level:
        return (
            f"stackLevel {profile.stack_level} above {rules.max_stack_level} "
            "(1.6 9.4.1 ChargeProfileMaxStackLevel)"
        )
    if profile.purpose is ProfilePurpose.EXTERNAL_CONSTRAINTS and from_csms:
        return "ChargingStationExternalConstraints is set by an external system only (K01.FR.22)"
    if profile.purpose is ProfilePurpose.STATION_MAX and profile.connector_id != 0:
        return "the station maximum can only be set on connector 0 (1.6 3.13.1; 2.0.1 3.2)"
    if profile.purpose is ProfilePurpose.TX:
        if profile.connector_id == 0:
            return "a TX profile needs a connector > 0 (1.6 3.13.1; K01.FR.16)"
        running = (running_tx or {}).get(profile.connector_id)
        if running is None:
            return "no transaction on the connector for a TX profile (1.6 3.13.1; K01.FR.09)"
        if profile.tx_key is None:
            # The adapter binds a 1.6 TxProfile without transactionId to the running one.
            return "the TX profile is not bound to a transaction"
        if profile.tx_key != running:
            return "the TX profile names another transaction (K01.FR.33)"
    if schedule.unit not in rules.allowed_units:
        return (
            f"chargingRateUnit {schedule.unit} not allowed "
            "(1.6 9.4.2 ChargingScheduleAllowedChargingRateUnit; K01.FR.26)"
        )
    if not periods:
        return "no chargingSchedulePeriod (1.6 7.13: 1..*)"
    if len(periods) > rules.max_periods:
        return (
            f"{len(periods)} periods, more than {rules.max_periods} "
            "(1.6 9.4.3 ChargingScheduleMaxPeriods)"
        )
    if periods[0].start_s != 0:
        return "the first period does not start at 0 (1.6 errata 3.45/3.70; K01.FR.31)"
    for before, after in zip(periods, periods[1:], strict=False):
        if after.start_s <= before.start_s:
            return "periods not in strictly ascending startPeriod order (1.6 7.14; K01.FR.35)"
    for period in periods:
        if not _finite_non_negative(period.limit):
            return f"limit {period.limit} is not a number >= 0"
        if period.phases is not None and not 1 <= period.phases <= 3:
            return f"numberPhases {period.phases} not in 1..3"
        if period.phase_to_use is not None and (
            period.phases != 1 or not 1 <= period.phase_to_use <= 3
        ):
            return "phaseToUse needs numberPhases 1 and a phase 1..3 (K01.FR.19)"
    if schedule.min_rate is not None and not _finite_non_negative(schedule.min_rate):
        return f"minChargingRate {schedule.min_rate} is not a number >= 0"
    if schedule.duration_s is not None and schedule.duration_s < 0:
        return "negative duration"
    if not (_aware(schedule.start) and _aware(profile.valid_from) and _aware(profile.valid_to)):
        return "a time without a UTC offset"
    if profile.kind is ProfileKind.RECURRING:
        if profile.recurrency is None:
            return "Recurring without recurrencyKind (1.6 7.8, errata 3.56)"
        if schedule.start is None:
            # Errata 3.79: the recurrence restarts "at the same time as in the startSchedule".
            return "Recurring without startSchedule (1.6 errata 3.79; K01.FR.40)"
    if (
        profile.kind is ProfileKind.ABSOLUTE
        and schedule.start is None
        and rules.start_required_for_absolute
    ):
        return "Absolute without startSchedule (K01.FR.40)"
    if profile.kind is ProfileKind.RELATIVE:
        if schedule.start is not None and rules.relative_start_forbidden:
            return "Relative with a startSchedule (K01.FR.41)"
        if profile.purpose is ProfilePurpose.STATION_MAX and rules.relative_station_max_forbidden:
            return "a station maximum cannot be Relative (K01.FR.38)"
    if (
        profile.valid_from is not None
        and profile.valid_to is not None
        and profile.valid_from >= profile.valid_to
    ):
        return "validFrom is not before validTo (K01.FR.36/37: valid from <= t < to)"
    return None


def validate_remote_start_profile(profile: ChargingProfile, rules: ProfileRules) -> str | None:
    """Why the charging profile of a remote start must be refused, or None: a TX profile
    (1.6 5.11; 2.0.1 F01.FR.09, K05.FR.02) for the transaction the start will begin on its
    connector, checked as if that transaction ran. The adapter hands the profile (with
    ``tx_key`` None) to ``StationControl.begin_remote``, which binds it to that transaction."""
    if profile.purpose is not ProfilePurpose.TX:
        return "not a TX profile (1.6 5.11; F01.FR.09, K05.FR.02)"
    pending = -1  # stands for the transaction this remote start will begin
    return validate_profile(
        replace(profile, tx_key=pending), rules, running_tx={profile.connector_id: pending}
    )


# ----------------------------------------------------------------------------- install


def install_profile(
    installed: Iterable[ChargingProfile],
    profile: ChargingProfile,
    *,
    same_level_replaces: bool = True,
) -> tuple[ChargingProfile, ...]:
    """The installed set after accepting ``profile``: it replaces the profile with the same
    id (1.6 5.16.3/5.16.4; K01.FR.05) and the one with the same purpose and stack level
    (1.6 3.13.2) on the same connector (1.6 3.13.1: a connector's TX default replaces the
    connector-0 one "only for that specific connector") and, for TX profiles, the same
    transaction (1.6 5.16.2, K01.FR.39). ``same_level_replaces`` False (2.0.1): only the
    same id is replaced; the adapter refuses a same-level profile whose validity overlaps
    (K01.FR.06, DuplicateProfile), so the ones left are valid at different times."""

    def replaced(old: ChargingProfile) -> bool:
        if old.profile_id == profile.profile_id:
            return True
        return (
            same_level_replaces
            and old.purpose is profile.purpose
            and old.stack_level == profile.stack_level
            and old.connector_id == profile.connector_id
            and (profile.purpose is not ProfilePurpose.TX or old.tx_key == profile.tx_key)
        )

    return (*(p for p in installed if not replaced(p)), profile)


def same_level(old: ChargingProfile, new: ChargingProfile) -> bool:
    """Another profile (other id) of the same purpose and stack level on the same connector
    (for TX profiles: of the same transaction): 1.6 replaces it, 2.0.1 K01.FR.06/39 forbid
    two such valid at once."""
    return (
        old.profile_id != new.profile_id
        and old.purpose is new.purpose
        and old.stack_level == new.stack_level
        and old.connector_id == new.connector_id
        and (new.purpose is not ProfilePurpose.TX or old.tx_key == new.tx_key)
    )


def validity_overlaps(a: ChargingProfile, b: ChargingProfile) -> bool:
    """Whether [validFrom, validTo) of ``a`` and ``b`` share an instant (absent: unbounded)."""
    a_before_b_ends = a.valid_from is None or b.valid_to is None or a.valid_from < b.valid_to
    b_before_a_ends = b.valid_from is None or a.valid_to is None or b.valid_from < a.valid_to
    return a_before_b_ends and b_before_a_ends


def clear_profiles(
    installed: Iterable[ChargingProfile],
    *,
    profile_id: int | None = None,
    connector_id: int | None = None,
    purpose: ProfilePurpose | None = None,
    stack_level: int | None = None,
) -> tuple[tuple[ChargingProfile, ...], tuple[ChargingProfile, ...]]:
    """(kept, cleared) for ClearChargingProfile: every given criterion must match (logical
    AND, 1.6 errata 3.25/3.26); none given clears all. External constraints are not the
    CSMS's to clear (K01.FR.05 note, errata 2.38)."""

    def matches(p: ChargingProfile) -> bool:
        return (
            p.purpose is not ProfilePurpose.EXTERNAL_CONSTRAINTS
            and (profile_id is None or p.profile_id == profile_id)
            and (connector_id is None or p.connector_id == connector_id)
            and (purpose is None or p.purpose is purpose)
            and (stack_level is None or p.stack_level == stack_level)
        )

    profiles = tuple(installed)
    return (
        tuple(p for p in profiles if not matches(p)),
        tuple(p for p in profiles if matches(p)),
    )


def end_of_transaction(
    installed: Iterable[ChargingProfile], tx_key: int
) -> tuple[ChargingProfile, ...]:
    """The installed set after transaction ``tx_key`` ended: its TX profiles go (1.6 7.10
    "SHALL cease to be valid when the transaction terminates", 3.13.1 "SHOULD be deleted")."""
    return tuple(
        p for p in installed if not (p.purpose is ProfilePurpose.TX and p.tx_key == tx_key)
    )


# ----------------------------------------------------------------------------- units


def to_decimal(value: Decimal | int | float | str) -> Decimal:
    """A limit as Decimal; a float goes through its shortest repr (10.2 -> Decimal("10.2"))."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def amps_to_watts(current_a: Decimal, phases: int, voltage_v: Decimal) -> Decimal:
    """Total power of ``phases`` phases at ``current_a`` each (1.6 7.12 A: per phase)."""
    return current_a * voltage_v * phases


def watts_to_amps(power_w: Decimal, phases: int, voltage_v: Decimal) -> Decimal:
    """Current per phase = power / (line voltage * phases) (1.6 7.12 W; K01.FR.50), rounded
    down so that the current never allows more than ``power_w``."""
    return _FLOOR.divide(power_w, voltage_v * phases)


def quantize_down(value: Decimal, places: int = 1) -> Decimal:
    """``value`` with at most ``places`` fraction digits, rounded down: what an adapter puts
    on the wire (1.6 7.13/7.14 "accepts at most one digit fraction")."""
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_FLOOR)
