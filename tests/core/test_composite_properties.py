"""Property-based tests of the composite schedule (controller/core/composite.py).

Arbitrary sets of profiles (every purpose, kind, unit, connector, stack level, validity and
duration) are checked against ``oracle``: an independent, instant-by-instant restatement of
OCPP 1.6 3.13.1-3.13.3 (errata 3.43/3.44/3.79) and 2.0.1 K 3.4/3.5, K01.FR.36/37, SC.01,
written without the interval arithmetic of the module under test. Then the properties the
issue names: never above a prevailing profile or the hardware, stack-level precedence,
daily/weekly wrap-around, Relative schedules moving with the transaction start,
validFrom/validTo edges, A <-> W round trips, composite_schedule == limit_at sampled, and
next_change_s being the next change.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Context, Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.core.charging_profiles import (
    DAY_S,
    WEEK_S,
    ChargingProfile,
    ChargingSchedule,
    ProfileKind,
    ProfilePurpose,
    RateUnit,
    Recurrency,
    SchedulePeriod,
    amps_to_watts,
    watts_to_amps,
)
from controller.core.composite import composite_schedule, limit_at, next_change_s

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)  # a Monday
US = timedelta(microseconds=1)
TX_KEY = 7
HW_A = Decimal(32)
VOLTS = Decimal(230)
FLOOR = Context(prec=28, rounding=ROUND_FLOOR)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ----------------------------------------------------------------------------- oracle


def _offset_in_schedule(p: ChargingProfile, t: datetime, anchor: datetime) -> float | None:
    """Seconds into the schedule at ``t``, None where the schedule defines nothing."""
    s = p.schedule
    if p.valid_from is not None and t < p.valid_from:
        return None
    if p.valid_to is not None and t >= p.valid_to:
        return None
    origin = anchor if p.kind is ProfileKind.RELATIVE or s.start is None else s.start
    elapsed = (t - origin).total_seconds()
    if elapsed < 0:
        return None
    limit_s = s.duration_s
    if p.kind is ProfileKind.RECURRING and p.recurrency is not None:
        every = DAY_S if p.recurrency is Recurrency.DAILY else WEEK_S
        elapsed %= every
        limit_s = every if limit_s is None else min(limit_s, every)
    if limit_s is not None and elapsed >= limit_s:
        return None
    return elapsed


def _period_limit(
    p: ChargingProfile, t: datetime, anchor: datetime, phases: int
) -> tuple[Decimal, int] | None:
    elapsed = _offset_in_schedule(p, t, anchor)
    if elapsed is None:
        return None
    current = [q for q in p.schedule.periods if q.start_s <= elapsed][-1]
    n = min(current.phases or 3, phases)
    if p.schedule.unit is RateUnit.A:
        return current.limit, n
    # Rounded down: a current from a power never allows more than that power.
    return FLOOR.divide(current.limit, VOLTS * n), n


def _applies(p: ChargingProfile, connector: int, tx_key: int | None) -> bool:
    """1.6 3.13.1: station maximum on 0 only; TX defaults on 0 for all or on one connector;
    TX profiles on their connector for their transaction; connector 0 = the station."""
    if p.purpose is ProfilePurpose.STATION_MAX:
        return p.connector_id == 0
    if connector == 0:
        return p.connector_id == 0 and p.purpose is not ProfilePurpose.TX
    if p.purpose is ProfilePurpose.TX:
        return p.connector_id == connector and tx_key is not None and p.tx_key == tx_key
    return p.connector_id in (0, connector)


def oracle(
    profiles: list[ChargingProfile],
    connector: int,
    t: datetime,
    *,
    phases: int,
    tx_key: int | None,
    anchor: datetime,
) -> tuple[Decimal, int]:
    """(limit in A, phases) at ``t``, one instant at a time, from the rules' words."""

    def prevailing(purposes: tuple[ProfilePurpose, ...]) -> tuple[Decimal, int] | None:
        best: tuple[tuple[int, ...], tuple[Decimal, int]] | None = None
        for p in profiles:
            if p.purpose not in purposes or not _applies(p, connector, tx_key):
                continue
            value = _period_limit(p, t, anchor, phases)
            if value is None:
                continue
            rank = (
                int(p.purpose is ProfilePurpose.TX),
                p.stack_level,
                int(p.connector_id != 0),
                p.profile_id,
            )
            if best is None or rank > best[0]:
                best = (rank, value)
        return None if best is None else best[1]

    limit, n = HW_A, phases
    for layer in (
        prevailing((ProfilePurpose.TX, ProfilePurpose.TX_DEFAULT)),
        prevailing((ProfilePurpose.EXTERNAL_CONSTRAINTS,)),
        prevailing((ProfilePurpose.STATION_MAX,)),
    ):
        if layer is not None:
            limit = min(limit, layer[0])
            n = min(n, layer[1])
    return limit, n


