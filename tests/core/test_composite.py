"""Smart-charging core by example: profile validation (controller/core/charging_profiles.py)
and the composite schedule (controller/core/composite.py), one test per rule, named after
the OCPP 1.6 sections / errata and the 2.0.1 requirement ids and OCTT test cases (TC_K_*)
whose scenarios they replay. The properties are in test_composite_properties.py.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from controller.core.charging_profiles import (
    ChargingProfile,
    ChargingSchedule,
    ProfileKind,
    ProfilePurpose,
    ProfileRules,
    RateUnit,
    Recurrency,
    SchedulePeriod,
    amps_to_watts,
    clear_profiles,
    end_of_transaction,
    install_profile,
    quantize_down,
    to_decimal,
    validate_profile,
    watts_to_amps,
)
from controller.core.composite import (
    CompositePeriod,
    LimitSource,
    composite_schedule,
    expired,
    limit_at,
    next_change_s,
)

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)  # a Monday, 00:00 UTC
HW = Decimal(32)
TX = 7
D = Decimal


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def sched(
    *periods: tuple[int, str | int],
    unit: RateUnit = RateUnit.A,
    duration_s: int | None = None,
    start: datetime | None = T0,
    phases: int | None = None,
    min_rate: str | None = None,
) -> ChargingSchedule:
    return ChargingSchedule(
        unit,
        tuple(SchedulePeriod(at, D(limit), phases) for at, limit in periods),
        duration_s,
        start,
        None if min_rate is None else D(min_rate),
    )


def profile(
    profile_id: int,
    purpose: ProfilePurpose,
    schedule: ChargingSchedule,
    *,
    stack_level: int = 0,
    connector_id: int = 1,
    kind: ProfileKind = ProfileKind.ABSOLUTE,
    recurrency: Recurrency | None = None,
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
    tx_key: int | None = None,
) -> ChargingProfile:
    if purpose is ProfilePurpose.STATION_MAX:
        connector_id = 0
    if purpose is ProfilePurpose.TX and tx_key is None:
        tx_key = TX
    return ChargingProfile(
        profile_id,
        stack_level,
        purpose,
        kind,
        schedule,
        connector_id,
        recurrency,
        valid_from,
        valid_to,
        tx_key,
    )


def periods(cs: object) -> list[tuple[float, Decimal]]:
    return [(p.start_s, p.limit) for p in cs.periods]  # type: ignore[attr-defined]


MAX, EXT, DEF, TXP = (
    ProfilePurpose.STATION_MAX,
    ProfilePurpose.EXTERNAL_CONSTRAINTS,
    ProfilePurpose.TX_DEFAULT,
    ProfilePurpose.TX,
)

# ----------------------------------------------------------------------------- validation

RULES16 = ProfileRules.ocpp16(max_stack_level=5, max_periods=4, max_connector_id=2)
RULES201 = ProfileRules.ocpp201(max_stack_level=5, max_periods=4, max_connector_id=2)
GOOD = profile(1, DEF, sched((0, 16), (3600, "10.2")))


def test_a_good_profile_has_no_reason() -> None:
    assert validate_profile(GOOD, RULES16) is None
    assert validate_profile(GOOD, RULES201) is None
    tx = profile(2, TXP, sched((0, 16), start=None), kind=ProfileKind.RELATIVE)
    assert validate_profile(tx, RULES201, running_tx={1: TX}) is None


def _bad(**changes: object) -> ChargingProfile:
    return replace(GOOD, **changes)  # type: ignore[arg-type]


def _bad_schedule(**changes: object) -> ChargingProfile:
    return replace(GOOD, schedule=replace(GOOD.schedule, **changes))  # type: ignore[arg-type]


REJECTED = {
    # 1.6 errata 3.45 / 3.70 / 4.17; 2.0.1 K01.FR.31
    "first period not at 0": _bad_schedule(periods=(SchedulePeriod(10, D(16)),)),
    # 1.6 7.14 (a start is the previous period's end); K01.FR.35
    "periods not ascending": _bad_schedule(
        periods=(SchedulePeriod(0, D(16)), SchedulePeriod(600, D(8)), SchedulePeriod(600, D(6)))
    ),
    "negative limit": _bad_schedule(periods=(SchedulePeriod(0, D("-0.1")),)),
    "NaN limit": _bad_schedule(periods=(SchedulePeriod(0, D("NaN")),)),
    "negative minChargingRate": _bad_schedule(min_rate=D(-1)),
    # 1.6 9.4.1 ChargeProfileMaxStackLevel
    "stack level above the maximum": _bad(stack_level=6),
    "negative stack level": _bad(stack_level=-1),
    # 1.6 9.4.3 ChargingScheduleMaxPeriods
    "too many periods": _bad_schedule(
        periods=tuple(SchedulePeriod(i * 60, D(16)) for i in range(5))
    ),
    # 1.6 3.13.1, errata 3.79 (a recurrence restarts at the startSchedule's time); K01.FR.40
    "Recurring without recurrencyKind": _bad(kind=ProfileKind.RECURRING),
    "Recurring without startSchedule": _bad(
        kind=ProfileKind.RECURRING, recurrency=Recurrency.DAILY, schedule=sched((0, 6), start=None)
    ),
    # K01.FR.36/37: valid from <= t < to, so from >= to is valid never
    "validFrom == validTo": _bad(valid_from=s(0), valid_to=s(0)),
    "validFrom after validTo": _bad(valid_from=s(10), valid_to=s(0)),
    "numberPhases 0": _bad_schedule(periods=(SchedulePeriod(0, D(16), 0),)),
    "numberPhases 4": _bad_schedule(periods=(SchedulePeriod(0, D(16), 4),)),
    # K01.FR.19
    "phaseToUse with 3 phases": _bad_schedule(periods=(SchedulePeriod(0, D(16), 3, 1),)),
    # 1.6 3.13.1 "ChargePointMaxProfile can only be set at Charge Point ConnectorId 0"
    "station max on connector 1": replace(profile(1, MAX, sched((0, 16))), connector_id=1),
    # 1.6 3.13.1 "TxProfile SHALL only be set at Charge Point ConnectorId >0"; K01.FR.16
    # (TC_K_11_CS)
    "TX profile on connector 0": profile(1, TXP, sched((0, 16)), connector_id=0),
    # 1.6 3.13.1 "no transaction active ... SHALL discard it"; K01.FR.09 (TC_K_02_CS)
    "TX profile without a transaction": profile(1, TXP, sched((0, 16)), connector_id=2),
    # K01.FR.33 (TC_K_16_CS)
    "TX profile for another transaction": profile(1, TXP, sched((0, 16)), tx_key=99),
    # K01.FR.22
    "external constraints from the CSMS": profile(1, EXT, sched((0, 16))),
    # K01.FR.28 (TC_K_14_CS)
    "unknown connector": _bad(connector_id=3),
    "a naive startSchedule": _bad_schedule(start=datetime(2026, 3, 2)),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_semantically_invalid_profiles_are_rejected_in_both_versions(case: str) -> None:
    bad = REJECTED[case]
    assert validate_profile(bad, RULES16, running_tx={1: TX}) is not None
    assert validate_profile(bad, RULES201, running_tx={1: TX}) is not None


def test_units_not_configured_are_rejected() -> None:
    """1.6 9.4.2 ChargingScheduleAllowedChargingRateUnit; K01.FR.26 (TC_K_12_CS)."""
    only_a = replace(RULES16, allowed_units=frozenset({RateUnit.A}))
    watts = _bad_schedule(unit=RateUnit.W)
    assert validate_profile(watts, only_a) is not None
    assert validate_profile(GOOD, only_a) is None


def test_version_specific_start_rules() -> None:
    """K01.FR.40 (Absolute needs startSchedule), K01.FR.41 (Relative has none), K01.FR.38
    (no Relative station maximum) are 2.0.1 rules; 1.6 accepts those profiles: 7.13 counts an
    Absolute schedule without start "relative to start of charging", and the Home Assistant
    integration sends a Relative ChargePointMaxProfile."""
    absolute_no_start = _bad_schedule(start=None)
    relative_with_start = _bad(kind=ProfileKind.RELATIVE)
    relative_max = profile(1, MAX, sched((0, 16), start=None), kind=ProfileKind.RELATIVE)
    for p in (absolute_no_start, relative_with_start, relative_max):
        assert validate_profile(p, RULES16) is None
        assert validate_profile(p, RULES201) is not None


def test_external_constraints_from_a_local_system_are_accepted() -> None:
    ext = profile(1, EXT, sched((0, 16)), connector_id=0)
    assert validate_profile(ext, RULES201, from_csms=False) is None


# ----------------------------------------------------------------------------- install / clear


def test_same_id_or_same_purpose_and_stack_level_replaces() -> None:
    """1.6 3.13.2, 5.16.3/5.16.4; K01.FR.05 (TC_K_04_CS)."""
    a = profile(1, DEF, sched((0, 16)), stack_level=1)
    b = profile(2, DEF, sched((0, 10)), stack_level=2)
    same_id = profile(1, DEF, sched((0, 8)), stack_level=3)
    same_level = profile(3, DEF, sched((0, 6)), stack_level=2)
    assert install_profile([a, b], same_id) == (b, same_id)
    assert install_profile([a, b], same_level) == (a, same_level)


def test_connector_tx_default_replaces_the_connector0_one_only_for_that_connector() -> None:
    """1.6 3.13.1: "the TxDefaultProfile SHALL be replaced only for that specific connector"
    – both stay installed; the composite prefers the connector's own (below)."""
    everywhere = profile(1, DEF, sched((0, 16)), connector_id=0)
    here = profile(2, DEF, sched((0, 10)), connector_id=1)
    assert install_profile([everywhere], here) == (everywhere, here)