# ----------------------------------------------------------------------------- strategies

LIMITS_A = [Decimal(0), Decimal(6), Decimal("10.2"), Decimal(16), Decimal("31.9"), Decimal(40)]
LIMITS_W = [Decimal(0), Decimal(1380), Decimal(4140), Decimal(6000), Decimal(11000)]


@st.composite
def schedules(draw: st.DrawFn, *, kind: ProfileKind) -> ChargingSchedule:
    unit = draw(st.sampled_from(list(RateUnit)))
    values = LIMITS_A if unit is RateUnit.A else LIMITS_W
    rest = draw(st.lists(st.integers(1, 2 * DAY_S), max_size=4, unique=True))
    starts = [0, *sorted(rest)]
    periods = tuple(
        SchedulePeriod(
            s,
            draw(st.sampled_from(values)),
            draw(st.sampled_from([None, None, 1, 2, 3])),
        )
        for s in starts
    )
    duration = draw(st.one_of(st.none(), st.integers(60, 9 * DAY_S)))
    start = None
    if kind is not ProfileKind.RELATIVE:
        start = T0 + timedelta(seconds=draw(st.integers(-3 * DAY_S, 3 * DAY_S)))
    min_rate = draw(st.sampled_from([None, None, values[1]]))
    return ChargingSchedule(unit, periods, duration, start, min_rate)


@st.composite
def profiles_st(draw: st.DrawFn, profile_id: int) -> ChargingProfile:
    purpose = draw(st.sampled_from(list(ProfilePurpose)))
    kind = draw(st.sampled_from(list(ProfileKind)))
    if purpose is ProfilePurpose.STATION_MAX:
        connector = 0
    elif purpose is ProfilePurpose.TX:
        connector = 1
    else:
        connector = draw(st.sampled_from([0, 1, 2]))
    valid_from = valid_to = None
    if draw(st.booleans()):
        valid_from = T0 + timedelta(seconds=draw(st.integers(-2 * DAY_S, 4 * DAY_S)))
    if draw(st.booleans()):
        base = valid_from or T0 - timedelta(days=3)
        valid_to = base + timedelta(seconds=draw(st.integers(1, 5 * DAY_S)))
    return ChargingProfile(
        profile_id=profile_id,
        stack_level=draw(st.integers(0, 3)),
        purpose=purpose,
        kind=kind,
        schedule=draw(schedules(kind=kind)),
        connector_id=connector,
        recurrency=draw(st.sampled_from(list(Recurrency)))
        if kind is ProfileKind.RECURRING
        else None,
        valid_from=valid_from,
        valid_to=valid_to,
        tx_key=draw(st.sampled_from([TX_KEY, TX_KEY, 99]))
        if purpose is ProfilePurpose.TX
        else None,
    )


@st.composite
def profile_sets(draw: st.DrawFn, max_size: int = 6) -> list[ChargingProfile]:
    n = draw(st.integers(0, max_size))
    return [draw(profiles_st(i + 1)) for i in range(n)]


instants = st.integers(-2 * DAY_S * 10, 9 * DAY_S * 10).map(
    lambda tenths: T0 + timedelta(seconds=tenths / 10)
)
connectors = st.sampled_from([0, 1, 1, 2])
phase_counts = st.sampled_from([1, 3, 3])
transactions = st.one_of(
    st.none(),
    st.builds(lambda s: (TX_KEY, T0 + timedelta(seconds=s)), st.integers(-2 * DAY_S, 2 * DAY_S)),
)


def _kw(phases: int, tx: tuple[int, datetime] | None) -> dict[str, object]:
    return {
        "hardware_limit_a": HW_A,
        "phases": phases,
        "voltage_v": VOLTS,
        "tx_key": None if tx is None else tx[0],
        "tx_start": None if tx is None else tx[1],
    }


# ----------------------------------------------------------------------------- properties


@SETTINGS
@given(profile_sets(), connectors, instants, phase_counts, transactions)
def test_limit_at_is_the_rule_at_every_instant(profiles, connector, t, phases, tx):
    """1.6 3.13.2/3.13.3, 2.0.1 3.5 and SC.01, against the instant-by-instant oracle."""
    got = limit_at(profiles, connector, t, **_kw(phases, tx))  # type: ignore[arg-type]
    anchor = t if tx is None else tx[1]
    expected = oracle(
        profiles, connector, t, phases=phases, tx_key=None if tx is None else TX_KEY, anchor=anchor
    )
    assert (got.limit_a, got.phases) == expected


@SETTINGS
@given(profile_sets(), connectors, instants, phase_counts, transactions)
def test_never_above_a_prevailing_profile_or_the_hardware(profiles, connector, t, phases, tx):
    """SC.01 / 1.6 3.13.3: never above the hardware, nor above any station maximum or
    external constraint that is valid and defines a limit at ``t`` if it is the top of its
    stack, nor above the prevailing TX (default) profile."""
    got = limit_at(profiles, connector, t, **_kw(phases, tx))  # type: ignore[arg-type]
    assert got.limit_a <= HW_A
    anchor = t if tx is None else tx[1]
    tx_key = None if tx is None else TX_KEY
    for purposes in (
        (ProfilePurpose.STATION_MAX,),
        (ProfilePurpose.EXTERNAL_CONSTRAINTS,),
        (ProfilePurpose.TX, ProfilePurpose.TX_DEFAULT),
    ):
        only = [p for p in profiles if p.purpose in purposes]
        layer, _ = oracle(only, connector, t, phases=phases, tx_key=tx_key, anchor=anchor)
        assert got.limit_a <= layer
    if got.source.profile_id is not None:
        # The reported source really has that limit then.
        (winner,) = [p for p in profiles if p.profile_id == got.source.profile_id]
        value = _period_limit(winner, t, anchor, phases)
        assert value is not None and value[0] == got.limit_a
    # W is the A limit on the phases in use (exactly the profile's own W where it sets it).
    assert abs(got.limit_w - amps_to_watts(got.limit_a, got.phases, VOLTS)) < Decimal("1e-20")
    assert got.below_pilot_minimum == (got.limit_a < 6)


@SETTINGS
@given(profile_sets(), profiles_st(100), connectors, instants, phase_counts, transactions)
def test_a_lower_stack_level_never_changes_where_a_higher_one_defines_a_limit(
    profiles, extra, connector, t, phases, tx
):
    """1.6 3.13.2 / K01.FR.17: the highest stack level valid at ``t`` prevails; a TX
    profile overrules every TX default (1.6 3.13.1)."""
    lifted = [replace(p, stack_level=p.stack_level + 1) for p in profiles]
    lower = replace(extra, stack_level=0)
    anchor = t if tx is None else tx[1]
    tx_key = None if tx is None else TX_KEY
    dominating = [
        p
        for p in lifted
        if _applies(p, connector, tx_key)
        and (
            p.purpose is lower.purpose
            or (lower.purpose is ProfilePurpose.TX_DEFAULT and p.purpose is ProfilePurpose.TX)
        )
    ]
    if all(_period_limit(p, t, anchor, phases) is None for p in dominating):
        return
    before = limit_at(lifted, connector, t, **_kw(phases, tx))  # type: ignore[arg-type]
    after = limit_at([*lifted, lower], connector, t, **_kw(phases, tx))  # type: ignore[arg-type]
    assert (after.limit_a, after.phases, after.source) == (
        before.limit_a,
        before.phases,
        before.source,
    )