def test_tx_profiles_replace_per_transaction_and_stack_level() -> None:
    """1.6 5.16.2 (errata 3.42): a SetChargingProfile for the transaction with the stack level
    of the RemoteStart profile replaces it, any other level stacks."""
    remote = profile(1, TXP, sched((0, 16)), stack_level=0)
    same = profile(2, TXP, sched((0, 10)), stack_level=0)
    other = profile(3, TXP, sched((0, 10)), stack_level=1)
    other_tx = profile(4, TXP, sched((0, 10)), stack_level=0, tx_key=8)
    assert install_profile([remote], same) == (same,)
    assert install_profile([remote], other) == (remote, other)
    assert install_profile([remote], other_tx) == (remote, other_tx)


def test_clear_matches_all_given_criteria() -> None:
    """1.6 errata 3.25/3.26: logical AND; no criteria clears all (TC_K_05/06/24_CS)."""
    a = profile(1, DEF, sched((0, 16)), stack_level=1, connector_id=0)
    b = profile(2, DEF, sched((0, 16)), stack_level=2, connector_id=1)
    c = profile(3, MAX, sched((0, 16)), stack_level=1)
    ext = profile(4, EXT, sched((0, 16)), connector_id=0)
    everything = [a, b, c, ext]
    assert clear_profiles(everything, profile_id=2) == ((a, c, ext), (b,))
    assert clear_profiles(everything, purpose=DEF, stack_level=1) == ((b, c, ext), (a,))
    assert clear_profiles(everything, connector_id=0, purpose=MAX) == ((a, b, ext), (c,))
    assert clear_profiles(everything, connector_id=1, purpose=MAX) == ((a, b, c, ext), ())
    assert clear_profiles(everything) == ((ext,), (a, b, c))


def test_tx_profiles_go_with_their_transaction() -> None:
    """1.6 7.10 TxProfile "SHALL cease to be valid when the transaction terminates"."""
    tx = profile(1, TXP, sched((0, 16)))
    default = profile(2, DEF, sched((0, 16)))
    assert end_of_transaction([tx, default], TX) == (default,)


def test_expired_profiles() -> None:
    bounded = profile(1, DEF, sched((0, 16), duration_s=600), valid_to=s(3600))
    assert not expired(bounded, s(599))
    assert expired(bounded, s(600))  # the Absolute schedule has ended
    assert expired(replace(bounded, schedule=sched((0, 16))), s(3600))  # validTo
    recurring = replace(bounded, kind=ProfileKind.RECURRING, valid_to=None)
    assert not expired(recurring, s(10**6))


# ----------------------------------------------------------------------------- composite


def test_no_profiles_is_the_hardware_limit_tc_k_39() -> None:
    """TC_K_39_CS / 1.6 3.13.6: without profiles, charge as if no constraints apply."""
    cs = composite_schedule([], 0, T0, 300, hardware_limit_a=HW)
    assert cs.periods == (CompositePeriod(0, HW, 3),)
    got = limit_at([], 1, T0, hardware_limit_a=HW)
    assert (got.limit_a, got.limit_w, got.source.kind) == (HW, D(22080), LimitSource.HARDWARE)