@st.composite
def recurring_sets(draw: st.DrawFn) -> list[ChargingProfile]:
    n = draw(st.integers(1, 4))
    out = []
    for i in range(n):
        p = draw(profiles_st(i + 1))
        kind = ProfileKind.RECURRING
        schedule = draw(schedules(kind=kind))
        schedule = replace(schedule, start=T0 - timedelta(seconds=draw(st.integers(1, WEEK_S))))
        out.append(
            replace(
                p,
                kind=kind,
                schedule=schedule,
                recurrency=draw(st.sampled_from(list(Recurrency))),
                valid_from=None,
                valid_to=None,
            )
        )
    return out


@SETTINGS
@given(recurring_sets(), connectors, phase_counts, st.integers(0, WEEK_S), st.booleans())
def test_recurring_profiles_wrap_around_at_day_and_week_boundaries(
    profiles, connector, phases, offset_s, at_boundary
):
    """Errata 3.79: Daily restarts every 24 h, Weekly every 7 days, from startSchedule; the
    same limit a week later (daily ones also a day later), also just before and at the
    boundaries themselves."""
    kw = _kw(phases, (TX_KEY, T0))
    t = T0 + timedelta(seconds=offset_s)
    if at_boundary:
        start = profiles[0].schedule.start
        assert start is not None
        t = start + timedelta(days=(t - start).days + 1)
    week = limit_at(profiles, connector, t, **kw)  # type: ignore[arg-type]
    for moment in (t, t - US):
        here = limit_at(profiles, connector, moment, **kw)  # type: ignore[arg-type]
        later = limit_at(profiles, connector, moment + timedelta(weeks=1), **kw)  # type: ignore[arg-type]
        assert (later.limit_a, later.phases) == (here.limit_a, here.phases)
    if all(p.recurrency is Recurrency.DAILY for p in profiles):
        next_day = limit_at(profiles, connector, t + timedelta(days=1), **kw)  # type: ignore[arg-type]
        assert (next_day.limit_a, next_day.phases) == (week.limit_a, week.phases)


@SETTINGS
@given(
    profile_sets(),
    phase_counts,
    st.integers(0, 2 * DAY_S),
    st.integers(-DAY_S, DAY_S),
    st.integers(0, 3 * DAY_S),
)
def test_relative_schedules_move_with_the_transaction_start(
    profiles, phases, tx_offset_s, shift_s, elapsed_s
):
    """1.6 7.9/7.13 and K01.FR.41/42: a Relative schedule counts from the transaction start,
    so moving the start moves the whole schedule (only Relative, unbounded profiles)."""
    relative = [
        replace(p, kind=ProfileKind.RELATIVE, valid_from=None, valid_to=None, recurrency=None)
        for p in profiles
    ]
    start = T0 + timedelta(seconds=tx_offset_s)
    moved = start + timedelta(seconds=shift_s)
    elapsed = timedelta(seconds=elapsed_s)
    a = limit_at(relative, 1, start + elapsed, **_kw(phases, (TX_KEY, start)))  # type: ignore[arg-type]
    b = limit_at(relative, 1, moved + elapsed, **_kw(phases, (TX_KEY, moved)))  # type: ignore[arg-type]
    assert (a.limit_a, a.phases, a.source) == (b.limit_a, b.phases, b.source)


@SETTINGS
@given(profiles_st(1), phase_counts, st.integers(-DAY_S, DAY_S), st.integers(1, DAY_S))
def test_valid_from_is_inclusive_and_valid_to_exclusive(profile, phases, from_s, length_s):
    """K01.FR.36 "valid when current time >= validFrom", K01.FR.37 "< validTo": a constant
    TX default below the hardware limit on connector 1."""
    valid_from = T0 + timedelta(seconds=from_s)
    valid_to = valid_from + timedelta(seconds=length_s)
    p = replace(
        profile,
        purpose=ProfilePurpose.TX_DEFAULT,
        kind=ProfileKind.ABSOLUTE,
        connector_id=1,
        stack_level=0,
        schedule=ChargingSchedule(
            RateUnit.A, (SchedulePeriod(0, Decimal(10)),), None, T0 - timedelta(days=9)
        ),
        valid_from=valid_from,
        valid_to=valid_to,
        recurrency=None,
        tx_key=None,
    )
    kw = _kw(phases, None)

    def at(moment: datetime) -> Decimal:
        return limit_at([p], 1, moment, **kw).limit_a  # type: ignore[arg-type]

    assert at(valid_from - US) == HW_A
    assert at(valid_from) == Decimal(10)
    assert at(valid_to - US) == Decimal(10)
    assert at(valid_to) == HW_A