def test_stacking_with_a_shorter_higher_level_tc_k_40() -> None:
    """TC_K_40_CS (errata 6.2.72), K08.FR.02, 1.6 errata 3.43: after the stack-level-1
    schedule's 150 s the level-0 one applies again."""
    low = profile(1, DEF, sched((0, 6), (100, 8), (200, 10), duration_s=400), stack_level=0)
    high = profile(2, DEF, sched((0, 7), (100, 9), duration_s=150), stack_level=1)
    cs = composite_schedule([low, high], 1, T0, 350, hardware_limit_a=HW)
    assert periods(cs) == [(0, 7), (100, 9), (150, 8), (200, 10)]


def test_combining_purposes_tc_k_41() -> None:
    """TC_K_41_CS (errata 6.2.73), K08.FR.04, 2.0.1 3.5: the TX profile overrules the TX
    default while it defines a limit, the station maximum caps both, the TX default is back
    after the TX profile's duration."""
    ps = [
        profile(1, MAX, sched((0, 10), duration_s=86400)),
        profile(2, DEF, sched((0, 6), (60, 10), (120, 8), (180, 15), (260, 8), duration_s=300)),
        profile(3, TXP, sched((0, 8), (50, 11), (140, 16), (200, 6), (240, 12), duration_s=260)),
    ]
    cs = composite_schedule(ps, 1, T0, 400, hardware_limit_a=HW, tx_key=TX, tx_start=T0)
    assert periods(cs) == [(0, 8), (50, 10), (200, 6), (240, 10), (260, 8), (300, 10)]
    assert limit_at(ps, 1, s(210), hardware_limit_a=HW, tx_key=TX).source.profile_id == 3
    assert limit_at(ps, 1, s(100), hardware_limit_a=HW, tx_key=TX).source.kind is MAX_SOURCE


MAX_SOURCE = LimitSource.STATION_MAX


def test_tx_profile_of_another_transaction_does_not_apply() -> None:
    """K01.FR.04: a TX profile applies to its own transaction only."""
    tx = profile(1, TXP, sched((0, 10)))
    assert limit_at([tx], 1, T0, hardware_limit_a=HW, tx_key=8).limit_a == HW
    assert limit_at([tx], 1, T0, hardware_limit_a=HW).limit_a == HW
    assert limit_at([tx], 2, T0, hardware_limit_a=HW, tx_key=TX).limit_a == HW
    assert limit_at([tx], 1, T0, hardware_limit_a=HW, tx_key=TX).limit_a == 10


def test_connector_tx_default_beats_connector0_at_the_same_level_only() -> None:
    """1.6 3.13.1 "replaced only for that specific connector" (same stack level); a higher
    stack level on connector 0 still prevails (3.13.2)."""
    everywhere = profile(1, DEF, sched((0, 16)), connector_id=0)
    here = profile(2, DEF, sched((0, 10)), connector_id=1)
    ps = [everywhere, here]
    assert limit_at(ps, 1, T0, hardware_limit_a=HW).limit_a == 10
    assert limit_at(ps, 2, T0, hardware_limit_a=HW).limit_a == 16
    higher = replace(everywhere, stack_level=1)
    assert limit_at([higher, here], 1, T0, hardware_limit_a=HW).limit_a == 16


def test_station_max_caps_every_connector_and_connector0_is_the_station() -> None:
    """1.6 3.13.3 / 5.7 connector 0 (errata 3.30); K08.FR.03/06: connector 0 has the station
    maximum and the station-wide TX defaults, never a connector's own profiles."""
    station = profile(1, MAX, sched((0, 20)))
    everywhere = profile(2, DEF, sched((0, 16), (600, 25)), connector_id=0)
    here = profile(3, DEF, sched((0, 8)), connector_id=1)
    tx = profile(4, TXP, sched((0, 6)))
    ps = [station, everywhere, here, tx]
    assert periods(composite_schedule(ps, 0, T0, 1200, hardware_limit_a=63)) == [
        (0, 16),
        (600, 20),
    ]
    assert limit_at(ps, 2, s(700), hardware_limit_a=HW).limit_a == 20
    assert limit_at(ps, 1, s(700), hardware_limit_a=HW, tx_key=TX).limit_a == 6


def test_external_constraints_cap_like_the_station_maximum() -> None:
    """2.0.1 3.5 figures 99/100, SC.01, K11.FR.01/K12.FR.01."""
    ext = profile(1, EXT, sched((0, 12)), connector_id=0)
    tx = profile(2, TXP, sched((0, 16)))
    got = limit_at([ext, tx], 1, T0, hardware_limit_a=HW, tx_key=TX)
    assert (got.limit_a, got.source.kind) == (12, LimitSource.EXTERNAL_CONSTRAINTS)


def test_relative_counts_from_the_transaction_start() -> None:
    """1.6 7.9/7.13, K01.FR.41/42: a Relative TX profile from the transaction start."""
    rel = profile(
        1, TXP, sched((0, 6), (1800, 16), start=None, duration_s=3600), kind=ProfileKind.RELATIVE
    )
    kw = {"hardware_limit_a": HW, "tx_key": TX, "tx_start": s(600)}
    assert limit_at([rel], 1, s(600 + 1799), **kw).limit_a == 6  # type: ignore[arg-type]
    assert limit_at([rel], 1, s(600 + 1800), **kw).limit_a == 16  # type: ignore[arg-type]
    assert limit_at([rel], 1, s(600 + 3600), **kw).limit_a == HW  # type: ignore[arg-type]
    assert next_change_s([rel], 1, s(600), **kw) == 1800  # type: ignore[arg-type]


def test_relative_without_a_transaction_counts_from_the_window_start_tc_k_21() -> None:
    """K08.FR.06 "as if there is a transaction ongoing"; TC_K_21_CS: a Relative TX default
    valid from +300 s shows up at 300 s."""
    rel = profile(1, DEF, sched((0, 6), start=None), kind=ProfileKind.RELATIVE, valid_from=s(300))
    cs = composite_schedule([rel], 1, T0, 400, hardware_limit_a=HW)
    assert periods(cs) == [(0, HW), (300, 6)]
    stepped = profile(1, DEF, sched((0, 6), (60, 10), start=None), kind=ProfileKind.RELATIVE)
    assert periods(composite_schedule([stepped], 1, s(5000), 100, hardware_limit_a=HW)) == [
        (0, 6),
        (60, 10),
    ]
    # limit_at without a transaction: what a transaction starting now would get.
    assert limit_at([stepped], 1, s(5000), hardware_limit_a=HW).limit_a == 6


def test_absolute_without_start_counts_from_the_transaction_in_16() -> None:
    """1.6 7.13 startSchedule: "If absent the schedule will be relative to start of charging"."""
    p = profile(1, DEF, sched((0, 6), (60, 10), start=None))
    assert limit_at([p], 1, s(70), hardware_limit_a=HW, tx_key=TX, tx_start=T0).limit_a == 10


def test_valid_to_passes_to_the_hardware_limit_tc_k_22() -> None:
    """TC_K_22_CS, K01.FR.37."""
    p = profile(1, DEF, sched((0, 6)), valid_from=s(-10), valid_to=s(300))
    assert periods(composite_schedule([p], 1, T0, 400, hardware_limit_a=HW)) == [(0, 6), (300, HW)]