@given(
    st.decimals(min_value=0, max_value=1000, places=1),
    st.integers(1, 3),
    st.sampled_from([Decimal(110), Decimal(120), Decimal(230), Decimal(240), Decimal(277)]),
)
def test_amps_watts_round_trips(current_a, phases, voltage_v):
    """1.6 7.12 (errata 3.69) / K01.FR.50: W = A x V x phases; A -> W -> A is exact, and
    W -> A never gives a current that exceeds the power."""
    watts = amps_to_watts(current_a, phases, voltage_v)
    assert watts_to_amps(watts, phases, voltage_v) == current_a
    back = watts_to_amps(watts + Decimal("0.3"), phases, voltage_v)
    assert amps_to_watts(back, phases, voltage_v) <= watts + Decimal("0.3")
    assert watts + Decimal("0.3") - amps_to_watts(back, phases, voltage_v) < Decimal("1e-20")


@SETTINGS
@given(
    profile_sets(),
    connectors,
    instants,
    st.integers(1, 2 * DAY_S),
    st.sampled_from(list(RateUnit)),
    phase_counts,
    transactions,
)
def test_composite_schedule_agrees_with_limit_at(
    profiles, connector, start, duration_s, unit, phases, tx
):
    """K08.FR.02: every period of the composite is what limit_at says at its start, in its
    middle and just before its end; adjacent periods differ (merged where equal)."""
    kw = _kw(phases, tx)
    schedule = composite_schedule(
        profiles,
        connector,
        start,
        duration_s,
        unit=unit,
        **kw,  # type: ignore[arg-type]
    )
    if tx is None:
        kw["tx_start"] = start  # K08.FR.06: as if a transaction started at the window start
    assert schedule.periods and schedule.periods[0].start_s == 0
    ends = [p.start_s for p in schedule.periods[1:]] + [float(duration_s)]
    for period, end_s in zip(schedule.periods, ends, strict=True):
        begin = start + timedelta(seconds=period.start_s)
        finish = start + timedelta(seconds=end_s)
        assert begin < finish
        for moment in (begin, begin + (finish - begin) / 2, finish - US):
            got = limit_at(profiles, connector, moment, **kw)  # type: ignore[arg-type]
            value = got.limit_a if unit is RateUnit.A else got.limit_w
            assert (value, got.phases) == (period.limit, period.phases)
    for a, b in zip(schedule.periods, schedule.periods[1:], strict=False):
        assert (a.limit, a.phases) != (b.limit, b.phases)


@SETTINGS
@given(profile_sets(), connectors, instants, phase_counts, transactions, st.data())
def test_next_change_is_the_next_instant_the_limit_changes(
    profiles, connector, t, phases, tx, data
):
    """The runtime arms a timer for next_change_s: nothing changes before it, and at it the
    limit (A) or the phases do."""
    kw = _kw(phases, tx)
    change_s = next_change_s(profiles, connector, t, horizon_s=3 * DAY_S, **kw)  # type: ignore[arg-type]
    if tx is None:
        kw["tx_start"] = t

    def key(moment: datetime) -> tuple[Decimal, int]:
        got = limit_at(profiles, connector, moment, **kw)  # type: ignore[arg-type]
        return got.limit_a, got.phases

    now = key(t)
    end = t + timedelta(days=3) if change_s is None else t + timedelta(seconds=change_s)
    span_us = (end - t) // US
    for fraction in data.draw(st.lists(st.floats(0, 1), min_size=1, max_size=5)):
        assert key(t + US * int(fraction * (span_us - 1))) == now
    assert key(end - US) == now
    if change_s is not None:
        assert change_s > 0
        assert key(end) != now