def test_start_schedule_in_the_future_tc_k_23() -> None:
    """TC_K_23_CS, K01.FR.30: imposed only from startSchedule on."""
    p = profile(1, DEF, sched((0, 6), start=s(60)), valid_from=s(50), valid_to=s(400))
    assert periods(composite_schedule([p], 1, T0, 300, hardware_limit_a=HW)) == [(0, HW), (60, 6)]


def test_period_past_the_duration_is_not_executed() -> None:
    """1.6 5.16.4 note, K01.FR.11/12."""
    p = profile(1, DEF, sched((0, 6), (500, 10), duration_s=300))
    assert periods(composite_schedule([p], 1, T0, 600, hardware_limit_a=HW)) == [(0, 6), (300, HW)]


def test_daily_recurring_example_of_16_section_3_13_7() -> None:
    """1.6 3.13.7: 11 kW, 6 kW from 08:00 to 20:00, daily; in W and in A (7.12)."""
    p = profile(
        100,
        DEF,
        sched(
            (0, 11000),
            (28800, 6000),
            (72000, 11000),
            unit=RateUnit.W,
            duration_s=86400,
            start=datetime(2013, 1, 1, tzinfo=UTC),
            phases=3,
        ),
        kind=ProfileKind.RECURRING,
        recurrency=Recurrency.DAILY,
    )
    cs = composite_schedule([p], 1, T0, 2 * 86400, unit=RateUnit.W, hardware_limit_a=HW)
    assert periods(cs) == [
        (0, 11000),
        (28800, 6000),
        (72000, 11000),
        (86400 + 28800, 6000),
        (86400 + 72000, 11000),
    ]
    at_noon = limit_at([p], 1, s(12 * 3600), hardware_limit_a=HW)
    assert at_noon.limit_w == 6000
    assert at_noon.limit_a == watts_to_amps(D(6000), 3, D(230))
    assert at_noon.limit_a * 690 <= 6000


def test_weekly_recurrence_wraps_at_the_week() -> None:
    """Errata 3.79: Weekly restarts every 7 days at the startSchedule's time and weekday; a
    duration shorter than the week falls back (errata 3.43)."""
    sunday = profile(
        1,
        DEF,
        sched((0, 6), duration_s=86400, start=datetime(2026, 1, 4, tzinfo=UTC)),
        kind=ProfileKind.RECURRING,
        recurrency=Recurrency.WEEKLY,
    )
    assert limit_at([sunday], 1, s(6 * 86400 - 1), hardware_limit_a=HW).limit_a == HW
    assert limit_at([sunday], 1, s(6 * 86400), hardware_limit_a=HW).limit_a == 6
    assert limit_at([sunday], 1, s(7 * 86400 - 1), hardware_limit_a=HW).limit_a == 6
    assert limit_at([sunday], 1, s(7 * 86400), hardware_limit_a=HW).limit_a == HW


def test_recurring_schedule_longer_than_its_recurrence_is_cut() -> None:
    """1.6 errata 3.44: "the remainder periods SHALL NOT be executed"."""
    p = profile(
        1,
        DEF,
        sched((0, 6), (90000, 10), duration_s=100000),
        kind=ProfileKind.RECURRING,
        recurrency=Recurrency.DAILY,
    )
    assert limit_at([p], 1, s(86400 + 3600), hardware_limit_a=HW).limit_a == 6


def test_recurring_does_not_apply_before_its_start() -> None:
    """K01.FR.30: nothing before startSchedule, also for Recurring."""
    p = profile(
        1,
        DEF,
        sched((0, 6), start=s(3600)),
        kind=ProfileKind.RECURRING,
        recurrency=Recurrency.DAILY,
    )
    assert limit_at([p], 1, s(3599), hardware_limit_a=HW).limit_a == HW
    assert limit_at([p], 1, s(3600 + 86400 * 3), hardware_limit_a=HW).limit_a == 6


def test_never_above_the_hardware_limit() -> None:
    p = profile(1, TXP, sched((0, 40)))
    got = limit_at([p], 1, T0, hardware_limit_a=16, tx_key=TX)
    assert (got.limit_a, got.source.kind) == (16, LimitSource.HARDWARE)


def test_decimal_limits_stay_exact() -> None:
    """Issue 12 "Bad input": ``"limit": 10.2`` is answered on its merits, exactly."""
    p = profile(1, DEF, sched((0, "10.2")))
    cs = composite_schedule([p], 1, T0, 60, hardware_limit_a=HW)
    assert periods(cs) == [(0, D("10.2"))]
    assert to_decimal(10.2) == D("10.2")
    got = limit_at([p], 1, T0, hardware_limit_a=D("10.2"))
    assert got.limit_a == D("10.2") and got.source.kind is LimitSource.TX_DEFAULT


def test_watts_use_the_phases_in_use() -> None:
    """7.12/K01.FR.50 with errata 3.34: numberPhases above what the connector uses keeps the
    limit as given for the phases that can be used; numberPhases 1 on a 3-phase connector
    charges one phase (2.0.1 errata 2.36: the lowest numberPhases wins)."""
    three = profile(1, DEF, sched((0, 6900), unit=RateUnit.W, phases=3))
    assert limit_at([three], 1, T0, hardware_limit_a=HW, phases=3).limit_a == 10
    assert limit_at([three], 1, T0, hardware_limit_a=HW, phases=1).limit_a == 30
    one = profile(1, DEF, sched((0, 16), phases=1))
    got = limit_at([one], 1, T0, hardware_limit_a=HW, phases=3)
    assert (got.limit_a, got.phases, got.limit_w) == (16, 1, 3680)
    absent = profile(1, DEF, sched((0, 6900), unit=RateUnit.W))  # numberPhases absent: 3
    assert limit_at([absent], 1, T0, hardware_limit_a=HW).limit_a == 10


def test_composite_in_watts_and_amps() -> None:
    """6.21 chargingRateUnit "can be used to force a power or current profile"."""
    p = profile(1, DEF, sched((0, 16), (60, 8)))
    watts = composite_schedule([p], 1, T0, 120, unit=RateUnit.W, hardware_limit_a=HW)
    assert periods(watts) == [(0, 11040), (60, 5520)]
    assert watts.unit is RateUnit.W


def test_min_charging_rate_and_the_pilot_minimum_are_reported() -> None:
    """1.6 7.13 minChargingRate and 3.13.4 (reported, not applied); IEC 61851-1 6 A."""
    p = profile(1, TXP, sched((0, 8), (60, 5), (120, 0), min_rate="7"))
    kw = {"hardware_limit_a": HW, "tx_key": TX, "tx_start": T0}
    ok = limit_at([p], 1, T0, **kw)  # type: ignore[arg-type]
    assert (ok.limit_a, ok.min_rate_a, ok.below_min_rate, ok.below_pilot_minimum) == (
        8,
        7,
        False,
        False,
    )
    low = limit_at([p], 1, s(60), **kw)  # type: ignore[arg-type]
    assert (low.limit_a, low.below_min_rate, low.below_pilot_minimum) == (5, True, True)
    zero = limit_at([p], 1, s(120), **kw)  # type: ignore[arg-type]
    assert (zero.limit_a, zero.below_pilot_minimum) == (0, True)
    cs = composite_schedule([p], 1, T0, 200, unit=RateUnit.W, **kw)  # type: ignore[arg-type]
    assert cs.min_rate == 7 * 690


def test_next_change_skips_boundaries_that_change_nothing() -> None:
    a = profile(1, DEF, sched((0, 10), (60, 10), (120, 8)))
    assert next_change_s([a], 1, T0, hardware_limit_a=HW) == 120
    assert next_change_s([a], 1, s(130), hardware_limit_a=HW) is None
    assert next_change_s([a], 1, s(30.5), hardware_limit_a=HW) == 89.5


def test_conversions_and_wire_rounding() -> None:
    assert amps_to_watts(D(16), 3, D(230)) == 11040
    assert watts_to_amps(D(11040), 3, D(230)) == 16
    assert quantize_down(watts_to_amps(D(11000), 3, D(230))) == D("15.9")
